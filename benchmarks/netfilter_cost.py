"""python -m benchmarks.netfilter_cost: what kernel mode's nftables tables (the first-hop guard and the
members-only VXLAN filter, docs/security.md) cost per 64-byte packet.

pps alone cannot show it on a shared 2-core machine: other work moves it by more than the tables
cost. So this counts CPU per packet with `perf record -a -e cpu-clock` while trafgen sends 64-byte
frames over the benchmark's overlaynet-kernel pair: the samples of trafgen and ksoftirqd (the whole
path runs in their softirq context) per delivered packet, and of those the samples in netfilter.
Rounds alternate between the tables as overlayd programmed them and no tables at all (both overlayds
stopped meanwhile, so nothing puts them back); the tables are saved with `nft list table` and
restored with `nft -f`. Needs root, trafgen and perf (linux-perf).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

from benchmarks.dataplane import pps
from benchmarks.topology import Pair, build
from overlaynet.kernel import list_sandboxes

SAMPLE_HZ = 4000
PATH_COMMS = ("trafgen", "ksoftirqd")
NETFILTER = ("nft_", "__nft", "nf_hook", "nf_tables", "jhash")
TABLES = (("bridge", "overlaynet_ports"), ("ip", "overlaynet_vxlan"))


def _nft(netns: str, *args: str, stdin: str | None = None) -> str:
    return subprocess.run(["nsenter", f"--net={netns}", "nft", *args], input=stdin, capture_output=True,
                          text=True, check=True).stdout


def _namespaces(pair: Pair) -> list[str]:
    hosts = list(pair.lab.hosts.values())
    return [f"/run/netns/{h.netns}" for h in hosts] + [s for h in hosts for s in list_sandboxes(h.state_dir)]


def _saved(namespaces: list[str]) -> dict[str, str]:
    """Each namespace's overlaynet tables as nft text."""
    out: dict[str, str] = {}
    for ns in namespaces:
        tables = _nft(ns, "list", "tables").split("\n")
        out[ns] = "".join(_nft(ns, "list", "table", family, name) for family, name in TABLES
                          if f"table {family} {name}" in tables)
    return out


def _set_tables(saved: dict[str, str], present: bool) -> None:
    for ns, text in saved.items():
        for family, name in TABLES:
            if f"table {family} {name} " in text:
                subprocess.run(["nsenter", f"--net={ns}", "nft", "delete", "table", family, name], capture_output=True)
        if present and text:
            _nft(ns, "-f", "-", stdin=text)


def _per_packet(pair: Pair, duration: float, out: str) -> tuple[float, float]:
    """(µs of CPU on the path, µs of it in netfilter) per delivered packet."""
    window = duration - 0.2

    def record() -> None:
        time.sleep(0.4)  # after pps()'s warm-up: inside its counting window
        subprocess.run(["perf", "record", "-a", "-e", "cpu-clock", "-F", str(SAMPLE_HZ), "-o", out, "--",
                        "sleep", f"{window:g}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)

    recorder = threading.Thread(target=record)
    recorder.start()
    delivered = pps(pair, duration, warmup=0.3)["delivered_pps"]
    recorder.join()
    report = subprocess.run(["perf", "report", "-i", out, "--sort", "comm,sym", "-n", "--stdio"],
                            capture_output=True, text=True, check=True).stdout
    path = netfilter = 0
    for line in report.splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[0].endswith("%") and fields[2].startswith(PATH_COMMS):
            path += int(fields[1])
            if fields[4].startswith(NETFILTER) or "hash_lookup" in fields[4]:
                netfilter += int(fields[1])
    us_per_sample = 1e6 / SAMPLE_HZ / (delivered * window)
    return path * us_per_sample, netfilter * us_per_sample


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.netfilter_cost", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=4, help="rounds of (with tables, without) (default 4)")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per measurement (default 2)")
    args = parser.parse_args()
    missing = [tool for tool in ("perf", "trafgen", "nft", "nsenter") if shutil.which(tool) is None]
    if os.geteuid() != 0 or missing:
        print("benchmarks.netfilter_cost: needs root and " + (", ".join(missing) or "nothing else")
              + " (apt-get install linux-perf netsniff-ng nftables)", file=sys.stderr)
        return 2
    pair = build("overlaynet-kernel", "n" + secrets.token_hex(2), 1500)
    out = f"/tmp/{pair.lab.prefix}-perf.data"
    results: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    try:
        for host in pair.lab.hosts.values():
            assert host.process is not None
            os.kill(host.process.pid, signal.SIGSTOP)
        saved = _saved(_namespaces(pair))
        for rnd in range(1, args.rounds + 1):
            for present in (True, False):
                _set_tables(saved, present)
                path, netfilter = _per_packet(pair, args.duration, out)
                results[present].append((path, netfilter))
                print(f"round {rnd} {'with tables   ' if present else 'without tables'}: "
                      f"{path:5.2f} µs/packet on the path, {netfilter:5.3f} µs in netfilter", flush=True)
        _set_tables(saved, True)
    finally:
        for host in pair.lab.hosts.values():
            if host.process is not None:
                os.kill(host.process.pid, signal.SIGCONT)
        pair.close()
        if os.path.exists(out):
            os.unlink(out)
    for present, rows in results.items():
        if rows:
            print(f"median {'with tables   ' if present else 'without tables'}: "
                  f"{statistics.median(r[0] for r in rows):5.2f} µs/packet, "
                  f"{statistics.median(r[1] for r in rows):5.3f} µs in netfilter")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
