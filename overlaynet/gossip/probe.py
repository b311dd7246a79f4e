"""SWIM's failure detector: probe one member per interval (randomised round-robin, suspects first),
indirect probes through helpers when the direct one goes unanswered, Lifeguard's nack accounting,
and relaying other members' indirect probes. A failed probe makes the member suspect (membership.py).
"""

from __future__ import annotations

from . import codec
from .membership import Membership
from .runtime import Runtime
from .state import Addr, Member, MemberState

SUSPECT = MemberState.SUSPECT


class _Probe:
    __slots__ = ("target", "expected_nacks", "nacks", "timeout_timer")

    def __init__(self, target: str) -> None:
        self.target = target
        self.expected_nacks = 0
        self.nacks = 0
        self.timeout_timer = 0


class _Relay:
    __slots__ = ("requester", "seq", "start")

    def __init__(self, requester: Addr, seq: int, start: float) -> None:
        self.requester = requester
        self.seq = seq
        self.start = start


class Prober:
    def __init__(self, rt: Runtime, ms: Membership) -> None:
        self.rt = rt
        self.ms = ms
        ms.prober = self
        self._probes: dict[int, _Probe] = {}
        self._relays: dict[int, _Relay] = {}
        self._order: list[str] = []
        self._suspects: list[str] = []  # suspicions we heard of and have not probed ourselves
        self._idx = 0

    def member_added(self, name: str) -> None:
        # Random position in the probe order so a new member is probed within one pass.
        self._order.insert(self.rt.rng.randint(self._idx, len(self._order)), name)

    def suspected(self, name: str) -> None:
        """Someone else suspects it: probe it next (see _next_target)."""
        self._suspects.append(name)

    def reap(self) -> None:
        now, horizon = self.rt.now, 4 * self.rt.cfg.probe_interval
        for seq in [s for s, r in self._relays.items() if now - r.start > horizon]:
            del self._relays[seq]

    def probe_tick(self) -> None:
        rt, cfg = self.rt, self.rt.cfg
        rt.at(rt.now + self.ms.awareness.scale(cfg.probe_interval), self.probe_tick)
        if self.ms.leaving:
            return
        target = self._next_target()
        if target is None:
            return
        rt.stats["probes"] += 1
        seq = rt.next_seq()
        self._probes[seq] = probe = _Probe(target.name)
        msgs = [codec.pack(codec.Ping(seq, target.name, rt.name))]
        if target.state is SUSPECT:
            # Lifeguard "buddy": tell a suspect directly that it is suspected, so it can refute now.
            msgs.append(codec.pack(codec.Suspect(target.name, target.incarnation, rt.name)))
        rt.send_piggybacked((target.addr, target.port), msgs)
        # the timeout is cancelled by the ack (no wake-up for nothing); the deadline falls on the next
        # probe tick's wake-up anyway
        probe.timeout_timer = rt.at(rt.now + self.ms.awareness.scale(cfg.probe_timeout), self._timeout, seq)
        rt.at(rt.now + self.ms.awareness.scale(cfg.probe_interval), self._deadline, seq)

    def _next_target(self) -> Member | None:
        # Probe members others suspect before resuming the round-robin: if it is alive, our ping carries
        # the suspicion to it and its ack carries the refutation back (a path that does not depend on
        # random gossip reaching us); if it is dead, our failed probe is an independent confirmation.
        while self._suspects:
            m = self.ms.members.get(self._suspects.pop())
            if m is not None and m.state is SUSPECT:
                return m
        for _ in range(2):
            while self._idx < len(self._order):
                m = self.ms.members.get(self._order[self._idx])
                self._idx += 1
                if m is not None and m.live and m is not self.ms.me:
                    return m
            # One full pass done: reshuffle (randomised round-robin bounds time-to-first-probe).
            self._order = list(self.ms.live_names())
            self.rt.rng.shuffle(self._order)
            self._idx = 0
            if not self._order:
                return None
        return None

    def _timeout(self, seq: int) -> None:
        rt = self.rt
        probe = self._probes.get(seq)
        target = None if probe is None else self.ms.members.get(probe.target)
        if probe is None or target is None:
            return
        names = self.ms.live_names()
        helpers = rt.rng.sample(names, min(rt.cfg.indirect_checks + 1, len(names)))
        helpers = [h for h in helpers if h != target.name][: rt.cfg.indirect_checks]
        probe.expected_nacks = len(helpers)
        if rt.cfg.probe_retry_direct:
            # A second direct try is one more independent path (memberlist uses a TCP ping here).
            rt.send((target.addr, target.port), [codec.pack(codec.Ping(seq, target.name, rt.name))])
        msg = codec.pack(codec.IndirectPing(seq, target.name, target.addr, target.port))
        for h in helpers:
            m = self.ms.members[h]
            rt.stats["indirect_probes"] += 1
            rt.send_piggybacked((m.addr, m.port), [msg])

    def _deadline(self, seq: int) -> None:
        probe = self._probes.pop(seq, None)
        if probe is None:
            return  # acked
        self.rt.stats["probe_failures"] += 1
        # Lifeguard: missing nacks mean *our* network/CPU is the problem, so slow down.
        if probe.expected_nacks:
            self.ms.awareness.apply(probe.expected_nacks - probe.nacks)
        else:
            self.ms.awareness.apply(1)
        target = self.ms.members.get(probe.target)
        if target is not None and target.live:
            self.ms.suspect(target.name, target.incarnation, self.rt.name)

    def _relay_nack(self, seq: int) -> None:
        relay = self._relays.get(seq)
        if relay is not None:
            self.rt.send(relay.requester, [codec.pack(codec.Nack(relay.seq))])

    def on_ping(self, msg: codec.Ping, src: Addr, sender: str) -> None:
        if msg.target != self.rt.name:
            self.rt.stats["misdirected"] += 1  # the address now belongs to someone else
            return
        self.rt.send_piggybacked(src, [codec.pack(codec.Ack(msg.seq))])

    def on_ack(self, msg: codec.Ack, src: Addr, sender: str) -> None:
        probe = self._probes.pop(msg.seq, None)
        if probe is not None:
            self.rt.cancel(probe.timeout_timer)
            self.ms.awareness.apply(-1)
        relay = self._relays.pop(msg.seq, None)
        if relay is not None:
            self.rt.send(relay.requester, [codec.pack(codec.Ack(relay.seq))])

    def on_nack(self, msg: codec.Nack, src: Addr, sender: str) -> None:
        probe = self._probes.get(msg.seq)
        if probe is not None:
            probe.nacks += 1

    def on_indirect_ping(self, msg: codec.IndirectPing, src: Addr, sender: str) -> None:
        rt = self.rt
        seq = rt.next_seq()
        self._relays[seq] = _Relay(src, msg.seq, rt.now)
        rt.send((msg.addr, msg.port), [codec.pack(codec.Ping(seq, msg.target, rt.name))])
        rt.at(rt.now + self.ms.awareness.scale(rt.cfg.probe_timeout), self._relay_nack, seq)
