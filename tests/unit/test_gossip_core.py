"""Pieces of the core in isolation: Lifeguard suspicion and awareness, the broadcast queue, defaults."""

from __future__ import annotations

import pytest

from overlaynet.gossip import GossipConfig, GossipCore
from overlaynet.gossip.awareness import Awareness
from overlaynet.gossip.broadcast import BroadcastQueue, MemberKey
from overlaynet.gossip.suspicion import Suspicion

pytestmark = pytest.mark.unit


def test_suspicion_shrinks_with_independent_confirmations_only() -> None:
    s = Suspicion("a", incarnation=3, start=10.0, k=2, lo=1.5, hi=9.0)
    assert s.deadline == pytest.approx(19.0)
    assert not s.confirm("a")  # the first accuser is not a confirmation
    assert s.confirm("b")
    mid = s.deadline
    assert 11.5 < mid < 19.0
    assert not s.confirm("b")  # the same accuser twice counts once
    assert s.confirm("c")
    assert s.deadline == pytest.approx(11.5)
    assert not s.confirm("d")  # beyond k nothing changes
    assert Suspicion("a", 0, 0.0, k=0, lo=1.0, hi=6.0).deadline == pytest.approx(1.0)


def test_awareness_scales_probing_and_is_bounded() -> None:
    a = Awareness(8)
    assert a.scale(0.25) == 0.25
    a.apply(3)
    assert a.scale(0.25) == pytest.approx(1.0)
    a.apply(100)
    assert a.score == 7
    a.apply(-100)
    assert a.score == 0


def test_broadcast_queue_prefers_fresh_items_replaces_by_key_and_retires() -> None:
    q = BroadcastQueue()
    q.queue(MemberKey("a"), b"A" * 10)
    q.queue(MemberKey("b"), b"B" * 10)
    assert q.get(budget=15, limit=3) == [b"B" * 10]  # newest first, then budget stops us
    assert q.get(budget=100, limit=3) == [b"A" * 10, b"B" * 10]  # least-transmitted first
    q.queue(MemberKey("b"), b"b" * 10)  # newer news about b replaces the old one
    assert q.get(budget=100, limit=3) == [b"b" * 10, b"A" * 10]
    assert q.get(budget=100, limit=3) == [b"b" * 10, b"A" * 10]  # A's third and last transmission
    assert q.transmits(MemberKey("a")) is None
    assert q.get(budget=100, limit=3) == [b"b" * 10]
    assert q.get(budget=100, limit=3) == []
    assert len(q) == 0


def test_defaults_give_the_documented_numbers() -> None:
    c = GossipConfig()
    assert c.retransmit_limit(32) == 12
    assert c.retransmit_limit(200) == 18
    lo, hi = c.suspicion_bounds(32)
    assert lo == pytest.approx(1.505, abs=0.01) and hi == pytest.approx(9.03, abs=0.05)
    assert c.suspicion_bounds(3) == (1.0, 6.0)
    assert c.push_pull_scaled(32) == 30.0 and c.push_pull_scaled(128) == 90.0


def test_local_writes_are_validated_with_a_clear_error() -> None:
    core = GossipCore("me", "198.18.0.1", 7946)
    with pytest.raises(ValueError, match="not msgpack-able"):
        core.set("endpoints", "e1", {"bad": {1, 2}}, 0.0)
    with pytest.raises(ValueError, match="table and key"):
        core.set("", "e1", {}, 0.0)
    with pytest.raises(TypeError):
        core.set("endpoints", "e1", ["not", "a", "dict"], 0.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="meta is too large"):
        GossipCore("big", "198.18.0.1", 7946, meta={"x": "y" * 2000})
    assert core.table("endpoints") == {}


def test_an_idle_converged_host_wakes_only_to_probe() -> None:
    """Nothing to spread and every probe answered: no gossip rounds and no probe timeouts wake the
    host, only its own probe ticks (4/s) and the reaper (1/s). Timers that fire for nothing cost an
    idle daemon CPU on every host of the cluster."""
    from overlaynet.gossip.sim import Simulation

    sim = Simulation(seed=3)
    sim.add_converged_cluster(8)
    sim.run_for(10.0)  # the joins' news has been retransmitted and retired
    node = next(iter(sim.nodes.values()))
    wakes = 0
    tick = node.core.tick

    def counting_tick(now: float) -> None:
        nonlocal wakes
        wakes += 1
        tick(now)

    node.core.tick = counting_tick  # type: ignore[method-assign]
    sim.run_for(20.0)
    assert sim.converged()
    assert wakes / 20.0 < 6.0, f"{wakes / 20.0:.1f} timer wake-ups per second"
