"""Gossip at a scale one machine cannot host: the deterministic simulator (overlaynet.gossip.sim)
running the real GossipCore for N hosts in virtual time, under random datagram loss.

For each (N, loss): build and converge the cluster, then
- propagation: one table write on one host; virtual seconds until each other host saw it
  (TableChange events);
- failure detection: crash one host; virtual seconds until each survivor marked it dead
  (MemberChange events).
Virtual time excludes CPU time, so these are protocol latencies (intervals, timeouts, hops) with
network latency drawn uniformly from the simulator's default range — an idealised host.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from benchmarks.core import NotAvailable, Results, percentile


def _import_sim() -> Any:
    try:
        from overlaynet.gossip import sim
    except ImportError as e:
        raise NotAvailable(f"overlaynet.gossip.sim cannot be imported: {e}") from None
    if not hasattr(sim, "Simulation"):
        raise NotAvailable("overlaynet.gossip.sim has no Simulation class")
    return sim


def one(n: int, loss: float, seed: int, timeout: float = 120.0) -> dict[str, Any]:
    sim_mod = _import_sim()
    sim = sim_mod.Simulation(seed=seed, loss=loss)
    table_seen: dict[str, float] = {}
    dead_seen: dict[str, float] = {}
    state: dict[str, Any] = {"key": None, "victim": None}

    def observe(now: float, node: str, ev: Any) -> None:
        if getattr(ev, "table", None) == "bench" and ev.key == state["key"] and node not in table_seen:
            table_seen[node] = now
        if getattr(ev, "name", None) == state["victim"] and getattr(ev, "new", None) == "dead" \
                and node not in dead_seen:
            dead_seen[node] = now

    sim.observers.append(observe)
    sim.add_cluster(n, spacing=0.0, seeds=3)
    # Every host counts n live members: O(n) per check (sim.converged() is O(n^2), too slow at 1000).
    join = sim.run_until_true(lambda: all(nd.core.num_live() == n for nd in sim.live_nodes()),
                              timeout=timeout, step=0.25)
    if join is None:
        raise RuntimeError(f"N={n} loss={loss:.0%}: cluster did not converge in {timeout:.0f} virtual s")
    names = list(sim.nodes)
    origin, victim = sim.nodes[names[0]], names[-1]
    state["key"] = "k1"
    t0 = sim.now
    origin.core.set("bench", "k1", {"v": 1}, sim.now)
    sim._flush(origin)  # the simulator sends what a core queued only when it flushes that node
    others = [x for x in names if x != origin.name]
    sim.run_until_true(lambda: all(x in table_seen for x in others), timeout=60, step=0.01)
    prop = [table_seen[x] - t0 for x in others if x in table_seen]
    state["victim"] = victim
    t1 = sim.now
    sim.crash(victim)
    survivors = [x for x in names if x != victim]
    sim.run_until_true(lambda: all(x in dead_seen for x in survivors), timeout=120, step=0.05)
    det = [dead_seen[x] - t1 for x in survivors if x in dead_seen]
    return {"join_s": join, "propagation_s": prop, "missed_propagation": len(others) - len(prop),
            "detection_s": det, "missed_detection": len(survivors) - len(det)}


def run(results: Results, progress: Callable[[str], None], sizes: list[int], losses: list[int],
        seeds: int) -> None:
    try:
        _import_sim()
    except NotAvailable as e:
        for metric in ("propagation p99", "detection p99"):
            results.mark("sim", "simulator", "overlaynet-sim", metric, "s", "not available", str(e), "lower")
        progress(f"sim: not available: {e}")
        return
    curves = results.samples.setdefault("sim", {})
    for loss in losses:
        for n in sizes:
            case = f"N={n} loss={loss}%"
            for seed in range(1, seeds + 1):
                started = time.monotonic()
                try:
                    r = one(n, loss / 100, seed)
                except Exception as e:
                    for metric in ("propagation p99", "detection p99"):
                        results.mark("sim", case, "overlaynet-sim", metric, "s", "failed",
                                     f"{type(e).__name__}: {e}", "lower")
                    progress(f"sim {case} seed {seed}: failed: {e}")
                    continue
                for what in ("propagation", "detection"):
                    values = r[f"{what}_s"]
                    if values:
                        for q, label in ((50, "p50"), (99, "p99")):
                            results.add("sim", case, "overlaynet-sim", f"{what} {label}", "s",
                                        percentile(values, q), "lower")
                        results.add("sim", case, "overlaynet-sim", f"{what} max", "s", max(values), "lower",
                                    missed=r[f"missed_{what}"])
                    curves.setdefault(what, {}).setdefault(str(loss), {}).setdefault(str(n), []).extend(values)
                progress(f"sim {case} seed {seed}: propagation p99 "
                         f"{percentile(r['propagation_s'], 99) if r['propagation_s'] else float('nan'):.3f} s, "
                         f"detection p99 {percentile(r['detection_s'], 99) if r['detection_s'] else float('nan'):.2f} s "
                         f"(virtual; {time.monotonic() - started:.1f} s real)")
