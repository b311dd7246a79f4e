"""The sans-IO gossip node: SWIM membership (+ Lifeguard), dissemination, replicated tables.

Feed it received bytes (handle_datagram / handle_stream / handle_reply) and the passage of time
(tick); collect what it wants sent (pop_datagrams / pop_streams) and what happened (pop_events). It
never touches a socket or a clock, and its only randomness is the injected random.Random (plus
os.urandom for AES-GCM nonces, see keyring.py) — so the asyncio transport and the simulator run
exactly the same code.

This class is the facade and the packet dispatcher; the work is done by
  runtime.py     clock, timers, counters, outgoing packets and events, dissemination
  membership.py  SWIM: members and their states, suspicion, refutation, reaping
  probe.py       SWIM's failure detector: direct and indirect probes, Lifeguard nacks
  replica.py     the replicated tables: writes, merges, push-pull and reconnect (anti-entropy)
  keyops.py      keyring changes spread by gossip
Every message type has one handler, looked up in a table (as aioquic dispatches frames).

Bad input never raises out of this class: it is counted in stats and dropped.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from . import codec
from .broadcast import MemberKey
from .codec import DecodeError, UnknownType, UnknownVersion
from .config import GossipConfig
from .keyops import KeyOps
from .keyring import Keyring, KeyringError
from .membership import Membership
from .probe import Prober
from .replica import Replica
from .runtime import TCP, UDP, Runtime
from .state import Addr, Datagram, Event, MemberInfo, StreamRequest
from .tables import TableStore

Handler = Callable[[Any, Addr, str], bytes | None]
STREAM_ONLY = (codec.PushPull,)  # full state never travels over UDP


class GossipCore:
    def __init__(self, name: str, addr: str, port: int, *, config: GossipConfig | None = None,
                 rng: random.Random | None = None, keyring: Keyring | None = None,
                 meta: dict[str, Any] | None = None, now: float = 0.0) -> None:
        if not name or len(name) > codec.MAX_NAME:
            raise ValueError(f"node name must be 1..{codec.MAX_NAME} characters")
        self.name = name
        self.cfg = config or GossipConfig()
        self.keyring = keyring
        self._rt = rt = Runtime(name, self.cfg, rng or random.Random(), keyring, now)
        self.stats = rt.stats
        self._tables = TableStore(lambda owner: self._membership.owner_live(owner))
        self._membership = Membership(rt, self._tables, addr, port, meta or {})
        rt.peers = self._membership
        self._prober = p = Prober(rt, self._membership)
        self._replica = Replica(rt, self._tables, self._membership)
        self._keyops = KeyOps(rt, keyring)
        m = self._membership
        self._handlers: dict[type[codec.Message], Handler] = {
            codec.Ping: p.on_ping, codec.IndirectPing: p.on_indirect_ping, codec.Ack: p.on_ack,
            codec.Nack: p.on_nack, codec.Alive: m.on_alive, codec.Suspect: m.on_suspect,
            codec.Dead: m.on_dead, codec.Table: self._replica.on_table, codec.KeyOp: self._keyops.on_key_op,
            codec.PushPull: self._replica.on_push_pull,
        }
        if len(codec.pack(m.alive_msg(m.me))) > rt.budget // 2:
            raise ValueError("node meta is too large for a gossip packet; keep it under ~600 bytes")

    # ------------------------------------------------------------------ public: lifecycle
    def start(self, now: float) -> None:
        """Begin probing/gossiping. Timers start at random phases so hosts do not synchronise."""
        rt = self._rt
        rt.advance(now)
        if rt.started:
            return
        rt.started = True
        c, rng = self.cfg, rt.rng
        rt.at(now + rng.uniform(0, c.probe_interval), self._prober.probe_tick)
        rt.arm_gossip(now + rng.uniform(0, c.gossip_interval))
        rt.at(now + rng.uniform(0, c.push_pull_interval), self._replica.push_pull_tick)
        rt.at(now + c.reap_interval, self._reap_tick)
        rt.at(now + rng.uniform(0, c.reconnect_interval), self._replica.reconnect_tick)
        self._membership.announce()

    def join(self, seeds: list[Addr], now: float) -> None:
        """Full-state sync with each seed (TCP). Feed each reply to handle_reply, which says whether
        the join with that seed succeeded."""
        self._rt.advance(now)
        me = self._membership.me
        for seed in seeds:
            if seed == (me.addr, me.port):
                continue
            self._replica.sync(seed, codec.PP_JOIN, "join")

    def assume_members(self, members: list[tuple[str, str, int, dict[str, Any]]]) -> None:
        """Start out knowing these members as alive (incarnation 0) without gossiping about them.
        A shortcut for the simulator to build a converged 1000-host cluster without replaying the
        join storm; a real host learns members only from the network."""
        self._membership.assume(members)

    def leave(self, now: float) -> None:
        """Announce a graceful leave; the transport should keep running until leave_sent()."""
        self._rt.advance(now)
        if self._membership.leaving:
            return
        self._membership.leave()
        self._rt.after_input()

    def leave_sent(self) -> bool:
        """The leave notice went out to at least gossip_nodes peers (or there is nobody to tell)."""
        t = self._rt.broadcasts.transmits(MemberKey(self.name))
        return t is None or t >= self.cfg.gossip_nodes or not self._membership.gossip_names()

    def update_meta(self, meta: dict[str, Any], now: float) -> None:
        self._rt.advance(now)
        m = self._membership
        old = m.me.meta
        m.me.meta = dict(meta)
        if len(codec.pack(m.alive_msg(m.me))) > self._rt.budget // 2:
            m.me.meta = old
            raise ValueError("node meta is too large for a gossip packet")
        m.me.incarnation += 1
        m.announce()
        self._rt.after_input()

    # ------------------------------------------------------------------ public: I/O
    def handle_datagram(self, data: bytes, src: Addr, now: float) -> None:
        rt = self._rt
        rt.advance(now)
        st = self.stats
        st["packets_in"] += 1
        st["bytes_in"] += len(data)
        if len(data) > self.cfg.udp_payload_max:
            st["oversize"] += 1
            return
        plain = rt.open(data, UDP)
        if plain is not None:
            self._handle_packet(plain, src, stream=False)
        rt.after_input()

    def handle_stream(self, data: bytes, src: Addr, now: float) -> bytes | None:
        """A TCP frame arrived from src (a request, or the reply to our StreamRequest to src).
        Returns the reply frame to write back, if any."""
        reply, _ = self._handle_frame(data, src, now)
        if reply is None:
            return None
        self.stats["streams_out"] += 1
        return self._rt.seal(codec.build_packet(self.name, [reply]), TCP)

    def handle_reply(self, data: bytes, src: Addr, now: float) -> bool:
        """The reply to our StreamRequest to src arrived. True if it was a full-state reply we could
        read and merged: that is what makes a join (or any sync) successful."""
        return self._handle_frame(data, src, now)[1]

    def tick(self, now: float) -> None:
        """Run every timer that is due at `now`."""
        self._rt.advance(now)
        self._rt.run_due(now)
        self._rt.after_input()

    def next_deadline(self) -> float | None:
        return self._rt.next_deadline()

    def pop_datagrams(self) -> list[Datagram]:
        return self._rt.pop_datagrams()

    def pop_streams(self) -> list[StreamRequest]:
        return self._rt.pop_streams()

    def pop_events(self) -> list[Event]:
        return self._rt.pop_events()

    # ------------------------------------------------------------------ public: state
    def members(self) -> list[MemberInfo]:
        return [m.info() for m in self._membership.members.values()]

    def member(self, name: str) -> MemberInfo | None:
        return self._membership.info(name)

    def own_meta(self) -> dict[str, Any]:
        return dict(self._membership.me.meta)

    @property
    def incarnation(self) -> int:
        return self._membership.me.incarnation

    @property
    def health_score(self) -> int:
        return self._membership.awareness.score

    def table(self, name: str) -> dict[str, dict[str, Any]]:
        return self._tables.view(name)

    def tables(self) -> TableStore:
        return self._tables

    def set(self, table: str, key: str, value: dict[str, Any], now: float) -> None:
        if type(value) is not dict:
            raise TypeError("table values are dicts")
        self._rt.advance(now)
        self._replica.write(table, key, value)
        self._rt.after_input()

    def delete(self, table: str, key: str, now: float) -> None:
        self._rt.advance(now)
        self._replica.write(table, key, None)
        self._rt.after_input()

    def key_op(self, op: str, key: bytes, now: float, broadcast: bool = True) -> bool:
        """install/use/remove a key locally and (by default) ask every member to do the same.
        Returns whether the local keyring changed. Raises KeyringError for an impossible op."""
        self._rt.advance(now)
        changed = self._keyops.request(op, key, broadcast)
        self._rt.after_input()
        return changed

    def stats_snapshot(self) -> dict[str, Any]:
        m = self._membership
        out: dict[str, Any] = dict(self.stats)
        out["members_live"] = m.num_live()
        out["members_total"] = len(m.members)
        out["broadcast_queue"] = len(self._rt.broadcasts)
        out["health_score"] = m.awareness.score
        out["incarnation"] = m.me.incarnation
        out["lamport"] = self._tables.clock
        out["table_records"] = len(self._tables)
        out["encrypted"] = self.keyring is not None
        if self.keyring is not None:
            out["keys"] = self.keyring.key_ids()
            out["primary_key"] = self.keyring.key_ids()[0]
        return out

    # ------------------------------------------------------------------ packets
    def _handle_frame(self, data: bytes, src: Addr, now: float) -> tuple[bytes | None, bool]:
        self._rt.advance(now)
        self.stats["streams_in"] += 1
        if len(data) > self.cfg.max_stream_frame:
            self.stats["oversize"] += 1
            return None, False
        plain = self._rt.open(data, TCP)
        result = (None, False) if plain is None else self._handle_packet(plain, src, stream=True)
        self._rt.after_input()
        return result

    def _handle_packet(self, plain: bytes, src: Addr, stream: bool) -> tuple[bytes | None, bool]:
        """Dispatch every message. Returns (the reply to send back, whether a push-pull reply was
        merged)."""
        st = self.stats
        try:
            sender, msgs = codec.parse_packet(plain)
        except UnknownVersion:
            st["unknown_version"] += 1
            return None, False
        except DecodeError:
            st["malformed"] += 1
            return None, False
        reply, synced = None, False
        for raw in msgs:
            try:
                msg = codec.decode_message(raw)
                if not stream and isinstance(msg, STREAM_ONLY):
                    st["malformed"] += 1
                    continue
                r = self._handlers[type(msg)](msg, src, sender)
                if r is not None:
                    reply = r
                if isinstance(msg, codec.PushPull) and msg.flags & codec.PP_REPLY:
                    synced = True
            except UnknownType:
                st["unknown_type"] += 1
            except (DecodeError, KeyringError, ValueError, TypeError, KeyError, IndexError):
                st["malformed"] += 1
            except Exception:
                st["internal_errors"] += 1
        return reply, synced

    # ------------------------------------------------------------------ timers
    def _reap_tick(self) -> None:
        rt = self._rt
        rt.at(rt.now + self.cfg.reap_interval, self._reap_tick)
        self.stats["tombstones_expired"] += self._tables.expire(rt.now)
        self._membership.reap()
        self._prober.reap()
        self._replica.reap()
