"""asyncio adapter (uvloop-compatible): UDP + TCP on one port, feeding GossipCore bytes and time.

All protocol logic lives in core.py. This file only: binds the sockets, hands every datagram/frame
to the core with loop.time(), sends what the core returns, fires the core's timers with call_at,
runs TCP exchanges (one frame each way, framed by stream.py so that nothing is buffered before it
is authenticated; unauthenticated connections are limited per source and in total), and calls
subscribers with events.

GossipNode is the facade the daemon drives.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from .config import GossipConfig
from .core import GossipCore
from .keyring import Keyring
from .state import Addr, Event, MemberInfo, StreamRequest
from .stream import CHUNK, Decoder, StreamAuthError, StreamError, encode
from .tables import Record

log = logging.getLogger(__name__)

DEFAULT_PORT = 7946
# The StreamReader's buffer: two chunks. Reads are never larger than one sealed chunk, so the
# reader stops taking bytes from the socket beyond this (the kernel's window then throttles).
_READ_BUFFER = 2 * CHUNK

Subscriber = Callable[[Event], None]


class _UDP(asyncio.DatagramProtocol):
    def __init__(self, node: GossipNode) -> None:
        self.node = node

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.node._on_datagram(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        self.node._counters["udp_errors"] += 1  # e.g. ICMP port unreachable from a dead peer


async def _read_stream(reader: asyncio.StreamReader, decoder: Decoder) -> bytes:
    while True:
        body = decoder.feed(await reader.readexactly(decoder.need()))
        if body is not None:
            return body


class GossipNode:
    def __init__(self, name: str, advertise: str, bind: str, port: int = DEFAULT_PORT,
                 keyring: Keyring | None = None, meta: dict[str, Any] | None = None,
                 config: GossipConfig | None = None) -> None:
        """advertise: address others use to reach us (defaults to bind). port 0 picks a free port
        (the same number for UDP and TCP). keyring None means plaintext — only when configured so."""
        self.name = name
        self.advertise = advertise or bind
        self.bind = bind
        self.port = port
        self.keyring = keyring
        self.meta = dict(meta or {})
        self.config = config or GossipConfig()
        self._core: GossipCore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._server: asyncio.base_events.Server | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._subscribers: list[Subscriber] = []
        self._counters = {"udp_errors": 0, "stream_failures": 0, "subscriber_errors": 0,
                          "stream_auth_failed": 0, "streams_refused": 0}
        self._unauthenticated: dict[str, int] = {}  # source address -> connections not yet authenticated
        self._inbound = 0

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        for attempt in range(20):
            udp, _ = await loop.create_datagram_endpoint(lambda: _UDP(self), local_addr=(self.bind, self.port))
            port = udp.get_extra_info("sockname")[1]
            try:
                self._server = await asyncio.start_server(self._serve, self.bind, port,
                                                          reuse_address=True, limit=_READ_BUFFER)
            except OSError:
                udp.close()
                if self.port != 0 or attempt == 19:
                    raise
                continue  # the free UDP port was taken on TCP; try another
            self._udp = udp
            self.port = port
            break
        self._core = GossipCore(self.name, self.advertise, self.port, config=self.config,
                                rng=random.Random(), keyring=self.keyring, meta=self.meta, now=loop.time())
        self._core.start(loop.time())
        self._flush()

    async def join(self, seeds: list[tuple[str, int]]) -> int:
        """Full-state sync with every seed; returns how many answered. 0 means we are alone."""
        core = self._need_core()
        core.join(list(seeds), self._now())
        joins = []
        for s in core.pop_streams():
            if s.tag == "join":
                joins.append(s)
            else:
                self._spawn(self._exchange(s))
        results = await asyncio.gather(*(self._exchange(s) for s in joins))
        self._flush()
        return sum(results)

    async def leave(self, timeout: float = 2.0) -> None:
        """Tell the cluster we are leaving on purpose (peers mark us "left", not "dead")."""
        core = self._need_core()
        core.leave(self._now())
        self._flush()
        deadline = self._now() + timeout
        while not core.leave_sent() and self._now() < deadline:
            await asyncio.sleep(self.config.gossip_interval / 2)

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    # ------------------------------------------------------------------ daemon-facing API
    def members(self) -> list[MemberInfo]:
        core = self._need_core()
        skew = time.time() - self._now()  # core time is loop.time(); report wall-clock seconds
        return [MemberInfo(m.name, m.addr, m.port, m.state, m.incarnation, m.last_change + skew, m.meta)
                for m in core.members()]

    def table(self, name: str) -> dict[str, dict[str, Any]]:
        return self._need_core().table(name)

    def records(self, name: str) -> list[Record]:
        """Every stored record of a table, tombstones and entries of dead owners included (read-only)."""
        return list(self._need_core().tables().records({name}))

    def record(self, name: str, key: str) -> Record | None:
        """The stored record (value None = tombstone), visible or not (read-only)."""
        return self._need_core().tables().get(name, key)

    def set(self, table: str, key: str, value: dict[str, Any]) -> None:
        self._need_core().set(table, key, value, self._now())
        self._flush()

    def delete(self, table: str, key: str) -> None:
        self._need_core().delete(table, key, self._now())
        self._flush()

    def update_meta(self, meta: dict[str, Any]) -> None:
        self._need_core().update_meta(meta, self._now())
        self._flush()

    def subscribe(self, callback: Subscriber) -> None:
        """callback(event) runs in the loop for every TableChange / MemberChange / KeyringChange."""
        self._subscribers.append(callback)

    def key_op(self, op: str, key: bytes, broadcast: bool = True) -> bool:
        """install / use / remove a key here and, by default, on every member (encrypted broadcast).
        Raises KeyringError if impossible. The key file is the daemon's to save: every change, local
        or gossiped, is a KeyringChange event."""
        changed = self._need_core().key_op(op, key, self._now(), broadcast)
        self._flush()
        return changed

    def stats(self) -> dict[str, Any]:
        out = self._need_core().stats_snapshot() if self._core is not None else {}
        out.update(self._counters)
        # One number for "someone without a current key tried": datagrams (core) and streams (here).
        out["auth_failed"] = out.get("auth_failed", 0) + self._counters["stream_auth_failed"]
        out["port"] = self.port
        return out

    # ------------------------------------------------------------------ plumbing
    def _need_core(self) -> GossipCore:
        if self._core is None:
            raise RuntimeError("gossip is not started; call start() first")
        return self._core

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _on_datagram(self, data: bytes, src: Addr) -> None:
        if self._core is None:
            return
        self._core.handle_datagram(data, src, self._now())
        self._flush()

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        if self._core is None:
            return
        self._core.tick(self._now())
        self._flush()

    def _flush(self) -> None:
        core = self._core
        if core is None or self._loop is None:
            return
        udp = self._udp
        for d in core.pop_datagrams():
            if udp is not None:
                udp.sendto(d.data, d.dest)
        for s in core.pop_streams():
            self._spawn(self._exchange(s))
        for ev in core.pop_events():
            for cb in list(self._subscribers):
                try:
                    cb(ev)
                except Exception:
                    self._counters["subscriber_errors"] += 1
                    log.exception("gossip subscriber failed")
        due = core.next_deadline()
        if due is not None and due != self._timer_at and udp is not None:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = due
            self._timer = self._loop.call_at(due, self._on_timer)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _exchange(self, req: StreamRequest) -> bool:
        """One TCP exchange: send a frame, optionally read the reply and feed it to the core."""
        timeout = self.config.stream_timeout
        writer = None
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(req.dest[0], req.dest[1], limit=_READ_BUFFER)
                writer.write(encode(self.keyring, req.data))
                await writer.drain()
                if req.expect_reply:
                    data = await _read_stream(reader, Decoder(self.keyring, self.config.max_stream_frame))
                    core = self._core
                    if core is None:
                        return False
                    synced = core.handle_reply(data, req.dest, self._now())
                    self._flush()
                    if not synced:
                        return False  # an answer we cannot read is no successful join
            return True
        except StreamAuthError:
            self._counters["stream_auth_failed"] += 1
            return False
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
            self._counters["stream_failures"] += 1
            return False
        finally:
            if writer is not None:
                writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        source = peer[0] if peer else "?"
        cfg = self.config
        if (self._inbound >= cfg.max_inbound_streams
                or sum(self._unauthenticated.values()) >= cfg.max_unauthenticated
                or self._unauthenticated.get(source, 0) >= cfg.max_unauthenticated_per_source):
            self._counters["streams_refused"] += 1
            writer.close()
            return
        self._inbound += 1
        self._unauthenticated[source] = self._unauthenticated.get(source, 0) + 1
        decoder = Decoder(self.keyring, cfg.max_stream_frame)
        try:
            async with asyncio.timeout(cfg.stream_timeout) as whole:
                async with asyncio.timeout(cfg.stream_header_timeout):
                    while not decoder.authenticated:
                        decoder.feed(await reader.readexactly(decoder.need()))
                self._leave_unauthenticated(source)
                whole.reschedule(self._now() + cfg.stream_timeout)
                data = await _read_stream(reader, decoder)
                core = self._core
                if core is None:
                    return
                reply = core.handle_stream(data, (peer[0], peer[1]), self._now())
                self._flush()
                if reply is not None:
                    writer.write(encode(self.keyring, reply))
                    await writer.drain()
        except StreamAuthError:
            self._counters["stream_auth_failed"] += 1
        except (OSError, TimeoutError, asyncio.IncompleteReadError, StreamError, ValueError):
            self._counters["stream_failures"] += 1
        finally:
            if not decoder.authenticated:
                self._leave_unauthenticated(source)
            self._inbound -= 1
            writer.close()

    def _leave_unauthenticated(self, source: str) -> None:
        """The connection from source left the unauthenticated state (authenticated or closed)."""
        left = self._unauthenticated.get(source, 0) - 1
        if left > 0:
            self._unauthenticated[source] = left
        else:
            self._unauthenticated.pop(source, None)
