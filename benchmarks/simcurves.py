"""Gossip at a scale one machine cannot host: the deterministic simulator (overlaynet.gossip.sim)
runs the real GossipCore for N hosts in virtual time, with random datagram loss.

We call the simulator's own measurement helpers (measure_propagation, measure_detection), which the
gossip code documents in docs/gossip.md:
- propagation: table writes from random hosts of a converged cluster; for every (write, host) the
  virtual seconds until that host's view showed it (inf = never);
- failure detection: crash hosts one at a time; (first host declares it dead, every host does).
Virtual time excludes CPU time: these are protocol latencies (intervals, timeouts, hops) with the
simulator's default network latency (0.2–2 ms), i.e. an idealised, unloaded host.
"""

from __future__ import annotations

import math
import time
from typing import Any

from benchmarks.core import NotAvailable, Progress, Results, percentile

MODE = "overlaynet-sim"
# At 20 % loss a 1000-host point ran > 10 min (retransmissions and suspicion traffic in pure Python):
# skipped, and said so in the table, to keep `make bench` near 30 minutes.
HEAVY_LOSS_MAX_N = 316


def _import_sim() -> Any:
    try:
        from overlaynet.gossip import sim
    except ImportError as e:
        raise NotAvailable(f"overlaynet.gossip.sim cannot be imported: {e}") from None
    for name in ("measure_propagation", "measure_detection"):
        if not hasattr(sim, name):
            raise NotAvailable(f"overlaynet.gossip.sim has no {name}()")
    return sim


def seed_cost(n: int) -> float:
    """Rough seconds of CPU one simulated seed takes at N hosts, for the ETA."""
    return 0.3 + 0.05 * n


def plan(progress: Progress, sizes: list[int], losses: list[int], seeds: int) -> None:
    for loss in losses:
        for n in sizes:
            if not too_heavy(n, loss):
                progress.plan(seeds, seed_cost(n))


def too_heavy(n: int, loss: int) -> bool:
    return loss >= 20 and n > HEAVY_LOSS_MAX_N


def run(results: Results, progress: Progress, sizes: list[int], losses: list[int], seeds: int,
        updates: int = 20, crashes: int = 3) -> None:
    try:
        sim = _import_sim()
    except NotAvailable as e:
        for metric in ("propagation p99", "detection all-hosts"):
            results.mark("sim", "simulator", MODE, metric, "s", "not available", str(e), "lower")
        progress(f"sim: not available: {e}")
        return
    curves = results.samples.setdefault("sim", {})
    for loss in losses:
        for n in sizes:
            case = f"N={n} loss={loss}%"
            if too_heavy(n, loss):
                results.mark("sim", case, MODE, "propagation p99", "s", "not available",
                             f"skipped: at {loss}% loss N={n} takes over 10 minutes of CPU (limit "
                             f"HEAVY_LOSS_MAX_N={HEAVY_LOSS_MAX_N} in benchmarks/simcurves.py)", "lower")
                progress(f"sim {case}: skipped (too slow at this loss; see HEAVY_LOSS_MAX_N)")
                continue
            for seed in range(1, seeds + 1):
                started = time.monotonic()
                try:
                    prop = sim.measure_propagation(n, loss / 100, updates=updates, gap=0.5, seed=seed)
                    det = sim.measure_detection(n, loss / 100, crashes=crashes, seed=seed)
                except Exception as e:
                    for metric in ("propagation p99", "detection all-hosts"):
                        results.mark("sim", case, MODE, metric, "s", "failed", f"{type(e).__name__}: {e}", "lower")
                    progress.step_done(seed_cost(n))
                    progress(f"sim {case} seed {seed}: failed: {type(e).__name__}: {e}")
                    continue
                got = [v for v in prop if math.isfinite(v)]
                if got:
                    results.add("sim", case, MODE, "propagation p50", "s", percentile(got, 50), "lower")
                    results.add("sim", case, MODE, "propagation p99", "s", percentile(got, 99), "lower")
                    results.add("sim", case, MODE, "propagation max", "s", max(got), "lower",
                                missed=len(prop) - len(got), samples=len(prop))
                first = [f for f, _ in det if math.isfinite(f)]
                every = [a for _, a in det if math.isfinite(a)]
                if first:
                    results.add("sim", case, MODE, "detection first", "s", statistics_median(first), "lower")
                if every:
                    results.add("sim", case, MODE, "detection all-hosts", "s", max(every), "lower",
                                missed=len(det) - len(every))
                curves.setdefault("propagation", {}).setdefault(str(loss), {}).setdefault(str(n), []).extend(got)
                curves.setdefault("detection", {}).setdefault(str(loss), {}).setdefault(str(n), []).extend(every)
                progress.step_done(seed_cost(n))
                progress(f"sim {case} seed {seed}: propagation p99 "
                         f"{percentile(got, 99) if got else float('nan'):.3f} s ({len(prop) - len(got)} never), "
                         f"detection by all hosts {max(every) if every else float('nan'):.2f} s "
                         f"(virtual; {time.monotonic() - started:.1f} s real)")


def statistics_median(values: list[float]) -> float:
    import statistics

    return statistics.median(values)
