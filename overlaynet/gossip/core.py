"""The sans-IO gossip node: SWIM membership (+ Lifeguard), dissemination, replicated tables.

Feed it received bytes (handle_datagram / handle_stream) and the passage of time (tick); collect what
it wants sent (pop_datagrams / pop_streams) and what happened (pop_events). It never touches a socket
or a clock, and its only randomness is the injected random.Random (plus os.urandom for AES-GCM nonces,
see keyring.py) — so the asyncio transport and the simulator run exactly the same code.

Bad input never raises out of this class: it is counted in stats and dropped.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from typing import Any

from . import codec
from .awareness import Awareness
from .broadcast import BroadcastQueue
from .codec import DecodeError, UnknownVersion
from .config import GossipConfig
from .keyring import OVERHEAD, AuthError, Keyring, KeyringError, key_id
from .state import (
    CODE_STATES,
    STATE_CODES,
    Addr,
    Datagram,
    Event,
    KeyringChange,
    Member,
    MemberChange,
    MemberInfo,
    MemberState,
    StreamRequest,
)
from .suspicion import Suspicion
from .tables import Record, TableStore, newer

ALIVE, SUSPECT, DEAD, LEFT = MemberState.ALIVE, MemberState.SUSPECT, MemberState.DEAD, MemberState.LEFT
UDP, TCP = b"udp", b"tcp"
PP_JOIN, PP_REPLY = 1, 2  # push-pull flags

STAT_NAMES = (
    "packets_in", "packets_out", "bytes_in", "bytes_out", "streams_in", "streams_out",
    "auth_failed", "malformed", "oversize", "unknown_version", "unknown_type", "misdirected",
    "internal_errors", "probes", "probe_failures", "indirect_probes", "suspects", "deaths", "refutes",
    "push_pulls", "key_ops_applied", "key_ops_rejected", "tombstones_expired", "reaped",
)


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


class GossipCore:
    def __init__(self, name: str, addr: str, port: int, *, config: GossipConfig | None = None,
                 rng: random.Random | None = None, keyring: Keyring | None = None,
                 meta: dict[str, Any] | None = None, now: float = 0.0) -> None:
        if not name or len(name) > codec.MAX_NAME:
            raise ValueError(f"node name must be 1..{codec.MAX_NAME} characters")
        self.name = name
        self.cfg = config or GossipConfig()
        self.rng = rng or random.Random()
        self.keyring = keyring
        self.stats: dict[str, int] = dict.fromkeys(STAT_NAMES, 0)
        self._now = now
        self._self = Member(name, addr, port, 0, ALIVE, now, dict(meta or {}))
        self._members: dict[str, Member] = {name: self._self}
        self._n_live = 1
        self._broadcasts = BroadcastQueue()
        self._tables = TableStore(self._owner_live)
        self._own_intent: dict[tuple[str, str], dict[str, Any] | None] = {}
        self._awareness = Awareness(self.cfg.awareness_max_multiplier)
        self._suspicions: dict[str, Suspicion] = {}
        self._seq = 0
        self._probes: dict[int, _Probe] = {}
        self._relays: dict[int, _Relay] = {}
        self._probe_order: list[str] = []
        self._probe_suspects: list[str] = []  # suspicions we heard of and have not probed ourselves
        self._probe_idx = 0
        self._live_others = _NameSet()  # alive or suspect, not us: probe/gossip candidates
        # dead or left: reaping and gossip-to-the-dead (a dict: ordered, so runs are reproducible)
        self._down: dict[str, None] = {}
        self._timers: list[tuple[float, int, Callable[..., None], Any]] = []
        self._timer_seq = 0
        self._datagrams: list[Datagram] = []
        self._streams: list[StreamRequest] = []
        self._events: list[Event] = []
        self._unknown_owner_since: dict[str, float] = {}
        # Recently reaped names: their records still echo from hosts that reap a moment later.
        self._reaped: dict[str, float] = {}
        self._leaving = False
        self._started = False
        self._eager_pending = False
        self._eager_scheduled = False
        self._last_eager = float("-inf")
        self._budget = (self.cfg.udp_payload_max - (OVERHEAD if keyring else 0)
                        - codec.packet_overhead(name))
        if len(self._alive_msg(self._self)) > self._budget // 2:
            raise ValueError("node meta is too large for a gossip packet; keep it under ~600 bytes")

    # ------------------------------------------------------------------ public: lifecycle
    def start(self, now: float) -> None:
        """Begin probing/gossiping. Timers start at random phases so hosts do not synchronise."""
        self._now = max(self._now, now)
        if self._started:
            return
        self._started = True
        c = self.cfg
        self._at(now + self.rng.uniform(0, c.probe_interval), self._probe_tick)
        self._at(now + self.rng.uniform(0, c.gossip_interval), self._gossip_tick)
        self._at(now + self.rng.uniform(0, c.push_pull_interval), self._push_pull_tick)
        self._at(now + c.reap_interval, self._reap_tick)
        self._at(now + self.rng.uniform(0, c.reconnect_interval), self._reconnect_tick)
        self._queue(("m", self.name), self._alive_msg(self._self))

    def join(self, seeds: list[Addr], now: float) -> None:
        """Full-state sync with each seed (TCP). Replies come back through handle_stream."""
        self._now = max(self._now, now)
        for seed in seeds:
            if seed == (self._self.addr, self._self.port):
                continue
            self._stream(seed, [self._push_pull_msg(PP_JOIN, None)], expect_reply=True, tag="join")

    def assume_members(self, members: list[tuple[str, str, int, dict[str, Any]]]) -> None:
        """Start out knowing these members as alive (incarnation 0) without gossiping about them.
        A shortcut for the simulator to build a converged 1000-host cluster without replaying the
        join storm; a real host learns members only from the network."""
        for name, addr, port, meta in members:
            if name == self.name or name in self._members:
                continue
            self._members[name] = Member(name, addr, port, 0, ALIVE, self._now, dict(meta))
            self._n_live += 1
            self._live_others.add(name)

    def leave(self, now: float) -> None:
        """Announce a graceful leave; the transport should keep running until leave_sent()."""
        self._now = max(self._now, now)
        if self._leaving:
            return
        self._leaving = True
        me = self._self
        self._set_state(me, LEFT)
        self._events.append(MemberChange(me.name, ALIVE.value, LEFT.value, me.info()))
        self._events.extend(self._tables.owner_changed(me.name, True, False))
        self._queue(("m", me.name), codec.pack([codec.MSG_DEAD, me.name, me.incarnation, me.name]))
        self._after_input()

    def leave_sent(self) -> bool:
        """The leave notice went out to at least gossip_nodes peers (or there is nobody to tell)."""
        t = self._broadcasts.transmits(("m", self.name))
        return t is None or t >= self.cfg.gossip_nodes or not self._gossip_targets()

    def update_meta(self, meta: dict[str, Any], now: float) -> None:
        self._now = max(self._now, now)
        me = self._self
        old = me.meta
        me.meta = dict(meta)
        if len(self._alive_msg(me)) > self._budget // 2:
            me.meta = old
            raise ValueError("node meta is too large for a gossip packet")
        me.incarnation += 1
        self._queue(("m", me.name), self._alive_msg(me))
        self._after_input()

    # ------------------------------------------------------------------ public: I/O
    def handle_datagram(self, data: bytes, src: Addr, now: float) -> None:
        self._now = max(self._now, now)
        st = self.stats
        st["packets_in"] += 1
        st["bytes_in"] += len(data)
        if len(data) > self.cfg.udp_payload_max:
            st["oversize"] += 1
            return
        plain = self._open(data, UDP)
        if plain is None:
            return
        self._handle_packet(plain, src, stream=False)
        self._after_input()

    def handle_stream(self, data: bytes, src: Addr, now: float) -> bytes | None:
        """A TCP frame arrived (a request from src, or the reply to our StreamRequest to src).
        Returns the reply frame to write back, if any."""
        self._now = max(self._now, now)
        self.stats["streams_in"] += 1
        if len(data) > self.cfg.max_stream_frame:
            self.stats["oversize"] += 1
            return None
        plain = self._open(data, TCP)
        reply = None if plain is None else self._handle_packet(plain, src, stream=True)
        self._after_input()
        if reply is None:
            return None
        self.stats["streams_out"] += 1
        return self._seal(codec.build_packet(self.name, [reply]), TCP)

    def tick(self, now: float) -> None:
        """Run every timer that is due at `now`."""
        self._now = max(self._now, now)
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, fn, arg = heapq.heappop(timers)
            try:
                fn() if arg is None else fn(arg)
            except Exception:  # a bug must not kill the node; it shows up in stats and tests
                self.stats["internal_errors"] += 1
        self._after_input()

    def next_deadline(self) -> float | None:
        return self._timers[0][0] if self._timers else None

    def pop_datagrams(self) -> list[Datagram]:
        out, self._datagrams = self._datagrams, []
        return out

    def pop_streams(self) -> list[StreamRequest]:
        out, self._streams = self._streams, []
        return out

    def pop_events(self) -> list[Event]:
        out, self._events = self._events, []
        return out

    # ------------------------------------------------------------------ public: state
    def members(self) -> list[MemberInfo]:
        return [m.info() for m in self._members.values()]

    def member(self, name: str) -> MemberInfo | None:
        m = self._members.get(name)
        return None if m is None else m.info()

    @property
    def incarnation(self) -> int:
        return self._self.incarnation

    @property
    def health_score(self) -> int:
        return self._awareness.score

    def num_live(self) -> int:
        return self._n_live

    def table(self, name: str) -> dict[str, dict[str, Any]]:
        return self._tables.view(name)

    def tables(self) -> TableStore:
        return self._tables

    def set(self, table: str, key: str, value: dict[str, Any], now: float) -> None:
        if type(value) is not dict:
            raise TypeError("table values are dicts")
        self._write(table, key, value, now)

    def delete(self, table: str, key: str, now: float) -> None:
        self._write(table, key, None, now)

    def key_op(self, op: str, key: bytes, now: float, broadcast: bool = True) -> bool:
        """install/use/remove a key locally and (by default) ask every member to do the same.
        Returns whether the local keyring changed. Raises KeyringError for an impossible op."""
        self._now = max(self._now, now)
        if self.keyring is None:
            raise KeyringError("gossip runs without encryption; there is no keyring to change")
        changed = self._apply_key_op(op, key)
        if broadcast:
            self._queue(("k", key), codec.pack([codec.MSG_KEYOP, op, key]))
        self._after_input()
        return changed

    def stats_snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.stats)
        out["members_live"] = self._n_live
        out["members_total"] = len(self._members)
        out["broadcast_queue"] = len(self._broadcasts)
        out["health_score"] = self._awareness.score
        out["incarnation"] = self._self.incarnation
        out["lamport"] = self._tables.clock
        out["table_records"] = len(self._tables)
        out["encrypted"] = self.keyring is not None
        if self.keyring is not None:
            out["keys"] = self.keyring.key_ids()
            out["primary_key"] = self.keyring.key_ids()[0]
        return out

    # ------------------------------------------------------------------ timers
    def _at(self, when: float, fn: Callable[..., None], arg: Any = None) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (when, self._timer_seq, fn, arg))

    def _probe_tick(self) -> None:
        self._at(self._now + self._awareness.scale(self.cfg.probe_interval), self._probe_tick)
        if self._leaving:
            return
        target = self._next_probe_target()
        if target is None:
            return
        self.stats["probes"] += 1
        seq = self._next_seq()
        self._probes[seq] = _Probe(target.name)
        msgs = [codec.pack([codec.MSG_PING, seq, target.name, self.name])]
        if target.state is SUSPECT:
            # Lifeguard "buddy": tell a suspect directly that it is suspected, so it can refute now.
            msgs.append(codec.pack([codec.MSG_SUSPECT, target.name, target.incarnation, self.name]))
        self._send_piggybacked((target.addr, target.port), msgs)
        self._at(self._now + self._awareness.scale(self.cfg.probe_timeout), self._probe_timeout, seq)
        self._at(self._now + self._awareness.scale(self.cfg.probe_interval), self._probe_deadline, seq)

    def _next_probe_target(self) -> Member | None:
        # Probe members others suspect before resuming the round-robin: if it is alive, our ping carries
        # the suspicion to it and its ack carries the refutation back (a path that does not depend on
        # random gossip reaching us); if it is dead, our failed probe is an independent confirmation.
        while self._probe_suspects:
            m = self._members.get(self._probe_suspects.pop())
            if m is not None and m.state is SUSPECT:
                return m
        for _ in range(2):
            while self._probe_idx < len(self._probe_order):
                m = self._members.get(self._probe_order[self._probe_idx])
                self._probe_idx += 1
                if m is not None and m.live and m is not self._self:
                    return m
            # One full pass done: reshuffle (randomised round-robin bounds time-to-first-probe).
            self._probe_order = list(self._live_others.items)
            self.rng.shuffle(self._probe_order)
            self._probe_idx = 0
            if not self._probe_order:
                return None
        return None

    def _probe_timeout(self, seq: int) -> None:
        probe = self._probes.get(seq)
        target = None if probe is None else self._members.get(probe.target)
        if probe is None or target is None:
            return
        names = self._live_other_names()
        helpers = self.rng.sample(names, min(self.cfg.indirect_checks + 1, len(names)))
        helpers = [h for h in helpers if h != target.name][: self.cfg.indirect_checks]
        probe.expected_nacks = len(helpers)
        if self.cfg.probe_retry_direct:
            # A second direct try is one more independent path (memberlist uses a TCP ping here).
            self._send((target.addr, target.port), [codec.pack([codec.MSG_PING, seq, target.name, self.name])])
        msg = codec.pack([codec.MSG_INDIRECT_PING, seq, target.name, target.addr, target.port])
        for h in helpers:
            m = self._members[h]
            self.stats["indirect_probes"] += 1
            self._send_piggybacked((m.addr, m.port), [msg])

    def _probe_deadline(self, seq: int) -> None:
        probe = self._probes.pop(seq, None)
        if probe is None:
            return  # acked
        self.stats["probe_failures"] += 1
        # Lifeguard: missing nacks mean *our* network/CPU is the problem, so slow down.
        if probe.expected_nacks:
            self._awareness.apply(probe.expected_nacks - probe.nacks)
        else:
            self._awareness.apply(1)
        target = self._members.get(probe.target)
        if target is not None and target.live:
            self._on_suspect(target.name, target.incarnation, self.name)

    def _relay_nack(self, seq: int) -> None:
        relay = self._relays.get(seq)
        if relay is not None:
            self._send(relay.requester, [codec.pack([codec.MSG_NACK, relay.seq])])

    def _gossip_tick(self) -> None:
        self._at(self._now + self.cfg.gossip_interval, self._gossip_tick)
        self._gossip_round()

    def _gossip_round(self) -> None:
        if not self._broadcasts:
            return
        targets = self._gossip_targets()
        k = min(self.cfg.gossip_nodes, len(targets))
        limit = self.cfg.retransmit_limit(self._n_live)
        for name in self.rng.sample(targets, k):
            msgs = self._broadcasts.get(self._budget, limit)
            if not msgs:
                break
            m = self._members[name]
            self._send((m.addr, m.port), msgs)

    def _eager_tick(self) -> None:
        self._eager_scheduled = False
        self._eager_pending = True

    def _after_input(self) -> None:
        """Eager push: new broadcasts go out now rather than at the next gossip tick."""
        if not self._eager_pending or not self._started or not self.cfg.eager_push:
            return
        if self._now >= self._last_eager + self.cfg.eager_push_min_interval:
            self._eager_pending = False
            self._last_eager = self._now
            self._gossip_round()
        elif not self._eager_scheduled:
            self._eager_scheduled = True
            self._at(self._last_eager + self.cfg.eager_push_min_interval, self._eager_tick)

    def _push_pull_tick(self) -> None:
        self._at(self._now + self.cfg.push_pull_scaled(self._n_live), self._push_pull_tick)
        names = self._live_other_names()
        if not names or self._leaving:
            return
        m = self._members[self.rng.choice(names)]
        self.stats["push_pulls"] += 1
        self._stream((m.addr, m.port), [self._push_pull_msg(0, None)], expect_reply=True, tag="push-pull")

    def _reconnect_tick(self) -> None:
        """Serf's reconnect: full sync with one random dead member, so a healed partition (or a host
        that came back without rejoining) is found again even after we stopped gossiping to it."""
        self._at(self._now + self.cfg.reconnect_interval, self._reconnect_tick)
        dead = [n for n in self._down if self._members[n].state is DEAD]
        if not dead or self._leaving:
            return
        m = self._members[self.rng.choice(dead)]
        self._stream((m.addr, m.port), [self._push_pull_msg(0, None)], expect_reply=True, tag="reconnect")

    def _reap_tick(self) -> None:
        c = self.cfg
        now = self._now
        self._at(now + c.reap_interval, self._reap_tick)
        self.stats["tombstones_expired"] += self._tables.expire(now)
        for name in list(self._down):
            m = self._members[name]
            if m.state is DEAD and now - m.state_change > c.dead_reap_timeout or \
                    m.state is LEFT and now - m.state_change > c.left_reap_timeout:
                del self._members[name]
                del self._down[name]
                self._reaped[name] = now
                self._suspicions.pop(name, None)
                self.stats["reaped"] += 1
                self._events.append(MemberChange(name, m.state.value, None, m.info()))
                self._events.extend(self._tables.forget_owner(name))
        # Entries whose owner we never heard of (or already reaped) are dropped after the same wait.
        for owner in self._tables.owners():
            if owner in self._members:
                self._unknown_owner_since.pop(owner, None)
            elif now - self._unknown_owner_since.setdefault(owner, now) > c.dead_reap_timeout:
                self._events.extend(self._tables.forget_owner(owner))
                del self._unknown_owner_since[owner]
        for name in [n for n, t in self._reaped.items() if now - t > c.left_reap_timeout]:
            del self._reaped[name]
        for seq in [s for s, r in self._relays.items() if now - r.start > 4 * c.probe_interval]:
            del self._relays[seq]
        for key in [k for k in self._own_intent if self._tables.get(*k) is None]:
            del self._own_intent[key]

    def _suspicion_check(self, name: str) -> None:
        s = self._suspicions.get(name)
        if s is None:
            return
        if self._now < s.deadline:
            self._at(s.deadline, self._suspicion_check, name)
            return
        self._on_dead(name, s.incarnation, self.name)

    # ------------------------------------------------------------------ packets
    def _open(self, data: bytes, channel: bytes) -> bytes | None:
        if self.keyring is None:
            return data
        try:
            return self.keyring.decrypt(data, channel)
        except AuthError:
            self.stats["auth_failed"] += 1
            return None

    def _seal(self, data: bytes, channel: bytes) -> bytes:
        return data if self.keyring is None else self.keyring.encrypt(data, channel)

    def _handle_packet(self, plain: bytes, src: Addr, stream: bool) -> bytes | None:
        try:
            sender, msgs = codec.parse_packet(plain)
        except UnknownVersion:
            self.stats["unknown_version"] += 1
            return None
        except DecodeError:
            self.stats["malformed"] += 1
            return None
        reply = None
        for raw in msgs:
            try:
                msg = codec.validate(raw)
                if msg is None:
                    self.stats["unknown_type"] += 1
                    continue
                r = self._dispatch(msg, src, sender, stream)
                if r is not None:
                    reply = r
            except (DecodeError, KeyringError, ValueError, TypeError, KeyError, IndexError):
                self.stats["malformed"] += 1
            except Exception:
                self.stats["internal_errors"] += 1
        return reply

    def _dispatch(self, msg: list[Any], src: Addr, sender: str, stream: bool) -> bytes | None:
        t = msg[0]
        if t == codec.MSG_PING:
            if msg[2] != self.name:
                self.stats["misdirected"] += 1  # the address now belongs to someone else
                return None
            self._send_piggybacked(src, [codec.pack([codec.MSG_ACK, msg[1]])])
        elif t == codec.MSG_ACK:
            seq = msg[1]
            if self._probes.pop(seq, None) is not None:
                self._awareness.apply(-1)
            relay = self._relays.pop(seq, None)
            if relay is not None:
                self._send(relay.requester, [codec.pack([codec.MSG_ACK, relay.seq])])
        elif t == codec.MSG_NACK:
            probe = self._probes.get(msg[1])
            if probe is not None:
                probe.nacks += 1
        elif t == codec.MSG_INDIRECT_PING:
            seq = self._next_seq()
            self._relays[seq] = _Relay(src, msg[1], self._now)
            self._send((msg[3], msg[4]), [codec.pack([codec.MSG_PING, seq, msg[2], self.name])])
            self._at(self._now + self._awareness.scale(self.cfg.probe_timeout), self._relay_nack, seq)
        elif t == codec.MSG_ALIVE:
            self._on_alive(msg[1], msg[2], msg[3], msg[4], msg[5])
        elif t == codec.MSG_SUSPECT:
            self._on_suspect(msg[1], msg[2], msg[3])
            if msg[1] == self.name and not self._leaving:
                self._send(src, [self._alive_msg(self._self)])  # refute straight back to the messenger
        elif t == codec.MSG_DEAD:
            self._on_dead(msg[1], msg[2], msg[3])
            if msg[1] == self.name and not self._leaving:
                self._send(src, [self._alive_msg(self._self)])
        elif t == codec.MSG_TABLE:
            ttl = min(max(0.0, float(msg[6])), self.cfg.tombstone_ttl)
            rec = Record(msg[1], msg[2], msg[3], msg[4], msg[5], self._now + ttl if msg[3] is None else None)
            self._merge_record(rec, gossip=True)
        elif t == codec.MSG_KEYOP:
            self._on_key_op(msg[1], msg[2])
        elif t == codec.MSG_PUSHPULL:
            if not stream:
                self.stats["malformed"] += 1  # full state never travels over UDP
                return None
            return self._on_push_pull(msg, sender)
        return None

    def _send(self, dest: Addr, msgs: list[bytes]) -> None:
        data = self._seal(codec.build_packet(self.name, msgs), UDP)
        self.stats["packets_out"] += 1
        self.stats["bytes_out"] += len(data)
        self._datagrams.append(Datagram(dest, data))

    def _send_piggybacked(self, dest: Addr, msgs: list[bytes]) -> None:
        if self._broadcasts:
            room = self._budget - sum(len(m) for m in msgs)
            msgs = msgs + self._broadcasts.get(room, self.cfg.retransmit_limit(self._n_live))
        self._send(dest, msgs)

    def _stream(self, dest: Addr, msgs: list[bytes], expect_reply: bool, tag: str) -> None:
        data = self._seal(codec.build_packet(self.name, msgs), TCP)
        self.stats["streams_out"] += 1
        self._streams.append(StreamRequest(dest, data, expect_reply, tag))

    def _queue(self, key: Any, data: bytes) -> None:
        if len(data) > self._budget:
            # Too big for one datagram: push it over TCP to a few peers; each forwards it once more.
            names = self._live_other_names()
            for name in self.rng.sample(names, min(self.cfg.gossip_nodes, len(names))):
                m = self._members[name]
                self._stream((m.addr, m.port), [data], expect_reply=False, tag="gossip")
            return
        self._broadcasts.queue(key, data)
        self._eager_pending = True

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        return self._seq

    # ------------------------------------------------------------------ membership
    def _owner_live(self, owner: str) -> bool:
        m = self._members.get(owner)
        return m is not None and m.live

    def _live_other_names(self) -> list[str]:
        return self._live_others.items

    def _gossip_targets(self) -> list[str]:
        names = self._live_others.items
        if not self._down:
            return names
        horizon = self._now - self.cfg.gossip_to_the_dead_time
        members = self._members
        dead = [n for n in self._down if members[n].state is DEAD and members[n].state_change > horizon]
        return names + dead if dead else names

    def _set_state(self, m: Member, state: MemberState) -> None:
        if m.state is state:
            return
        was_live = m.live
        m.state = state
        m.state_change = self._now
        if was_live != m.live:
            self._n_live += 1 if m.live else -1
        if m is not self._self:
            if m.live:
                self._live_others.add(m.name)
                self._down.pop(m.name, None)
            else:
                self._live_others.discard(m.name)
                self._down[m.name] = None

    def _alive_msg(self, m: Member) -> bytes:
        return codec.pack([codec.MSG_ALIVE, m.name, m.incarnation, m.addr, m.port, m.meta])

    def _refute(self, incarnation: int) -> None:
        me = self._self
        me.incarnation = max(me.incarnation, incarnation) + 1
        self.stats["refutes"] += 1
        self._queue(("m", me.name), self._alive_msg(me))

    def _on_alive(self, name: str, inc: int, addr: str, port: int, meta: dict[str, Any]) -> None:
        if name == self.name:
            me = self._self
            if self._leaving or inc < me.incarnation:
                return
            if inc == me.incarnation and addr == me.addr and port == me.port and meta == me.meta:
                return
            self._refute(inc)  # a stale or conflicting claim about us (e.g. our previous life)
            return
        m = self._members.get(name)
        if m is None:
            m = Member(name, addr, port, inc, ALIVE, self._now, meta)
            self._members[name] = m
            self._reaped.pop(name, None)
            self._n_live += 1
            self._live_others.add(name)
            # Random position in the probe order so a new member is probed within one pass.
            self._probe_order.insert(self.rng.randint(self._probe_idx, len(self._probe_order)), name)
            self._events.append(MemberChange(name, None, ALIVE.value, m.info()))
            self._events.extend(self._tables.owner_changed(name, False, True))
            self._queue(("m", name), self._alive_msg(m))
            return
        if inc <= m.incarnation:
            return
        old_state, was_live = m.state, m.live
        changed = (m.addr, m.port, m.meta) != (addr, port, meta) or old_state is not ALIVE
        m.incarnation, m.addr, m.port, m.meta = inc, addr, port, meta
        self._suspicions.pop(name, None)
        self._set_state(m, ALIVE)
        self._queue(("m", name), self._alive_msg(m))
        if changed:
            self._events.append(MemberChange(name, old_state.value, ALIVE.value, m.info()))
        self._events.extend(self._tables.owner_changed(name, was_live, True))

    def _on_suspect(self, name: str, inc: int, accuser: str) -> None:
        m = self._members.get(name)
        if m is None or inc < m.incarnation:
            return
        if m is self._self:
            if not self._leaving:
                self._awareness.apply(1)  # being suspected hints that we are slow to answer
                self._refute(inc)
            return
        if m.state is SUSPECT:
            s = self._suspicions.get(name)
            if s is not None and s.confirm(accuser):
                self._queue(("m", name), codec.pack([codec.MSG_SUSPECT, name, inc, accuser]))
                self._at(s.deadline, self._suspicion_check, name)
            return
        if m.state is not ALIVE:
            return
        m.incarnation = inc
        self._set_state(m, SUSPECT)
        self.stats["suspects"] += 1
        n = self._n_live
        k = self.cfg.suspicion_mult - 2
        if n - 2 < k:
            k = 0  # too few members to expect independent confirmations
        lo, hi = self.cfg.suspicion_bounds(n)
        s = Suspicion(accuser, inc, self._now, k, lo, hi)
        self._suspicions[name] = s
        if accuser != self.name:
            self._probe_suspects.append(name)
        self._at(s.deadline, self._suspicion_check, name)
        self._queue(("m", name), codec.pack([codec.MSG_SUSPECT, name, inc, accuser]))
        self._events.append(MemberChange(name, ALIVE.value, SUSPECT.value, m.info()))

    def _on_dead(self, name: str, inc: int, accuser: str) -> None:
        m = self._members.get(name)
        if m is None or inc < m.incarnation or m.state is DEAD or m.state is LEFT:
            return
        if m is self._self:
            if not self._leaving:
                self._refute(inc)
            return
        old_state, was_live = m.state, m.live
        m.incarnation = inc
        self._suspicions.pop(name, None)
        new = LEFT if accuser == name else DEAD
        self._set_state(m, new)
        if new is DEAD:
            self.stats["deaths"] += 1
        self._queue(("m", name), codec.pack([codec.MSG_DEAD, name, inc, accuser]))
        self._events.append(MemberChange(name, old_state.value, new.value, m.info()))
        self._events.extend(self._tables.owner_changed(name, was_live, False))

    # ------------------------------------------------------------------ tables
    def _write(self, table: str, key: str, value: dict[str, Any] | None, now: float) -> None:
        if type(table) is not str or type(key) is not str or not table or \
                len(table) > codec.MAX_NAME or len(key) > codec.MAX_NAME:
            raise ValueError(f"table and key must be strings of 1..{codec.MAX_NAME} characters")
        if value is not None:
            try:
                codec.pack(value)
            except (TypeError, ValueError, OverflowError) as e:
                raise ValueError(f"table value for {table}/{key} is not msgpack-able: {e}") from None
        self._now = max(self._now, now)
        self._own_intent[(table, key)] = value
        rec, change = self._tables.write(table, key, value, self.name, self._now, self.cfg.tombstone_ttl)
        if change is not None:
            self._events.append(change)
        self._queue_record(rec)
        self._after_input()

    def _record_msg(self, rec: Record) -> bytes:
        ttl = 0.0 if rec.expires is None else max(0.0, rec.expires - self._now)
        return codec.pack([codec.MSG_TABLE, rec.table, rec.key, rec.value, rec.lamport, rec.owner, ttl])

    def _queue_record(self, rec: Record) -> None:
        self._queue(("t", rec.table, rec.key), self._record_msg(rec))

    def _merge_record(self, rec: Record, gossip: bool) -> None:
        if rec.owner in self._reaped:
            return
        if rec.owner == self.name:
            cur = self._tables.get(rec.table, rec.key)
            if cur is not None and newer(rec, cur) <= 0:
                return
            ident = (rec.table, rec.key)
            if ident in self._own_intent and self._own_intent[ident] != rec.value:
                # A version from our previous life beats what we wrote since restart: re-assert ours.
                self._tables.clock = max(self._tables.clock, rec.lamport)
                self._write(rec.table, rec.key, self._own_intent[ident], self._now)
                return
        is_new, change = self._tables.merge(rec)
        if change is not None:
            self._events.append(change)
        if is_new and gossip:
            self._queue_record(rec)

    # ------------------------------------------------------------------ push-pull
    def _push_pull_msg(self, flags: int, their_digests: dict[str, Any] | None) -> bytes:
        members = [[m.name, m.addr, m.port, m.incarnation, STATE_CODES[m.state], m.meta]
                   for m in self._members.values()]
        digests = self._tables.digests()
        if their_digests is None:
            send: set[str] | None = None
        else:
            send = {t for t, d in digests.items() if their_digests.get(t) != d}
        now = self._now
        records = [[r.table, r.key, r.value, r.lamport, r.owner,
                    0.0 if r.expires is None else max(0.0, r.expires - now)]
                   for r in self._tables.records(send)]
        return codec.pack([codec.MSG_PUSHPULL, flags, self._tables.clock, members, digests, records])

    def _on_push_pull(self, msg: list[Any], sender: str) -> bytes | None:
        flags, lamport, members, digests, records = msg[1], msg[2], msg[3], msg[4], msg[5]
        # Records new to us are news for our side of the cluster too (e.g. a healed partition), so
        # re-gossip them -- except the full dump a joining host pulls, which the cluster already has.
        regossip = flags != PP_JOIN | PP_REPLY
        for entry in members:
            if type(entry) is not list or len(entry) < 6:
                raise DecodeError("push-pull member")
            name, addr, port, inc, code, meta = entry[:6]
            if not (codec._check(name, "s") and codec._check(addr, "s") and codec._check(port, "i")
                    and codec._check(inc, "i") and type(meta) is dict and code in CODE_STATES):
                raise DecodeError("push-pull member field")
            state = CODE_STATES[code]
            if state is ALIVE:
                self._on_alive(name, inc, addr, port, meta)
            elif state is LEFT:
                self._on_dead(name, inc, name)
            else:
                # memberlist's rule: a "dead" from a full sync only makes us suspect (it may be stale);
                # a suspect we never heard of is added first so our own probes can judge it.
                if name not in self._members and state is SUSPECT:
                    self._on_alive(name, inc, addr, port, meta)
                self._on_suspect(name, inc, sender)
        for entry in records:
            if type(entry) is not list or len(entry) < 6:
                raise DecodeError("push-pull record")
            table, key, value, lam, owner, ttl = entry[:6]
            if not (codec._check(table, "s") and codec._check(key, "s") and codec._check(value, "M")
                    and codec._check(lam, "i") and codec._check(owner, "s") and codec._check(ttl, "f")):
                raise DecodeError("push-pull record field")
            if owner not in self._members:
                continue  # the full member list came first: an owner still unknown is gone/forgotten
            ttl = min(max(0.0, float(ttl)), self.cfg.tombstone_ttl)
            self._merge_record(Record(table, key, value, lam, owner,
                                      self._now + ttl if value is None else None), gossip=regossip)
        self._tables.clock = max(self._tables.clock, lamport)
        if flags & PP_REPLY:
            return None
        return self._push_pull_msg(PP_REPLY | (flags & PP_JOIN), digests)

    # ------------------------------------------------------------------ keyring ops
    def _apply_key_op(self, op: str, key: bytes) -> bool:
        kr = self.keyring
        assert kr is not None
        if op == "install":
            changed = kr.install(key)
        elif op == "use":
            changed = kr.use(key)
        elif op == "remove":
            changed = kr.remove(key)
        else:
            raise KeyringError(f"unknown key operation {op!r}")
        if changed:
            self._budget = self.cfg.udp_payload_max - OVERHEAD - codec.packet_overhead(self.name)
            self._events.append(KeyringChange(op, key_id(key).hex()))
        return changed

    def _on_key_op(self, op: str, key: bytes) -> None:
        if self.keyring is None or not self.cfg.accept_key_ops:
            self.stats["key_ops_rejected"] += 1
            return
        try:
            changed = self._apply_key_op(op, key)
        except KeyringError:
            self.stats["key_ops_rejected"] += 1
            return
        if changed:
            self.stats["key_ops_applied"] += 1
            self._queue(("k", key), codec.pack([codec.MSG_KEYOP, op, key]))
