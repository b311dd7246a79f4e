"""Cluster behaviour of the real gossip core in the deterministic simulator (virtual time)."""

from __future__ import annotations

import pytest

from overlaynet.gossip import GossipConfig, MemberChange, TableChange
from overlaynet.gossip.sim import Simulation

pytestmark = pytest.mark.unit


def _first_seen(sim: Simulation, table: str, key: str, value: dict) -> dict[str, float]:
    """Record, per host, the virtual time at which table/key became `value` in its live view."""
    seen: dict[str, float] = {}

    def obs(t: float, host: str, ev: object) -> None:
        if isinstance(ev, TableChange) and ev.table == table and ev.key == key and ev.new == value:
            seen.setdefault(host, t)

    sim.observers.append(obs)
    return seen


def _deaths(sim: Simulation) -> list[tuple[float, str, str]]:
    out: list[tuple[float, str, str]] = []

    def obs(t: float, host: str, ev: object) -> None:
        if isinstance(ev, MemberChange) and ev.new == "dead":
            out.append((t, host, ev.name))

    sim.observers.append(obs)
    return out


def _set(sim: Simulation, host: str, table: str, key: str, value: dict | None) -> None:
    node = sim.nodes[host]
    if value is None:
        node.core.delete(table, key, sim.now)
    else:
        node.core.set(table, key, value, sim.now)
    sim._flush(node)


def test_200_hosts_at_10pct_loss_converge_spread_updates_and_detect_a_crash() -> None:
    sim = Simulation(seed=7, loss=0.10)
    sim.add_cluster(200, spacing=0.01, seeds=2)
    assert sim.run_until_true(sim.converged, timeout=30) is not None, "membership did not converge"

    value = {"vtep": "198.18.0.9", "mac": "02:00:00:00:00:09"}
    seen = _first_seen(sim, "endpoints", "ep-1", value)
    start = sim.now
    _set(sim, "n17", "endpoints", "ep-1", value)
    sim.run_for(2.0)
    assert len(seen) == 200, f"only {len(seen)}/200 hosts got the update within 2 s"
    assert max(seen.values()) - start < 2.0
    assert all(n.core.table("endpoints") == {"ep-1": value} for n in sim.nodes.values())

    sim.crash("n42")
    took = sim.run_until_true(lambda: sim.all_agree("n42", "dead"), timeout=20, step=0.05)
    assert took is not None, "not every host detected the crash"
    assert took < 8.0
    assert sim.max_datagram <= 1400
    assert sum(n.core.stats["internal_errors"] for n in sim.nodes.values()) == 0


def test_no_false_deaths_under_10pct_loss() -> None:
    sim = Simulation(seed=11, loss=0.10)
    sim.add_cluster(32, spacing=0.02)
    sim.run_until_true(sim.converged, timeout=10)
    deaths = _deaths(sim)
    sim.run_for(150.0)
    assert deaths == []
    assert sim.converged()
    # The run really exercised suspicion: some probes failed and were refuted, none became a death.
    assert sum(n.core.stats["refutes"] for n in sim.nodes.values()) > 0


def test_suspicion_is_refuted_by_a_host_that_was_briefly_cut_off() -> None:
    sim = Simulation(seed=3)
    sim.add_cluster(10, spacing=0.02)
    sim.run_until_true(sim.converged, timeout=5)
    deaths = _deaths(sim)
    others = [n for n in sim.nodes if n != "n4"]
    sim.partition(others, ["n4"])
    assert sim.run_until_true(lambda: any(sim.state_of(o, "n4") == "suspect" for o in others), 3) is not None
    sim.heal()
    assert sim.run_until_true(lambda: sim.all_agree("n4", "alive"), timeout=3) is not None
    assert deaths == []
    assert sim.nodes["n4"].core.incarnation > 0
    assert sim.nodes["n4"].core.stats["refutes"] >= 1


def test_leave_is_not_failure_and_entries_follow_their_owner() -> None:
    cfg = GossipConfig(left_reap_timeout=30.0, dead_reap_timeout=60.0)
    sim = Simulation(seed=5, config=cfg)
    sim.add_cluster(10, spacing=0.02)
    sim.run_until_true(sim.converged, timeout=5)
    _set(sim, "n3", "endpoints", "a", {"owner": "n3"})
    _set(sim, "n4", "endpoints", "b", {"owner": "n4"})
    sim.run_for(0.5)
    assert all(n.core.table("endpoints").keys() == {"a", "b"} for n in sim.nodes.values())

    sim.leave("n3")
    sim.crash("n4")
    assert sim.run_until_true(lambda: sim.all_agree("n3", "left") and sim.all_agree("n4", "dead"), 15)
    for n in sim.live_nodes():
        assert n.core.table("endpoints") == {}, "entries of a left/dead owner must be withdrawn"
        assert n.core.stats["deaths"] == 1  # only n4 counted as a death

    # n4 comes back with the same name: it refutes its death and its entries reappear everywhere,
    # and what it writes after the restart beats its previous life despite its fresh Lamport clock.
    node = sim.restart("n4", seeds=["n0"])
    node.core.set("endpoints", "b", {"owner": "n4", "life": 2}, sim.now)
    sim._flush(node)
    assert sim.run_until_true(lambda: sim.all_agree("n4", "alive"), 5) is not None
    assert sim.run_until_true(
        lambda: all(n.core.table("endpoints") == {"b": {"owner": "n4", "life": 2}} for n in sim.live_nodes()), 5
    ) is not None

    # Reaping: a left member is forgotten after left_reap_timeout, with its hidden entries.
    sim.run_for(35.0)
    for n in sim.live_nodes():
        assert n.core.member("n3") is None
        assert n.core.tables().get("endpoints", "a") is None


def test_partition_heals_and_tables_converge() -> None:
    sim = Simulation(seed=9, loss=0.02)
    sim.add_cluster(20, spacing=0.02)
    sim.run_until_true(sim.converged, timeout=5)
    left = [f"n{i}" for i in range(10)]
    right = [f"n{i}" for i in range(10, 20)]
    sim.partition(left, right)
    sim.run_for(25.0)  # long enough for each side to declare the other dead and stop gossiping to it
    assert sim.all_agree("n15", "dead") is False  # right side still sees n15 alive ...
    assert all(sim.state_of(h, "n15") == "dead" for h in left)  # ... the left side does not
    _set(sim, "n2", "networks", "blue", {"vni": 42})
    _set(sim, "n12", "networks", "red", {"vni": 43})
    _set(sim, "n3", "ipam", "198.19.1.0/26", {"host": "n3"})
    sim.run_for(1.0)
    sim.heal()
    took = sim.run_until_true(sim.converged, timeout=60, step=0.5)
    assert took is not None, "membership did not re-converge after the partition healed"
    want = {"blue": {"vni": 42}, "red": {"vni": 43}}
    assert sim.run_until_true(lambda: all(n.core.table("networks") == want for n in sim.nodes.values()),
                              timeout=60, step=0.5) is not None
    assert all(n.core.table("ipam") == {"198.19.1.0/26": {"host": "n3"}} for n in sim.nodes.values())


def test_tombstones_expire_everywhere_at_the_same_time() -> None:
    cfg = GossipConfig(tombstone_ttl=20.0)
    sim = Simulation(seed=4, config=cfg)
    sim.add_cluster(12, spacing=0.02)
    sim.run_until_true(sim.converged, timeout=5)
    _set(sim, "n1", "endpoints", "x", {"v": 1})
    sim.run_for(1.0)
    _set(sim, "n1", "endpoints", "x", None)
    deleted_at = sim.now
    sim.run_for(10.0)  # the tombstone travelled (and was re-gossiped) meanwhile
    assert all(n.core.tables().get("endpoints", "x") is not None for n in sim.nodes.values())
    assert all(n.core.table("endpoints") == {} for n in sim.nodes.values())
    sim.run_for(deleted_at + 20.0 - sim.now + 1.5)  # residual lifetime: gone everywhere by ttl + reap
    assert all(n.core.tables().get("endpoints", "x") is None for n in sim.nodes.values())


def test_an_update_too_big_for_udp_travels_over_tcp() -> None:
    sim = Simulation(seed=6, loss=0.05)
    sim.add_cluster(40, spacing=0.02)
    sim.run_until_true(sim.converged, timeout=10)
    big = {"blob": "x" * 5000}
    seen = _first_seen(sim, "networks", "big", big)
    _set(sim, "n5", "networks", "big", big)
    assert sim.run_until_true(lambda: len(seen) == 40, timeout=40, step=0.1) is not None
    assert sim.max_datagram <= 1400


def test_simulation_is_deterministic() -> None:
    def run() -> tuple[int, int, list[str]]:
        sim = Simulation(seed=21, loss=0.1)
        sim.add_cluster(15, spacing=0.02)
        sim.run_for(5.0)
        sim.crash("n3")
        sim.run_for(5.0)
        return sim.delivered, sim.dropped, [m.state for m in sim.nodes["n0"].core.members()]

    assert run() == run()


def test_a_degraded_host_probes_less_aggressively() -> None:
    def run(awareness: int) -> tuple[int, int, int]:
        sim = Simulation(seed=5, config=GossipConfig(awareness_max_multiplier=awareness))
        sim.add_cluster(16, spacing=0.02)
        sim.run_until_true(sim.converged, timeout=5)
        sim.degrade("n3", 0.5)  # half of everything n3 sends or receives is lost
        deaths = _deaths(sim)
        sim.run_for(60.0)
        assert deaths == []
        core = sim.nodes["n3"].core
        return core.stats["probes"], core.stats["probe_failures"], core.health_score

    probes, failures, score = run(8)
    probes_blind, failures_blind, _ = run(1)  # Lifeguard local health disabled
    assert score > 0
    assert probes < probes_blind / 2
    assert failures < failures_blind / 2  # fewer false accusations from the sick host
