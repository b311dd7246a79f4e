"""SWIM membership with the Lifeguard refinements: who is in the cluster and in which state —
alive, suspect (with its Lifeguard timer), dead, left — refutation, reaping. Probing is probe.py. The replicated tables only learn from it whether an owner is live
(`owner_live`) and when that flips (TableStore.owner_changed / forget_owner).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import codec
from .awareness import Awareness
from .broadcast import MemberKey
from .runtime import Runtime
from .state import CODE_STATES, STATE_CODES, Addr, Member, MemberChange, MemberInfo, MemberState
from .suspicion import Suspicion
from .tables import TableStore

if TYPE_CHECKING:
    from .probe import Prober

ALIVE, SUSPECT, DEAD, LEFT = MemberState.ALIVE, MemberState.SUSPECT, MemberState.DEAD, MemberState.LEFT


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
        self.prober: Prober | None = None  # probe.py; told about new and suspected members
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

    # ---- suspicion
    def _suspicion_check(self, name: str) -> None:
        s = self._suspicions.get(name)
        if s is None:
            return
        if self.rt.now < s.deadline:
            self.rt.at(s.deadline, self._suspicion_check, name)
            return
        self._dead(name, s.incarnation, self.rt.name)

    # ---- message handlers: (msg, src, sender) -> reply frame or None
    def on_alive(self, msg: codec.Alive, src: Addr, sender: str) -> None:
        self._alive(msg.name, msg.incarnation, msg.addr, msg.port, msg.meta)

    def on_suspect(self, msg: codec.Suspect, src: Addr, sender: str) -> None:
        self.suspect(msg.name, msg.incarnation, msg.accuser)
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
                self.suspect(w.name, w.incarnation, sender)

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
            if self.prober is not None:
                self.prober.member_added(name)
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

    def suspect(self, name: str, inc: int, accuser: str) -> None:
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
        if accuser != rt.name and self.prober is not None:
            self.prober.suspected(name)
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
