"""SWIM membership with the Lifeguard refinements: who is in the cluster, probing, suspicion,
refutation, reaping. The replicated tables only learn from it whether an owner is live
(`owner_live`) and when that flips (TableStore.owner_changed / forget_owner).
"""

from __future__ import annotations

from typing import Any

from . import codec
from .awareness import Awareness
from .broadcast import MemberKey
from .runtime import Runtime
from .state import CODE_STATES, STATE_CODES, Addr, Member, MemberChange, MemberInfo, MemberState
from .suspicion import Suspicion
from .tables import TableStore

ALIVE, SUSPECT, DEAD, LEFT = MemberState.ALIVE, MemberState.SUSPECT, MemberState.DEAD, MemberState.LEFT


class _Probe:
    __slots__ = ("target", "expected_nacks", "nacks")

    def __init__(self, target: str) -> None:
        self.target = target
        self.expected_nacks = 0
        self.nacks = 0


class _Relay:
    __slots__ = ("requester", "seq", "start")

    def __init__(self, requester: Addr, seq: int, start: float) -> None:
        self.requester = requester
        self.seq = seq
        self.start = start


class _NameSet:
    """Names with O(1) add/remove and a list view for random sampling (hot paths at n=1000)."""

    __slots__ = ("items", "_pos")

    def __init__(self) -> None:
        self.items: list[str] = []
        self._pos: dict[str, int] = {}

    def add(self, name: str) -> None:
        if name not in self._pos:
            self._pos[name] = len(self.items)
            self.items.append(name)

    def discard(self, name: str) -> None:
        i = self._pos.pop(name, None)
        if i is None:
            return
        last = self.items.pop()
        if i < len(self.items):
            self.items[i] = last
            self._pos[last] = i

    def __contains__(self, name: str) -> bool:
        return name in self._pos

    def __len__(self) -> int:
        return len(self.items)


class Membership:
    def __init__(self, rt: Runtime, tables: TableStore, addr: str, port: int,
                 meta: dict[str, Any]) -> None:
        self.rt = rt
        self.tables = tables
        self.me = Member(rt.name, addr, port, 0, ALIVE, rt.now, dict(meta))
        self.members: dict[str, Member] = {rt.name: self.me}
        self.leaving = False
        # Recently reaped names: their records still echo from hosts that reap a moment later.
        self.reaped: dict[str, float] = {}
        self.awareness = Awareness(rt.cfg.awareness_max_multiplier)
        self._n_live = 1
        self._suspicions: dict[str, Suspicion] = {}
        self._probes: dict[int, _Probe] = {}
        self._relays: dict[int, _Relay] = {}
        self._probe_order: list[str] = []
        self._probe_suspects: list[str] = []  # suspicions we heard of and have not probed ourselves
        self._probe_idx = 0
        self._live_others = _NameSet()  # alive or suspect, not us: probe/gossip candidates
        # dead or left: reaping and gossip-to-the-dead (a dict: ordered, so runs are reproducible)
        self._down: dict[str, None] = {}

    # ---- queries (also the runtime's Peers)
    def num_live(self) -> int:
        return self._n_live

    def owner_live(self, owner: str) -> bool:
        m = self.members.get(owner)
        return m is not None and m.live

    def info(self, name: str) -> MemberInfo | None:
        m = self.members.get(name)
        return None if m is None else m.info()

    def live_names(self) -> list[str]:
        return self._live_others.items

    def gossip_names(self) -> list[str]:
        """Live members plus those dead for less than gossip_to_the_dead_time (so they can refute)."""
        names = self._live_others.items
        if not self._down:
            return names
        horizon = self.rt.now - self.rt.cfg.gossip_to_the_dead_time
        members = self.members
        dead = [n for n in self._down if members[n].state is DEAD and members[n].state_change > horizon]
        return names + dead if dead else names

    def addr(self, name: str) -> Addr:
        m = self.members[name]
        return (m.addr, m.port)

    def wire_members(self) -> list[codec.WireMember]:
        return [codec.WireMember(m.name, m.addr, m.port, m.incarnation, STATE_CODES[m.state], m.meta)
                for m in self.members.values()]

    # ---- our own announcements
    def alive_msg(self, m: Member) -> codec.Alive:
        return codec.Alive(m.name, m.incarnation, m.addr, m.port, m.meta)

    def announce(self) -> None:
        self.rt.queue(MemberKey(self.me.name), self.alive_msg(self.me))

    def assume(self, members: list[tuple[str, str, int, dict[str, Any]]]) -> None:
        for name, addr, port, meta in members:
            if name == self.me.name or name in self.members:
                continue
            self.members[name] = Member(name, addr, port, 0, ALIVE, self.rt.now, dict(meta))
            self._n_live += 1
            self._live_others.add(name)

    def leave(self) -> None:
        me = self.me
        self.leaving = True
        self._set_state(me, LEFT)
        self.rt.events.append(MemberChange(me.name, ALIVE.value, LEFT.value, me.info()))
        self.rt.events.extend(self.tables.owner_changed(me.name, True, False))
        self.rt.queue(MemberKey(me.name), codec.Dead(me.name, me.incarnation, me.name))

    def _refute(self, incarnation: int) -> None:
        me = self.me
        me.incarnation = max(me.incarnation, incarnation) + 1
        self.rt.stats["refutes"] += 1
        self.announce()

    def _set_state(self, m: Member, state: MemberState) -> None:
        if m.state is state:
            return
        was_live = m.live
        m.state = state
        m.state_change = self.rt.now
        if was_live != m.live:
            self._n_live += 1 if m.live else -1
        if m is not self.me:
            if m.live:
                self._live_others.add(m.name)
                self._down.pop(m.name, None)
            else:
                self._live_others.discard(m.name)
                self._down[m.name] = None

    # ---- probing
    def probe_tick(self) -> None:
        rt, cfg = self.rt, self.rt.cfg
        rt.at(rt.now + self.awareness.scale(cfg.probe_interval), self.probe_tick)
        if self.leaving:
            return
        target = self._next_probe_target()
        if target is None:
            return
        rt.stats["probes"] += 1
        seq = rt.next_seq()
        self._probes[seq] = _Probe(target.name)
        msgs = [codec.pack(codec.Ping(seq, target.name, rt.name))]
        if target.state is SUSPECT:
            # Lifeguard "buddy": tell a suspect directly that it is suspected, so it can refute now.
            msgs.append(codec.pack(codec.Suspect(target.name, target.incarnation, rt.name)))
        rt.send_piggybacked((target.addr, target.port), msgs)
        rt.at(rt.now + self.awareness.scale(cfg.probe_timeout), self._probe_timeout, seq)
        rt.at(rt.now + self.awareness.scale(cfg.probe_interval), self._probe_deadline, seq)

    def _next_probe_target(self) -> Member | None:
        # Probe members others suspect before resuming the round-robin: if it is alive, our ping carries
        # the suspicion to it and its ack carries the refutation back (a path that does not depend on
        # random gossip reaching us); if it is dead, our failed probe is an independent confirmation.
        while self._probe_suspects:
            m = self.members.get(self._probe_suspects.pop())
            if m is not None and m.state is SUSPECT:
                return m
        for _ in range(2):
            while self._probe_idx < len(self._probe_order):
                m = self.members.get(self._probe_order[self._probe_idx])
                self._probe_idx += 1
                if m is not None and m.live and m is not self.me:
                    return m
            # One full pass done: reshuffle (randomised round-robin bounds time-to-first-probe).
            self._probe_order = list(self._live_others.items)
            self.rt.rng.shuffle(self._probe_order)
            self._probe_idx = 0
            if not self._probe_order:
                return None
        return None

    def _probe_timeout(self, seq: int) -> None:
        rt = self.rt
        probe = self._probes.get(seq)
        target = None if probe is None else self.members.get(probe.target)
        if probe is None or target is None:
            return
        names = self._live_others.items
        helpers = rt.rng.sample(names, min(rt.cfg.indirect_checks + 1, len(names)))
        helpers = [h for h in helpers if h != target.name][: rt.cfg.indirect_checks]
        probe.expected_nacks = len(helpers)
        if rt.cfg.probe_retry_direct:
            # A second direct try is one more independent path (memberlist uses a TCP ping here).
            rt.send((target.addr, target.port), [codec.pack(codec.Ping(seq, target.name, rt.name))])
        msg = codec.pack(codec.IndirectPing(seq, target.name, target.addr, target.port))
        for h in helpers:
            m = self.members[h]
            rt.stats["indirect_probes"] += 1
            rt.send_piggybacked((m.addr, m.port), [msg])

    def _probe_deadline(self, seq: int) -> None:
        probe = self._probes.pop(seq, None)
        if probe is None:
            return  # acked
        self.rt.stats["probe_failures"] += 1
        # Lifeguard: missing nacks mean *our* network/CPU is the problem, so slow down.
        if probe.expected_nacks:
            self.awareness.apply(probe.expected_nacks - probe.nacks)
        else:
            self.awareness.apply(1)
        target = self.members.get(probe.target)
        if target is not None and target.live:
            self._suspect(target.name, target.incarnation, self.rt.name)

    def _relay_nack(self, seq: int) -> None:
        relay = self._relays.get(seq)
        if relay is not None:
            self.rt.send(relay.requester, [codec.pack(codec.Nack(relay.seq))])

    def _suspicion_check(self, name: str) -> None:
        s = self._suspicions.get(name)
        if s is None:
            return
        if self.rt.now < s.deadline:
            self.rt.at(s.deadline, self._suspicion_check, name)
            return
        self._dead(name, s.incarnation, self.rt.name)

    # ---- message handlers: (msg, src, sender) -> reply frame or None
    def on_ping(self, msg: codec.Ping, src: Addr, sender: str) -> None:
        if msg.target != self.rt.name:
            self.rt.stats["misdirected"] += 1  # the address now belongs to someone else
            return
        self.rt.send_piggybacked(src, [codec.pack(codec.Ack(msg.seq))])

    def on_ack(self, msg: codec.Ack, src: Addr, sender: str) -> None:
        if self._probes.pop(msg.seq, None) is not None:
            self.awareness.apply(-1)
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
        rt.at(rt.now + self.awareness.scale(rt.cfg.probe_timeout), self._relay_nack, seq)

    def on_alive(self, msg: codec.Alive, src: Addr, sender: str) -> None:
        self._alive(msg.name, msg.incarnation, msg.addr, msg.port, msg.meta)

    def on_suspect(self, msg: codec.Suspect, src: Addr, sender: str) -> None:
        self._suspect(msg.name, msg.incarnation, msg.accuser)
        if msg.name == self.rt.name and not self.leaving:
            self.rt.send(src, [codec.pack(self.alive_msg(self.me))])  # refute straight back to the messenger

    def on_dead(self, msg: codec.Dead, src: Addr, sender: str) -> None:
        self._dead(msg.name, msg.incarnation, msg.accuser)
        if msg.name == self.rt.name and not self.leaving:
            self.rt.send(src, [codec.pack(self.alive_msg(self.me))])

    def merge_full_state(self, members: list[codec.WireMember], sender: str) -> None:
        """The member list of a push-pull."""
        for w in members:
            state = CODE_STATES[w.state]
            if state is ALIVE:
                self._alive(w.name, w.incarnation, w.addr, w.port, w.meta)
            elif state is LEFT:
                self._dead(w.name, w.incarnation, w.name)
            else:
                # memberlist's rule: a "dead" from a full sync only makes us suspect (it may be stale);
                # a suspect we never heard of is added first so our own probes can judge it.
                if w.name not in self.members and state is SUSPECT:
                    self._alive(w.name, w.incarnation, w.addr, w.port, w.meta)
                self._suspect(w.name, w.incarnation, sender)

    # ---- state transitions
    def _alive(self, name: str, inc: int, addr: str, port: int, meta: dict[str, Any]) -> None:
        rt = self.rt
        if name == rt.name:
            me = self.me
            if self.leaving or inc < me.incarnation:
                return
            if inc == me.incarnation and addr == me.addr and port == me.port and meta == me.meta:
                return
            self._refute(inc)  # a stale or conflicting claim about us (e.g. our previous life)
            return
        m = self.members.get(name)
        if m is None:
            m = Member(name, addr, port, inc, ALIVE, rt.now, meta)
            self.members[name] = m
            self.reaped.pop(name, None)
            self._n_live += 1
            self._live_others.add(name)
            # Random position in the probe order so a new member is probed within one pass.
            self._probe_order.insert(rt.rng.randint(self._probe_idx, len(self._probe_order)), name)
            rt.events.append(MemberChange(name, None, ALIVE.value, m.info()))
            rt.events.extend(self.tables.owner_changed(name, False, True))
            rt.queue(MemberKey(name), self.alive_msg(m))
            return
        if inc <= m.incarnation:
            return
        old_state, was_live = m.state, m.live
        changed = (m.addr, m.port, m.meta) != (addr, port, meta) or old_state is not ALIVE
        m.incarnation, m.addr, m.port, m.meta = inc, addr, port, meta
        self._suspicions.pop(name, None)
        self._set_state(m, ALIVE)
        rt.queue(MemberKey(name), self.alive_msg(m))
        if changed:
            rt.events.append(MemberChange(name, old_state.value, ALIVE.value, m.info()))
        rt.events.extend(self.tables.owner_changed(name, was_live, True))

    def _suspect(self, name: str, inc: int, accuser: str) -> None:
        rt = self.rt
        m = self.members.get(name)
        if m is None or inc < m.incarnation:
            return
        if m is self.me:
            if not self.leaving:
                self.awareness.apply(1)  # being suspected hints that we are slow to answer
                self._refute(inc)
            return
        if m.state is SUSPECT:
            s = self._suspicions.get(name)
            if s is not None and s.confirm(accuser):
                rt.queue(MemberKey(name), codec.Suspect(name, inc, accuser))
                rt.at(s.deadline, self._suspicion_check, name)
            return
        if m.state is not ALIVE:
            return
        m.incarnation = inc
        self._set_state(m, SUSPECT)
        rt.stats["suspects"] += 1
        n = self._n_live
        k = rt.cfg.suspicion_mult - 2
        if n - 2 < k:
            k = 0  # too few members to expect independent confirmations
        lo, hi = rt.cfg.suspicion_bounds(n)
        s = Suspicion(accuser, inc, rt.now, k, lo, hi)
        self._suspicions[name] = s
        if accuser != rt.name:
            self._probe_suspects.append(name)
        rt.at(s.deadline, self._suspicion_check, name)
        rt.queue(MemberKey(name), codec.Suspect(name, inc, accuser))
        rt.events.append(MemberChange(name, ALIVE.value, SUSPECT.value, m.info()))

    def _dead(self, name: str, inc: int, accuser: str) -> None:
        rt = self.rt
        m = self.members.get(name)
        if m is None or inc < m.incarnation or m.state is DEAD or m.state is LEFT:
            return
        if m is self.me:
            if not self.leaving:
                self._refute(inc)
            return
        old_state, was_live = m.state, m.live
        m.incarnation = inc
        self._suspicions.pop(name, None)
        new = LEFT if accuser == name else DEAD
        self._set_state(m, new)
        if new is DEAD:
            rt.stats["deaths"] += 1
        rt.queue(MemberKey(name), codec.Dead(name, inc, accuser))
        rt.events.append(MemberChange(name, old_state.value, new.value, m.info()))
        rt.events.extend(self.tables.owner_changed(name, was_live, False))

    # ---- periodic
    def random_dead(self) -> Addr | None:
        """A dead member to try a full sync with (Serf's reconnect: finds a healed partition again)."""
        dead = [n for n in self._down if self.members[n].state is DEAD]
        if not dead or self.leaving:
            return None
        m = self.members[self.rt.rng.choice(dead)]
        return (m.addr, m.port)

    def random_live(self) -> Addr | None:
        names = self._live_others.items
        if not names or self.leaving:
            return None
        m = self.members[self.rt.rng.choice(names)]
        return (m.addr, m.port)

    def reap(self) -> None:
        """Forget members dead/left for long enough, with their table entries."""
        rt, c, now = self.rt, self.rt.cfg, self.rt.now
        for name in list(self._down):
            m = self.members[name]
            if m.state is DEAD and now - m.state_change > c.dead_reap_timeout or \
                    m.state is LEFT and now - m.state_change > c.left_reap_timeout:
                del self.members[name]
                del self._down[name]
                self.reaped[name] = now
                self._suspicions.pop(name, None)
                rt.stats["reaped"] += 1
                rt.events.append(MemberChange(name, m.state.value, None, m.info()))
                rt.events.extend(self.tables.forget_owner(name))
        for name in [n for n, t in self.reaped.items() if now - t > c.left_reap_timeout]:
            del self.reaped[name]
        for seq in [s for s, r in self._relays.items() if now - r.start > 4 * c.probe_interval]:
            del self._relays[seq]
