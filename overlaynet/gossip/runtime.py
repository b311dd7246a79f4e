"""What the membership and table halves of the core share: the clock, timers, counters, the
outgoing datagrams, streams and events, sealing, and dissemination (the broadcast queue, gossip
rounds and eager push).

Still sans-IO: `now` only moves when the core is fed, and everything "sent" is only collected for
the transport (or the simulator) to pop.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from typing import Any, Protocol

from . import codec
from .broadcast import BroadcastKey, BroadcastQueue
from .config import GossipConfig
from .keyring import OVERHEAD, AuthError, Keyring
from .state import Addr, Datagram, Event, StreamRequest

UDP, TCP = b"udp", b"tcp"

STAT_NAMES = (
    "packets_in", "packets_out", "bytes_in", "bytes_out", "streams_in", "streams_out",
    "auth_failed", "malformed", "oversize", "unknown_version", "unknown_type", "misdirected",
    "internal_errors", "probes", "probe_failures", "indirect_probes", "suspects", "deaths", "refutes",
    "push_pulls", "key_ops_applied", "key_ops_rejected", "tombstones_expired", "reaped",
)


class Peers(Protocol):
    """Who to disseminate to: the membership half answers."""

    def num_live(self) -> int: ...
    def live_names(self) -> list[str]: ...
    def gossip_names(self) -> list[str]: ...
    def addr(self, name: str) -> Addr: ...


class Runtime:
    def __init__(self, name: str, cfg: GossipConfig, rng: random.Random, keyring: Keyring | None,
                 now: float) -> None:
        self.name = name
        self.cfg = cfg
        self.rng = rng
        self.keyring = keyring
        self.now = now
        self.stats: dict[str, int] = dict.fromkeys(STAT_NAMES, 0)
        self.events: list[Event] = []
        self.peers: Peers | None = None  # set once the membership half exists
        self.broadcasts = BroadcastQueue()
        self.started = False
        self._timers: list[tuple[float, int, Callable[..., None], Any]] = []
        self._timer_seq = 0
        self._cancelled: set[int] = set()  # timers that must not fire (a probe's timeout after its ack)
        self._gossip_armed = False  # a gossip tick is scheduled (only while there is news to spread)
        self._datagrams: list[Datagram] = []
        self._streams: list[StreamRequest] = []
        self._seq = 0
        self._eager_pending = False
        self._eager_scheduled = False
        self._last_eager = float("-inf")
        self.budget = 0
        self.refresh_budget()

    # ---- clock and timers
    def advance(self, now: float) -> None:
        self.now = max(self.now, now)

    def at(self, when: float, fn: Callable[..., None], arg: Any = None) -> int:
        """Run fn(arg) at `when`; returns the timer's id for cancel()."""
        self._timer_seq += 1
        heapq.heappush(self._timers, (when, self._timer_seq, fn, arg))
        return self._timer_seq

    def cancel(self, timer: int) -> None:
        """The timer will not fire; if it was the next one, the host is not woken up for it."""
        self._cancelled.add(timer)
        self._drop_cancelled()

    def _drop_cancelled(self) -> None:
        timers, cancelled = self._timers, self._cancelled
        while timers and timers[0][1] in cancelled:
            cancelled.discard(heapq.heappop(timers)[1])

    def run_due(self, now: float) -> None:
        timers, cancelled = self._timers, self._cancelled
        while timers and timers[0][0] <= now:
            _, seq, fn, arg = heapq.heappop(timers)
            if cancelled and seq in cancelled:
                cancelled.discard(seq)
                continue
            try:
                fn() if arg is None else fn(arg)
            except Exception:  # a bug must not kill the node; it shows up in stats and tests
                self.stats["internal_errors"] += 1
        self._drop_cancelled()

    def next_deadline(self) -> float | None:
        return self._timers[0][0] if self._timers else None

    def next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        return self._seq

    # ---- output
    def pop_datagrams(self) -> list[Datagram]:
        out, self._datagrams = self._datagrams, []
        return out

    def pop_streams(self) -> list[StreamRequest]:
        out, self._streams = self._streams, []
        return out

    def pop_events(self) -> list[Event]:
        out, self.events = self.events, []
        return out

    def refresh_budget(self) -> None:
        """Message bytes that fit in one datagram (the keyring's overhead comes off once encrypted)."""
        self.budget = (self.cfg.udp_payload_max - (OVERHEAD if self.keyring else 0)
                       - codec.packet_overhead(self.name))

    def open(self, data: bytes, channel: bytes) -> bytes | None:
        if self.keyring is None:
            return data
        try:
            return self.keyring.decrypt(data, channel)
        except AuthError:
            self.stats["auth_failed"] += 1
            return None

    def seal(self, data: bytes, channel: bytes) -> bytes:
        return data if self.keyring is None else self.keyring.encrypt(data, channel)

    def send(self, dest: Addr, msgs: list[bytes]) -> None:
        data = self.seal(codec.build_packet(self.name, msgs), UDP)
        self.stats["packets_out"] += 1
        self.stats["bytes_out"] += len(data)
        self._datagrams.append(Datagram(dest, data))

    def send_piggybacked(self, dest: Addr, msgs: list[bytes]) -> None:
        if self.broadcasts:
            room = self.budget - sum(len(m) for m in msgs)
            msgs = msgs + self.broadcasts.get(room, self._retransmit_limit())
        self.send(dest, msgs)

    def stream(self, dest: Addr, msgs: list[bytes], expect_reply: bool, tag: str) -> None:
        data = self.seal(codec.build_packet(self.name, msgs), TCP)
        self.stats["streams_out"] += 1
        self._streams.append(StreamRequest(dest, data, expect_reply, tag))

    # ---- dissemination
    def queue(self, key: BroadcastKey, msg: codec.Message) -> None:
        """Spread msg to everybody: piggybacked and in gossip rounds, replacing older news of key."""
        data = codec.pack(msg)
        if len(data) > self.budget:
            # Too big for one datagram: push it over TCP to a few peers; each forwards it once more.
            peers = self.peers
            names = peers.live_names() if peers is not None else []
            for name in self.rng.sample(names, min(self.cfg.gossip_nodes, len(names))):
                self.stream(peers.addr(name), [data], expect_reply=False, tag="gossip")  # type: ignore[union-attr]
            return
        self.broadcasts.queue(key, data)
        self._eager_pending = True
        if self.started and not self._gossip_armed:
            self.arm_gossip(self.now + self.cfg.gossip_interval)

    def _retransmit_limit(self) -> int:
        return self.cfg.retransmit_limit(self.peers.num_live() if self.peers is not None else 1)

    def arm_gossip(self, when: float) -> None:
        self._gossip_armed = True
        self.at(when, self.gossip_tick)

    def gossip_tick(self) -> None:
        """A gossip round every interval while there is news; with none, no tick (an idle host sleeps)
        until queue() has some again."""
        if not self.broadcasts:
            self._gossip_armed = False
            return
        self.arm_gossip(self.now + self.cfg.gossip_interval)
        self.gossip_round()

    def gossip_round(self) -> None:
        if not self.broadcasts or self.peers is None:
            return
        peers = self.peers
        targets = peers.gossip_names()
        limit = self._retransmit_limit()
        for name in self.rng.sample(targets, min(self.cfg.gossip_nodes, len(targets))):
            msgs = self.broadcasts.get(self.budget, limit)
            if not msgs:
                break
            self.send(peers.addr(name), msgs)

    def _eager_tick(self) -> None:
        self._eager_scheduled = False
        self._eager_pending = True

    def after_input(self) -> None:
        """Eager push: new broadcasts go out now rather than at the next gossip tick."""
        if not self._eager_pending or not self.started or not self.cfg.eager_push:
            return
        if self.now >= self._last_eager + self.cfg.eager_push_min_interval:
            self._eager_pending = False
            self._last_eager = self.now
            self.gossip_round()
        elif not self._eager_scheduled:
            self._eager_scheduled = True
            self.at(self._last_eager + self.cfg.eager_push_min_interval, self._eager_tick)
