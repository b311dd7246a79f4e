"""Turn a run's Results into results.json, report.md and PNG plots. Every number printed here comes
from the Results of the run; a figure that could not be measured shows its status and reason."""

from __future__ import annotations

import json
import math
import os
from typing import Any

from benchmarks.core import Figure, Results
from benchmarks.topology import MODES, REFERENCE


def write_json(path: str, meta: dict[str, Any], results: Results) -> None:
    data = {"meta": meta, "figures": [f.summary() for f in results.figures.values()], "samples": results.samples}
    with open(path, "w") as f:
        json.dump(data, f, indent=1, sort_keys=False, default=str)


def load_json(path: str) -> tuple[dict[str, Any], Results]:
    with open(path) as f:
        data = json.load(f)
    results = Results()
    for d in data["figures"]:
        fig = Figure(d["group"], d["case"], d["mode"], d["metric"], d["unit"], d["values"], d["better"],
                     d["status"], d["reason"], d["extra"])
        results.figures[(fig.group, fig.case, fig.mode, fig.metric)] = fig
    results.samples = data.get("samples", {})
    return data["meta"], results


# ---- Markdown -------------------------------------------------------------------------------------------


def _fmt(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    a = abs(v)
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


class Notes:
    """Footnotes for cells that say 'not available' or 'failed', so long reasons do not break tables."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def ref(self, fig: Figure) -> str:
        text = f"{fig.mode}, {fig.case}: {fig.status}: {fig.reason}"
        if text not in self.items:
            self.items.append(text)
        return f"{fig.status} [{self.items.index(text) + 1}]"

    def render(self) -> str:
        return "\n".join(f"[{i}] {t}" for i, t in enumerate(self.items, 1))


def cell(fig: Figure | None, notes: Notes, ratio: bool = False) -> str:
    if fig is None:
        return "not run"
    if not fig.values:
        return notes.ref(fig)
    text = _fmt(fig.median)
    if len(fig.values) > 1:
        text += f" ({_fmt(min(fig.values))}–{_fmt(max(fig.values))})"
    if ratio and "ratio_to_reference" in fig.extra and fig.mode != REFERENCE:
        text += f" **×{fig.extra['ratio_to_reference']:.2f}**"
    if ratio and "ratio_to_plain" in fig.extra:
        text += f" (plain ×{fig.extra['ratio_to_plain']:.2f})"
    if fig.extra.get("failures"):
        text += f" ({len(fig.extra['failures'])} repeats failed)"
    return text


def dataplane_md(results: Results, notes: Notes) -> str:
    figs = results.of_group("dataplane")
    if not figs:
        return ""
    modes = [m for m in MODES if any(f.mode == m for f in figs)]
    rows_seen: list[tuple[str, str, str]] = []
    for f in figs:
        if (f.case, f.metric, f.unit) not in rows_seen:
            rows_seen.append((f.case, f.metric, f.unit))
    out = ["| case | metric | " + " | ".join(modes) + " |", "|---|---|" + "---|" * len(modes)]
    for case, metric, unit in rows_seen:
        cells = [cell(results.figures.get(("dataplane", case, m, metric)), notes, ratio=True) for m in modes]
        out.append(f"| {case} | {metric} ({unit}) | " + " | ".join(cells) + " |")
    offered = []
    for m in modes:
        for f in figs:
            if f.mode == m and f.metric == "delivered" and f.extra.get("offered_kpps"):
                offered.append(f"{m} {f.case}: {_fmt(sorted(f.extra['offered_kpps'])[len(f.extra['offered_kpps']) // 2])}")
    text = "\n".join(out)
    text += ("\n\nCells: median (min–max) over the repeats; **×r** = this mode's median / the kernel VXLAN "
             "reference's median in the same run (above 1 is better for throughput and kpps, worse for "
             "RTT and CPU); (plain ×r) on an encrypted mode = its median / the same mode in the clear "
             "(overlaynet-userspace, kernel-vxlan): what encryption costs.")
    if offered:
        text += "\nOffered 64-byte load (trafgen, kpps, median): " + "; ".join(offered) + "."
    return text


def control_md(results: Results, notes: Notes) -> str:
    figs = results.of_group("control")
    if not figs:
        return ""
    systems = [s for s in ("overlaynet", "serf") if any(f.mode == s for f in figs)]
    cases = []
    for f in figs:
        if f.case not in cases:
            cases.append(f.case)
    whats = [w for w in ("attach-to-reachable", "propagation", "detection")
             if any(f.metric.startswith(w) for f in figs)]
    out = ["| hosts, loss | system | " + " | ".join(f"{w} p50 / p99 / max (s)" for w in whats) + " |",
           "|---|---|" + "---|" * len(whats)]
    for case in cases:
        for system in systems:
            cells = []
            for w in whats:
                p50 = results.figures.get(("control", case, system, f"{w} p50"))
                if p50 is None:
                    cells.append("—" if system == "serf" and w == "attach-to-reachable" else "not run")
                elif not p50.values:
                    cells.append(notes.ref(p50))
                else:
                    p99 = results.figures.get(("control", case, system, f"{w} p99"))
                    mx = results.figures.get(("control", case, system, f"{w} max"))
                    missed = sum(mx.extra.get("missed", [])) if mx else 0
                    samples = sum(mx.extra.get("samples", [])) if mx else 0
                    text = " / ".join(_fmt(f.values[0]) if f and f.values else "—" for f in (p50, p99, mx))
                    if missed:
                        text += f" (**{missed}/{samples} never**)"
                    cells.append(text)
            out.append(f"| {case} | {system} | " + " | ".join(cells) + " |")
    return "\n".join(out) + ("\n\nPercentiles are over every (host, trial) observation of that cluster; "
                             "'never' counts hosts that had not seen the update/failure by the deadline.")


def simple_md(results: Results, group: str, notes: Notes, speedup: bool = False) -> str:
    figs = results.of_group(group)
    if not figs:
        return ""
    modes: list[str] = []
    metrics: list[str] = []
    cases: list[str] = []
    for f in figs:
        for lst, v in ((modes, f.mode), (metrics, f.metric), (cases, f.case)):
            if v not in lst:
                lst.append(v)
    cols = [(m, k) for m in modes for k in metrics if any(f.mode == m and f.metric == k for f in figs)]
    unit = {(f.mode, f.metric): f.unit for f in figs}
    out = ["| case | " + " | ".join(f"{m} {k} ({unit[(m, k)]})" for m, k in cols) + " |",
           "|---|" + "---|" * len(cols)]
    for case in cases:
        cells = []
        for m, k in cols:
            fig = results.figures.get((group, case, m, k))
            c = cell(fig, notes)
            if speedup and fig is not None and fig.values and "speedup_vs_python" in fig.extra and m != "pure-python":
                c += f" **×{fig.extra['speedup_vs_python']:.2f}**"
            cells.append(c)
        out.append(f"| {case} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def markdown(meta: dict[str, Any], results: Results, plots: list[str], plot_prefix: str = "") -> str:
    notes = Notes()
    m = meta["machine"]
    parts = [
        f"Run {meta['started']} — `{meta['command']}` — {meta['wall_s']:.0f} s.",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, kernel {m['kernel']}, "
        f"Python {m['python']}, overlaynet {m['overlaynet']} (git {m['git']}); "
        + ", ".join(f"{k} {v}" for k, v in m["tools"].items())
        + f". Load average at start {meta.get('loadavg_start')}, at end {meta.get('loadavg_end')}.",
    ]
    if meta.get("interrupted"):
        parts.append(f"**This run was interrupted ({meta['interrupted']}); cases after that point are missing "
                     "or partial.**")
    sections = [
        ("Dataplane (two hosts, same run, alternating modes)", dataplane_md(results, notes)),
        ("Control plane: overlaynet vs Serf on real hosts (namespaces)", control_md(results, notes)),
        ("Idle cost per daemon (converged, nothing changing; fastpathd after the dataplane repeats)",
         simple_md(results, "idle", notes)),
        ("Gossip simulator (virtual time)", simple_md(results, "sim", notes)),
        ("Micro: VXLAN encap/decap per frame (Python-callable entry points)",
         simple_md(results, "micro", notes, speedup=True)),
    ]
    for title, body in sections:
        if body:
            parts.append(f"### {title}\n\n{body}")
    if plots:
        parts.append("### Plots\n\n" + "\n".join(f"![{os.path.basename(p)}]({plot_prefix}{os.path.basename(p)})"
                                                  for p in plots))
    if notes.items:
        parts.append("### Not measured, and why\n\n" + notes.render().replace("\n", "  \n"))
    return "\n\n".join(parts) + "\n"


# ---- plots ------------------------------------------------------------------------------------------------


def plots(results: Results, outdir: str) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    made = []
    made += _throughput_plot(results, outdir, plt)
    made += _rtt_plot(results, outdir, plt)
    made += _control_plot(results, outdir, plt)
    return made


def _throughput_plot(results: Results, outdir: str, plt: Any) -> list[str]:
    figs = results.of_group("dataplane")
    panels = [(c, m) for c, m in dict.fromkeys((f.case, f.metric) for f in figs)
              if m in ("throughput", "delivered")]
    if not panels:
        return []
    modes = [m for m in MODES if any(f.mode == m for f in figs)]
    # A grid (at most 4 panels a row) keeps every panel readable at page width.
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (case, metric) in zip(axes.flat, panels, strict=False):
        for i, mode in enumerate(modes):
            f = results.figures.get(("dataplane", case, mode, metric))
            if f is not None and f.values:
                med = f.median or 0.0
                ax.bar(i, med, color=f"C{i}")
                ax.errorbar(i, med, yerr=[[med - min(f.values)], [max(f.values) - med]], color="black", capsize=3)
            else:
                ax.text(i, 0, "n/a", ha="center", va="bottom", rotation=90, fontsize=8)
        ax.set_xticks(range(len(modes)), modes, rotation=35,
                      ha="right", fontsize=7)
        unit = next((f.unit for f in figs if f.case == case and f.metric == metric), "")
        ax.set_title(f"{case}", fontsize=9)
        ax.set_ylabel(unit)
    fig.suptitle("Dataplane throughput per mode (median, min–max over repeats)", fontsize=10)
    fig.tight_layout()
    path = os.path.join(outdir, "throughput.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def _rtt_plot(results: Results, outdir: str, plt: Any) -> list[str]:
    rtts = results.samples.get("rtt_us", {})
    if not rtts:
        return []
    fig, axes = plt.subplots(1, len(rtts), figsize=(5 * len(rtts), 3.6), squeeze=False)
    for ax, (tag, by_mode) in zip(axes[0], rtts.items(), strict=True):
        for i, mode in enumerate(m for m in MODES if m in by_mode):
            values = sorted(by_mode[mode])
            ys = [(k + 1) / len(values) for k in range(len(values))]
            ax.plot(values, ys, label=mode, color=f"C{MODES.index(mode)}" if i >= 0 else None)
        ax.set_xscale("log")
        ax.set_xlabel("ping RTT (µs, log)")
        ax.set_ylabel("fraction of pings ≤ x")
        ax.set_title(f"RTT distribution, {tag}", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = os.path.join(outdir, "rtt.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def _control_plot(results: Results, outdir: str, plt: Any) -> list[str]:
    ctl = results.samples.get("control", {})
    sim = results.samples.get("sim", {})
    if not ctl and not sim:
        return []
    from benchmarks.core import percentile

    whats = ("propagation", "detection")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), squeeze=False)
    styles = {"overlaynet": "-o", "serf": "--s", "overlaynet-sim": ":^"}
    for ax, what in zip(axes[0], whats, strict=True):
        series = [(system, ctl[system].get(what, {})) for system in ctl] + [("overlaynet-sim", sim.get(what, {}))]
        for system, by_loss in series:
            for li, (loss, by_n) in enumerate(sorted(by_loss.items(), key=lambda kv: int(kv[0]))):
                pts = sorted((int(n), percentile(v, 99)) for n, v in by_n.items() if v)
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], styles.get(system, "-"), color=f"C{li}",
                            label=f"{system} {loss}% loss", markersize=4)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("hosts (N)")
        ax.set_ylabel("p99 seconds until a host knows")
        ax.set_title(f"{what}: p99 over hosts and trials", fontsize=9)
        ax.legend(fontsize=6)
    fig.tight_layout()
    path = os.path.join(outdir, "convergence.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]
