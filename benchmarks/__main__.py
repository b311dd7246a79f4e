"""python -m benchmarks: the overlaynet benchmark suite (`make bench`, `make bench-quick`).

Builds its own namespaces (names start with a per-run prefix), installs missing tools with apt-get,
removes everything it made even on Ctrl-C/SIGTERM, and writes results.json, report.md and PNG plots
to the output directory. A full run with the default cases also refreshes docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import secrets
import shlex
import shutil
import sys
import time
from typing import Any

from benchmarks import control, dataplane, idle, machine, micro, report, simcurves
from benchmarks.core import Interrupted, Progress, Results, signals_raise
from benchmarks.topology import MODES, cleanup_leftovers, close_lab

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GROUPS = ("dataplane", "control", "idle", "sim", "micro")
SYSTEMS = ("overlaynet", "serf")

PRESETS: dict[str, dict[str, Any]] = {
    "full": dict(mtus="1500,9000", repeats=3, duration=5.0, pings=600, sizes="8,16,32,64", losses="0,5,20",
                 idle_hosts=16, idle_seconds=30.0,
                 events=5, kills=2, event_timeout=15.0, sim_sizes="10,32,100,316,1000", sim_losses="0,5,20",
                 sim_seeds=1, sim_updates=20, sim_crashes=2,
                 micro_number=200_000, micro_repeat=7),
    "quick": dict(mtus="1500", repeats=2, duration=2.0, pings=200, sizes="8", losses="0,5",
                  idle_hosts=4, idle_seconds=5.0,
                  events=3, kills=1, event_timeout=8.0, sim_sizes="10,32,100", sim_losses="0,5", sim_seeds=1,
                  sim_updates=10, sim_crashes=2,
                  micro_number=20_000, micro_repeat=3),
}


def ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, not {text!r}") from None


def names(allowed: tuple[str, ...]) -> Any:
    def parse(text: str) -> list[str]:
        chosen = [x.strip() for x in text.split(",") if x.strip()]
        bad = [x for x in chosen if x not in allowed]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(bad)}; choose from {', '.join(allowed)}")
        return chosen
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks", description="overlaynet benchmarks: dataplane modes side by side, "
        "control plane against HashiCorp Serf, the gossip simulator to N=1000, encap/decap micro-costs.",
        epilog="Examples: `make bench` (full, ~30 min), `make bench-quick` (< 3 min), "
               "`python -m benchmarks --cases dataplane --modes underlay,kernel-vxlan --repeats 5`.")
    p.add_argument("--quick", action="store_true", help="the < 3 minute preset (fewer repeats, shorter runs)")
    p.add_argument("--cases", type=names(GROUPS), default=list(GROUPS),
                   help=f"comma-separated groups to run (default all: {','.join(GROUPS)})")
    p.add_argument("--modes", type=names(MODES), default=list(MODES),
                   help=f"dataplane modes (default all: {','.join(MODES)})")
    p.add_argument("--systems", type=names(SYSTEMS), default=list(SYSTEMS),
                   help="control-plane systems (default overlaynet,serf)")
    p.add_argument("--mtus", type=ints, help="underlay MTUs; the overlay gets MTU-50 (full: 1500,9000)")
    p.add_argument("--repeats", type=int, help="dataplane repeats per mode (full 3, quick 2)")
    p.add_argument("--duration", type=float, help="seconds per throughput/pps run (full 5, quick 2)")
    p.add_argument("--pings", type=int, help="pings per RTT run, one every 5 ms (full 600, quick 200)")
    p.add_argument("--sizes", type=ints, help="control-plane cluster sizes N (full 8,16,32,64)")
    p.add_argument("--idle-hosts", type=int, help="hosts per system in the idle case (full 16, quick 4)")
    p.add_argument("--idle-seconds", type=float,
                   help="seconds of measuring in the idle case, and of fastpathd with no traffic (full 30, quick 5)")
    p.add_argument("--losses", type=ints, help="control-plane loss percentages (full 0,5,20)")
    p.add_argument("--events", type=int, help="table updates/user events per cluster (full 5)")
    p.add_argument("--kills", type=int, help="kill -9 trials per cluster (full 2)")
    p.add_argument("--event-timeout", type=float,
                   help="seconds to wait for every host to see an update/failure before counting it 'never' (full 15)")
    p.add_argument("--sim-updates", type=int, help="simulated table writes per point (full 20)")
    p.add_argument("--sim-crashes", type=int, help="simulated crashes per point (full 2)")
    p.add_argument("--sim-sizes", type=ints, help="simulator cluster sizes (full 10,32,100,316,1000)")
    p.add_argument("--sim-losses", type=ints, help="simulator loss percentages (full 0,5,20)")
    p.add_argument("--sim-seeds", type=int, help="simulator seeds per point (full 1)")
    p.add_argument("--micro-number", type=int, help="calls per timing round (full 200000)")
    p.add_argument("--micro-repeat", type=int, help="timing rounds (full 7)")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"),
                   help="output directory; each run writes a timestamped folder in it (default benchmarks/results)")
    p.add_argument("--update-docs", action=argparse.BooleanOptionalAction, default=None,
                   help="refresh docs/benchmarks.md and benchmarks/latest/ (default: only for a full run)")
    p.add_argument("--no-install", action="store_true", help="do not apt-get install missing tools")
    p.add_argument("--prefix", help="name prefix of everything the run creates (default: 'b' + 4 random hex)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    preset = PRESETS["quick" if args.quick else "full"]
    for key, value in preset.items():
        if getattr(args, key, None) is None:
            setattr(args, key, ints(value) if key in ("mtus", "sizes", "losses", "sim_sizes", "sim_losses")
                    else value)
    full_default = not args.quick and argv_is_default(argv)
    update_docs = args.update_docs if args.update_docs is not None else full_default
    if os.geteuid() != 0 and ({"dataplane", "control", "idle"} & set(args.cases)):
        print("benchmarks: the dataplane and control cases need root (namespaces); run as root or "
              "choose --cases sim,micro", file=sys.stderr)
        return 2

    progress = Progress()
    prefix = args.prefix or "b" + secrets.token_hex(2)
    if len(prefix) > 6:
        parser.error("--prefix: at most 6 characters (Linux device names are short)")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    outdir = os.path.join(args.out, stamp)
    os.makedirs(outdir, exist_ok=True)
    command = "python -m benchmarks" + ("" if argv is None and len(sys.argv) == 1 else " " + shlex.join(
        argv if argv is not None else sys.argv[1:]))
    meta: dict[str, Any] = {"started": datetime.datetime.now().isoformat(timespec="seconds"), "command": command,
                            "prefix": prefix, "args": {k: v for k, v in vars(args).items()},
                            "loadavg_start": _loadavg()}
    results = Results()
    closers: list[Any] = []
    status = 0
    if "dataplane" in args.cases:
        dataplane.plan(progress, args.modes, args.mtus, args.repeats, args.duration, args.pings)
    if "control" in args.cases:
        control.plan(progress, args.systems, args.sizes, args.losses, args.events, args.kills)
    if "idle" in args.cases:
        idle.plan(progress, args.systems, args.idle_hosts, args.idle_seconds)
    if "sim" in args.cases:
        simcurves.plan(progress, args.sim_sizes, args.sim_losses, args.sim_seeds)
    progress(f"run {prefix}: cases {','.join(args.cases)}; output {outdir}")
    with signals_raise():
        try:
            if not args.no_install and os.geteuid() == 0:
                machine.ensure_tools(progress)
            machine.ensure_matplotlib(progress)
            meta["machine"] = machine.describe()
            if "micro" in args.cases:
                micro.run(results, progress, args.micro_number, args.micro_repeat)
            if "dataplane" in args.cases:
                dataplane.run(results, progress, prefix + "d", args.modes, args.mtus, args.repeats, args.duration,
                              args.pings, closers.append, args.idle_seconds)
            if "control" in args.cases:
                control.run(results, progress, prefix, args.systems, args.sizes, args.losses, args.events,
                            args.kills, closers.append, args.event_timeout)
            if "idle" in args.cases:
                idle.run(results, progress, prefix, args.systems, args.idle_hosts, args.idle_seconds,
                         closers.append)
            if "sim" in args.cases:
                simcurves.run(results, progress, args.sim_sizes, args.sim_losses, args.sim_seeds, args.sim_updates,
                              args.sim_crashes)
        except (Interrupted, KeyboardInterrupt) as e:
            progress(f"interrupted ({e or 'Ctrl-C'}): cleaning up and writing what was measured")
            meta["interrupted"] = str(e) or "Ctrl-C"
            status = 130
        finally:
            for obj in reversed(closers):
                try:
                    close_lab(obj.lab) if hasattr(obj, "lab") else close_lab(obj)
                except Exception as e:
                    progress(f"cleanup: {e}")
            left = cleanup_leftovers(prefix)
            if left:
                progress(f"cleanup: removed leftovers {', '.join(left)}")
    dataplane.ratios(results)  # here, not in the case: an interrupted run keeps its ratios too
    meta["wall_s"] = time.monotonic() - progress.started
    meta["loadavg_end"] = _loadavg()
    meta.setdefault("machine", machine.describe())
    json_path = os.path.join(outdir, "results.json")
    report.write_json(json_path, meta, results)
    pngs = report.plots(results, outdir)
    md = report.markdown(meta, results, pngs)
    with open(os.path.join(outdir, "report.md"), "w") as f:
        f.write(md)
    print(md)
    progress(f"wrote {json_path}, report.md and {len(pngs)} plots in {outdir}")
    if update_docs and status == 0:
        publish(outdir, meta, results, pngs, progress)
    return status


def argv_is_default(argv: list[str] | None) -> bool:
    given = argv if argv is not None else sys.argv[1:]
    return all(a.startswith("--update-docs") or a.startswith("--no-install") for a in given)


def _loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


BEGIN, END = "<!-- BEGIN GENERATED: python -m benchmarks -->", "<!-- END GENERATED -->"


def publish(outdir: str, meta: dict[str, Any], results: Results, pngs: list[str], progress: Progress) -> None:
    """Copy the run to benchmarks/latest/ and put its report between the markers in docs/benchmarks.md."""
    latest = os.path.join(ROOT, "benchmarks", "latest")
    os.makedirs(latest, exist_ok=True)
    for path in [os.path.join(outdir, "results.json"), *pngs]:
        shutil.copy(path, latest)
    md = report.markdown(meta, results, pngs, plot_prefix="../benchmarks/latest/")
    doc = os.path.join(ROOT, "docs", "benchmarks.md")
    text = open(doc).read() if os.path.exists(doc) else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text += f"\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    with open(doc, "w") as f:
        f.write(f"{head}{BEGIN}\n{md}\n{END}{tail}")
    progress(f"updated docs/benchmarks.md and benchmarks/latest/ from {outdir}")


if __name__ == "__main__":
    sys.exit(main())
