"""Idle cost: what a converged cluster costs when nothing changes.

N hosts of each system (overlaynet: `overlayd --dataplane kernel`, one network, one container attached
on every host, as in the control case; Serf: one agent per host), converged, then left alone for a
settle time and the measurement window. Per daemon: CPU as a share of one core over the window
(utime+stime from /proc/PID/stat, all threads) and memory at its end: resident (VmRSS from
/proc/PID/status, the figure the target is set on), its anonymous part (RssAnon: the process's own
heap, not shared with anything) and the proportional set size (Pss from /proc/PID/smaps_rollup:
shared library pages divided among the processes that map them, so N daemons of one kind share
their .so text). overlayd's CPU is also given as a ratio to the median Serf agent's in the same run.
Both systems keep their own protocol timings (overlaynet probes every 250 ms and gossips every 100 ms,
Serf's LAN profile every 1 s and 200 ms), so the ratio includes the price of faster failure detection.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from benchmarks.control import OverlaynetCluster
from benchmarks.core import NotAvailable, Progress, Results
from benchmarks.dataplane import process_cpu_seconds
from benchmarks.serf import SerfCluster
from benchmarks.topology import close_lab
from overlaynet.lab import Lab

SETTLE = 5.0  # after convergence: joins, push-pulls and the residents' attaches have died down


# (metric, file under /proc/PID, field): what memory_mib reads, in the order the table shows them.
MEMORY = (("rss", "status", "VmRSS"), ("rss anon", "status", "RssAnon"), ("pss", "smaps_rollup", "Pss"))


def memory_mib(pid: int) -> dict[str, float]:
    """The MEMORY figures of a live process in MiB; those that could not be read are left out."""
    out: dict[str, float] = {}
    for metric, name, field in MEMORY:
        try:
            with open(f"/proc/{pid}/{name}") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        out[metric] = int(line.split()[1]) / 1024
                        break
        except OSError:
            pass
    return out


def idle_usage(pids: list[int], seconds: float) -> list[tuple[float, dict[str, float]]]:
    """(% of one core over `seconds`, memory figures in MiB at the end) per pid."""
    before = [process_cpu_seconds([p]) for p in pids]
    t0 = time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - t0
    after = [process_cpu_seconds([p]) for p in pids]
    return [(100 * (a - b) / wall, memory_mib(p)) for p, a, b in zip(pids, after, before, strict=True)]


def case_name(n: int, seconds: float) -> str:
    return f"N={n} idle {seconds:g}s"


def plan(progress: Progress, systems: list[str], n: int, seconds: float) -> None:
    progress.plan(len(systems), 10 + 0.5 * n + SETTLE + seconds)


def run(results: Results, progress: Progress, prefix: str, systems: list[str], n: int, seconds: float,
        register: Callable[[Any], None]) -> None:
    case = case_name(n, seconds)
    for system in systems:
        lab = Lab(f"{prefix}i{system[0]}")
        register(lab)
        cluster: SerfCluster | OverlaynetCluster | None = None
        try:
            if system == "serf":
                cluster = SerfCluster(lab, n, progress)
                cluster.start()
                pids = [p.pid for p in cluster.procs.values()]
            else:
                cluster = OverlaynetCluster(lab, n, progress)
                cluster.start()
                pids = [h.process.pid for h in cluster.hosts if h.process is not None]
            progress(f"idle {system} {case}: converged; {SETTLE:g}s settle, then {seconds:g}s of measuring")
            time.sleep(SETTLE)
            usage = idle_usage(pids, seconds)
            for cpu, memory in usage:
                results.add("idle", case, system, "cpu", "% of a core", cpu, "lower")
                for metric, mib in memory.items():
                    results.add("idle", case, system, metric, "MiB", mib, "lower")
            cpus = [u[0] for u in usage]
            medians = ", ".join(f"{metric} {statistics.median(values):.1f}" for metric, _, _ in MEMORY
                                if (values := [u[1][metric] for u in usage if metric in u[1]]))
            progress(f"idle {system} {case}: cpu per daemon median {statistics.median(cpus):.2f}% "
                     f"(max {max(cpus):.2f}%); memory medians (MiB): {medians}")
        except NotAvailable as e:
            results.mark("idle", case, system, "cpu", "% of a core", "not available", str(e), "lower")
        except Exception as e:
            progress(f"idle {system} {case}: failed: {type(e).__name__}: {e}")
            results.mark("idle", case, system, "cpu", "% of a core", "failed", f"{type(e).__name__}: {e}", "lower")
        finally:
            if cluster is not None:
                cluster.stop()
            close_lab(lab)
            progress.step_done(10 + 0.5 * n + SETTLE + seconds)
    ratio(results, case)


def ratio(results: Results, case: str) -> None:
    """overlayd's median CPU over the median Serf agent's, same case, same run."""
    ours = results.figures.get(("idle", case, "overlaynet", "cpu"))
    serf = results.figures.get(("idle", case, "serf", "cpu"))
    if ours and serf and ours.median is not None and serf.median:
        results.add("idle", case, "overlaynet", "cpu vs serf", "×", ours.median / serf.median, "lower")
