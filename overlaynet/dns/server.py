"""overlayd's DNS: for each network with a local endpoint and a gateway, UDP and TCP port 53 on the
gateway address *inside the network's sandbox*, answering from the cluster's endpoint names.

The sockets are made in the sandbox (a thread that entered it, `kernel.call_in_netns`) and then
served by this process's event loop: a socket stays in the namespace it was born in. The gateway
address is on the sandbox bridge on every host (anycast), so a container always reaches its own
host's server. The answers themselves are `answer.py` (pure).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

from overlaynet import kernel
from overlaynet.dns.answer import Zone, answer
from overlaynet.ratelimit import TokenBuckets

log = logging.getLogger("overlaynet.dns")

DNS_PORT = 53
IP_FREEBIND = 15  # bind even if the address is not (yet) on the bridge; not exported by `socket`
TCP_IDLE_TIMEOUT = 10.0
# TCP clients served at once per server, and per source address: a resolver needs one or two. Over
# either, a connection is closed at accept (`tcp_refused`), so a container cannot make overlayd hold
# thousands of sockets (its file descriptors are shared with the API and gossip).
TCP_MAX_CLIENTS = 64
TCP_MAX_PER_SOURCE = 8
COUNTERS = ("queries", "answered", "nxdomain", "refused", "malformed", "errors", "tcp_connections",
            "tcp_refused", "rate_limited")
DEFAULT_RATE = 100  # queries per second per source address (burst: twice that); see docs/dns.md

ZoneFor = Callable[[str], Zone | None]
Blocking = Callable[..., Awaitable[Any]]


def _bound_sockets(address: str, port: int) -> tuple[socket.socket, socket.socket]:
    """UDP + listening TCP sockets on address:port, in the calling thread's netns."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        for s in (udp, tcp):
            s.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((address, port))
            s.setblocking(False)
        tcp.listen(TCP_MAX_CLIENTS)
    except OSError:
        udp.close()
        tcp.close()
        raise
    return udp, tcp


@dataclass(frozen=True)
class Binding:
    network: str
    address: str  # the gateway IP
    sandbox: str
    identity: tuple[int, int]  # of the sandbox netns: a recreated sandbox needs new sockets


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # uvloop's is not a subclass

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = self.server.reply(data, addr[0], tcp=False)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        self.server.count("errors")


@dataclass
class Server:
    binding: Binding
    zone_for: ZoneFor
    counters: dict[str, int]
    limiter: TokenBuckets | None  # per source address; None: unlimited
    udp: asyncio.DatagramTransport | None = None
    tcp: asyncio.Server | None = None
    clients: set[asyncio.Task[Any]] = field(default_factory=set)
    client_sources: dict[str, int] = field(default_factory=dict)  # source address -> open connections

    def count(self, what: str) -> None:
        self.counters[what] = self.counters.get(what, 0) + 1

    def reply(self, data: bytes, source: str, tcp: bool) -> bytes | None:
        if self.limiter is not None and not self.limiter.allow(source, time.monotonic()):
            self.count("rate_limited")  # dropped unanswered: a flood buys nothing, not even an error
            return None
        try:
            zone = self.zone_for(self.binding.network)
            if zone is None:
                self.count("errors")
                return None
            return answer(zone, data, self.counters, tcp=tcp)
        except Exception:  # never let one query take the server down
            self.count("errors")
            log.exception("event=dns-answer-failed network=%s", self.binding.network)
            return None

    async def start(self, udp_sock: socket.socket, tcp_sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), sock=udp_sock)
        self.udp = transport
        self.tcp = await asyncio.start_server(self._tcp_client, sock=tcp_sock)

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        source = peer[0] if peer else "?"
        if len(self.clients) >= TCP_MAX_CLIENTS or self.client_sources.get(source, 0) >= TCP_MAX_PER_SOURCE:
            self.count("tcp_refused")
            writer.close()
            return
        self.count("tcp_connections")
        task = asyncio.current_task()
        if task is not None:
            self.clients.add(task)
        self.client_sources[source] = self.client_sources.get(source, 0) + 1
        try:
            while True:
                head = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_TIMEOUT)
                (length,) = struct.unpack("!H", head)
                data = await asyncio.wait_for(reader.readexactly(length), TCP_IDLE_TIMEOUT)
                reply = self.reply(data, source, tcp=True)
                if reply is None:
                    return  # malformed: close the connection
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass
        finally:
            if task is not None:
                self.clients.discard(task)
            left = self.client_sources.pop(source) - 1
            if left:
                self.client_sources[source] = left
            writer.close()

    def close(self) -> None:
        if self.udp is not None:
            self.udp.close()
        if self.tcp is not None:
            self.tcp.close()
        for task in list(self.clients):
            task.cancel()


class DnsService:
    """The set of running servers, made equal to what the agent wants after each program pass."""

    def __init__(self, zone_for: ZoneFor, blocking: Blocking, port: int = DNS_PORT,
                 rate_limit: int = DEFAULT_RATE) -> None:
        self.zone_for = zone_for
        self.blocking = blocking  # runs a blocking function off the event loop (the kernel thread)
        self.port = port
        self.rate_limit = rate_limit  # queries/s per source address and server; 0: unlimited
        self.servers: dict[str, Server] = {}
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self.last_error: str | None = None
        self.errors: dict[str, str] = {}  # network -> why its server is not serving now (health)

    async def sync(self, wanted: dict[str, tuple[str, str]]) -> None:
        """wanted: network -> (gateway IP, sandbox path). Start, restart and stop servers to match."""
        for network in list(self.servers):
            if network not in wanted:
                self._stop(network, "not-wanted")
        for network in [n for n in self.errors if n not in wanted]:
            del self.errors[network]
        for network, (address, sandbox) in sorted(wanted.items()):
            try:
                identity = await self.blocking(kernel.netns_identity, sandbox)
            except kernel.KernelError:
                continue  # no sandbox (yet): the next pass starts it
            binding = Binding(network, address, sandbox, identity)
            current = self.servers.get(network)
            if current is not None:
                if current.binding == binding:
                    continue
                self._stop(network, "changed")
            try:
                udp, tcp = await self.blocking(kernel.call_in_netns, sandbox, _bound_sockets, address, self.port)
            except OSError as e:
                self.last_error = f"{network}: cannot listen on {address}:{self.port} in {sandbox}: {e}"
                self.errors[network] = f"cannot listen on {address}:{self.port}: {e}"
                log.error("event=dns-listen-failed network=%s address=%s error=%s", network, address, e)
                continue
            limiter = TokenBuckets(self.rate_limit, 2 * self.rate_limit) if self.rate_limit else None
            server = Server(binding, self.zone_for, self.counters, limiter)
            try:
                await server.start(udp, tcp)
            except OSError as e:
                server.close()
                udp.close()
                tcp.close()
                self.last_error = f"{network}: {e}"
                self.errors[network] = str(e)
                log.error("event=dns-start-failed network=%s error=%s", network, e)
                continue
            self.servers[network] = server
            self.errors.pop(network, None)
            log.info("event=dns-serving network=%s address=%s:%d", network, address, self.port)

    def _stop(self, network: str, reason: str) -> None:
        server = self.servers.pop(network)
        server.close()
        log.info("event=dns-stopped network=%s reason=%s", network, reason)

    def close(self) -> None:
        for network in list(self.servers):
            self._stop(network, "shutdown")

    def status(self) -> dict[str, Any]:
        return {
            "servers": [{"network": n, "address": s.binding.address, "port": self.port}
                        for n, s in sorted(self.servers.items())],
            **self.counters,
            "last_error": self.last_error,
        }
