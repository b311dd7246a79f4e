"""Deterministic discrete-event simulator running the real GossipCore for hundreds of hosts.

One virtual clock, one seeded random.Random (loss, latency, each core's own rng), an event heap.
UDP datagrams can be lost (loss probability) and are delayed by a uniform latency; TCP streams are
never lost but fail like a refused connection when the far side is down or partitioned away.
Hosts can crash (silently stop), restart with the same name (fresh state, incarnation 0), leave
gracefully, and be split into partitions. Used by tests/unit/test_gossip_*.py and benchmarks/.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from functools import partial
from typing import Any

from .config import GossipConfig
from .core import GossipCore
from .keyring import Keyring
from .state import Addr, Event

Observer = Callable[[float, str, Event], None]


class SimNode:
    def __init__(self, name: str, addr: Addr, core: GossipCore) -> None:
        self.name = name
        self.addr = addr
        self.core = core
        self.up = True
        self.generation = 0
        self.next_tick: float | None = None


class Simulation:
    def __init__(self, seed: int = 0, loss: float = 0.0, latency: tuple[float, float] = (0.0002, 0.002),
                 config: GossipConfig | None = None) -> None:
        self.rng = random.Random(seed)
        self.loss = loss
        self.latency = latency
        self.config = config or GossipConfig()
        self.now = 0.0
        self.nodes: dict[str, SimNode] = {}
        self._by_addr: dict[Addr, SimNode] = {}
        self._heap: list[tuple[float, int, str, Any]] = []
        self._seq = 0
        self._groups: dict[str, int] | None = None
        self._host_loss: dict[Addr, float] = {}  # per-host extra loss (a degraded NIC or overloaded host)
        self.observers: list[Observer] = []
        self.delivered = 0
        self.dropped = 0
        self.max_datagram = 0  # largest UDP payload any core produced (must stay <= udp_payload_max)
        self.join_replies: dict[str, int] = {}

    # ------------------------------------------------------------------ topology
    def add_node(self, name: str | None = None, seeds: list[str] | None = None, keyring: Keyring | None = None,
                 meta: dict[str, Any] | None = None, config: GossipConfig | None = None) -> SimNode:
        """Start a host and join it through the named seeds (none: it starts a cluster)."""
        name = name or f"n{len(self.nodes)}"
        i = len(self.nodes)
        addr = (f"198.18.{i // 250}.{i % 250 + 1}", 7946)
        core = GossipCore(name, addr[0], addr[1], config=config or self.config,
                          rng=random.Random(self.rng.getrandbits(64)), keyring=keyring, meta=meta, now=self.now)
        node = SimNode(name, addr, core)
        self.nodes[name] = node
        self._by_addr[addr] = node
        core.start(self.now)
        if seeds:
            core.join([self.nodes[s].addr for s in seeds], self.now)
        self._flush(node)
        return node

    def add_cluster(self, n: int, spacing: float = 0.0, keyring_factory: Callable[[], Keyring] | None = None,
                    seeds: int = 1) -> list[SimNode]:
        """Add n hosts, each joining through up to `seeds` of the earlier ones, `spacing` apart."""
        out: list[SimNode] = []
        for _ in range(n):
            existing = [nd.name for nd in self.nodes.values() if nd.up]
            picked = self.rng.sample(existing, min(seeds, len(existing)))
            out.append(self.add_node(seeds=picked, keyring=keyring_factory() if keyring_factory else None))
            if spacing:
                self.run_for(spacing)
        return out

    def add_converged_cluster(self, n: int, keyring_factory: Callable[[], Keyring] | None = None) -> list[SimNode]:
        """n hosts that already know each other (no join storm): for large-n benchmarks."""
        out = [self.add_node(keyring=keyring_factory() if keyring_factory else None) for _ in range(n)]
        roster = [(nd.name, nd.addr[0], nd.addr[1], nd.core.own_meta()) for nd in out]
        for nd in out:
            nd.core.assume_members(roster)
        return out

    def crash(self, name: str) -> None:
        node = self.nodes[name]
        node.up = False
        node.generation += 1
        node.next_tick = None

    def restart(self, name: str, seeds: list[str], keyring: Keyring | None = None,
                meta: dict[str, Any] | None = None) -> SimNode:
        """Bring a crashed host back with the same name and address but empty state."""
        node = self.nodes[name]
        node.generation += 1
        node.up = True
        node.next_tick = None
        old = node.core
        node.core = GossipCore(name, node.addr[0], node.addr[1], config=old.cfg,
                               rng=random.Random(self.rng.getrandbits(64)),
                               keyring=keyring if keyring is not None else old.keyring,
                               meta=meta if meta is not None else old.own_meta(), now=self.now)
        node.core.start(self.now)
        node.core.join([self.nodes[s].addr for s in seeds], self.now)
        self._flush(node)
        return node

    def leave(self, name: str, linger: float = 0.5) -> None:
        """Graceful leave: announce, keep running `linger` seconds so the notice spreads, then stop."""
        node = self.nodes[name]
        node.core.leave(self.now)
        self._flush(node)
        self._push(self.now + linger, "stop", (node, node.generation))

    def partition(self, *groups: set[str] | list[str]) -> None:
        """Split hosts into groups that cannot talk to each other (hosts not listed form one more)."""
        self._groups = {}
        for i, g in enumerate(groups):
            for name in g:
                self._groups[name] = i + 1

    def degrade(self, name: str, loss: float) -> None:
        """Lose this fraction of everything the host sends or receives (0 restores it)."""
        self._host_loss[self.nodes[name].addr] = loss

    def heal(self) -> None:
        self._groups = None

    def reachable(self, a: SimNode, b: SimNode) -> bool:
        if not b.up:
            return False
        if self._groups is None:
            return True
        return self._groups.get(a.name, 0) == self._groups.get(b.name, 0)

    # ------------------------------------------------------------------ running
    def run_until(self, t: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= t:
            when, _, kind, arg = heapq.heappop(heap)
            self.now = when
            if kind == "tick":
                node, gen = arg
                if not node.up or gen != node.generation or node.next_tick != when:
                    continue
                node.next_tick = None
                node.core.tick(when)
                self._flush(node)
            elif kind == "dgram":
                node, src, data = arg
                if node.up:
                    self.delivered += 1
                    node.core.handle_datagram(data, src, when)
                    self._flush(node)
            elif kind == "stream":
                node, origin, data, expect_reply, tag, gen = arg
                if not node.up:
                    continue
                reply = node.core.handle_stream(data, origin.addr, when)
                self._flush(node)
                if reply is not None and expect_reply and self.reachable(node, origin):
                    self._push(when + self._latency(), "reply", (origin, node.addr, reply, tag, gen))
            elif kind == "reply":
                origin, src, data, tag, gen = arg
                if origin.up and gen == origin.generation:
                    if tag == "join":
                        self.join_replies[origin.name] = self.join_replies.get(origin.name, 0) + 1
                    origin.core.handle_reply(data, src, when)
                    self._flush(origin)
            elif kind == "stop":
                node, gen = arg
                if gen == node.generation:
                    self.crash(node.name)
        self.now = max(self.now, t)

    def run_for(self, dt: float) -> None:
        self.run_until(self.now + dt)

    def run_until_true(self, pred: Callable[[], bool], timeout: float, step: float = 0.05) -> float | None:
        """Advance in `step`s until pred() holds; return the virtual time taken, None on timeout."""
        start = self.now
        while True:
            if pred():
                return self.now - start
            if self.now - start >= timeout:
                return None
            self.run_for(step)

    def set(self, host: str, table: str, key: str, value: dict[str, Any] | None) -> None:
        """Write (value) or delete (None) an entry on a host and send what that produces."""
        node = self.nodes[host]
        if value is None:
            node.core.delete(table, key, self.now)
        else:
            node.core.set(table, key, value, self.now)
        self._flush(node)

    def flush(self, node: SimNode) -> None:
        """Deliver what a core queued after calling it directly (set, key_op, ...)."""
        self._flush(node)

    # ------------------------------------------------------------------ queries
    def live_nodes(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.up]

    def state_of(self, observer: str, member: str) -> str | None:
        info = self.nodes[observer].core.member(member)
        return None if info is None else info.state

    def all_agree(self, member: str, state: str) -> bool:
        """Every running host (other than member itself) sees member in `state`."""
        return all(self.state_of(n.name, member) == state for n in self.live_nodes() if n.name != member)

    def converged(self) -> bool:
        """Every running host knows every other running host as alive."""
        up = self.live_nodes()
        return all(self.state_of(a.name, b.name) == "alive" for a in up for b in up)

    # ------------------------------------------------------------------ plumbing
    def _push(self, when: float, kind: str, arg: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, kind, arg))

    def _latency(self) -> float:
        lo, hi = self.latency
        return lo + (hi - lo) * self.rng.random()

    def _flush(self, node: SimNode) -> None:
        core = node.core
        rnd = self.rng.random
        if not node.up:  # a crashed host's process is gone: nothing it "sends" leaves
            core.pop_datagrams()
            core.pop_streams()
            core.pop_events()
            return
        for d in core.pop_datagrams():
            if len(d.data) > self.max_datagram:
                self.max_datagram = len(d.data)
            dest = self._by_addr.get(d.dest)
            loss = self.loss
            if self._host_loss:
                loss = max(loss, self._host_loss.get(node.addr, 0.0), self._host_loss.get(d.dest, 0.0))
            if dest is None or not self.reachable(node, dest) or rnd() < loss:
                self.dropped += 1
                continue
            self._push(self.now + self._latency(), "dgram", (dest, node.addr, d.data))
        for s in core.pop_streams():
            dest = self._by_addr.get(s.dest)
            if dest is None or not self.reachable(node, dest):
                continue  # connection refused / timed out
            self._push(self.now + self._latency(), "stream",
                       (dest, node, s.data, s.expect_reply, s.tag, node.generation))
        events = core.pop_events()
        if events and self.observers:
            for ev in events:
                for obs in self.observers:
                    obs(self.now, node.name, ev)
        due = core.next_deadline()
        if node.up and due is not None and due != node.next_tick:
            # as the transport does: one wake-up armed, at the core's next deadline (a later one when
            # the earlier timer was cancelled; the stale tick is skipped in run_until)
            node.next_tick = due
            self._push(due, "tick", (node, node.generation))


# ---------------------------------------------------------------------- measurements (benchmarks/)
def measure_propagation(n: int, loss: float, updates: int = 50, gap: float = 0.5, seed: int = 1,
                        config: GossipConfig | None = None) -> list[float]:
    """Write `updates` table entries from random hosts of a converged n-host cluster; return, for every
    (update, host), the delay until the host's live view showed it (inf if it never did)."""
    from .state import TableChange

    sim = _cluster(n, loss, seed, config)
    sim.run_for(2.0)
    written: dict[str, float] = {}
    seen: dict[tuple[str, str], float] = {}

    def obs(t: float, host: str, ev: Event) -> None:
        if isinstance(ev, TableChange) and ev.table == "bench" and ev.new is not None:
            seen.setdefault((ev.key, host), t - written[ev.key])

    sim.observers.append(obs)
    for i in range(updates):
        node = sim.rng.choice(sim.live_nodes())
        key = f"u{i}"
        written[key] = sim.now
        node.core.set("bench", key, {"i": i}, sim.now)
        sim._flush(node)
        sim.run_for(gap)
    sim.run_for(5.0)
    return [seen.get((k, h), float("inf")) for k in written for h in sim.nodes]


def measure_detection(n: int, loss: float, crashes: int = 10, seed: int = 1,
                      config: GossipConfig | None = None) -> list[tuple[float, float]]:
    """Crash hosts one at a time (kill -9: silence); return (first host declares it dead, every host
    does) per crash, in seconds (inf if not within 60 s)."""
    from .state import MemberChange

    sim = _cluster(n, loss, seed, config)
    sim.run_for(2.0)
    first: dict[str, float] = {}

    def obs(t: float, host: str, ev: Event) -> None:
        if isinstance(ev, MemberChange) and ev.new == "dead":
            first.setdefault(ev.name, t)

    sim.observers.append(obs)
    out = []
    for _ in range(min(crashes, n - 2)):
        victim = sim.rng.choice([nd.name for nd in sim.live_nodes()])
        start = sim.now
        sim.crash(victim)
        took = sim.run_until_true(partial(sim.all_agree, victim, "dead"), timeout=60, step=0.01)
        out.append((first.get(victim, float("inf")) - start, float("inf") if took is None else took))
        sim.run_for(3.0)
    return out


def false_deaths(n: int, loss: float, duration: float, seed: int = 1,
                 config: GossipConfig | None = None) -> tuple[int, int]:
    """Run a healthy cluster for `duration` virtual seconds; return (false deaths, suspicions)."""
    from .state import MemberChange

    sim = _cluster(n, loss, seed, config)
    deaths = 0

    def obs(t: float, host: str, ev: Event) -> None:
        nonlocal deaths
        if isinstance(ev, MemberChange) and ev.new == "dead":
            deaths += 1

    sim.observers.append(obs)
    sim.run_for(duration)
    return deaths, sum(nd.core.stats["probe_failures"] for nd in sim.nodes.values())


def _cluster(n: int, loss: float, seed: int, config: GossipConfig | None) -> Simulation:
    """A converged cluster: real joins up to 100 hosts, the assume_members shortcut beyond."""
    sim = Simulation(seed=seed, loss=loss, config=config)
    if n <= 100:
        sim.add_cluster(n, spacing=0.01, seeds=2)
        sim.run_until_true(sim.converged, timeout=60, step=0.1)
    else:
        sim.add_converged_cluster(n)
        sim.run_for(1.0)
    return sim
