"""`overlayctl doctor`: check the underlay to every peer, from this host, with real packets.

For each other cluster member:
- gossip: a TCP connection to its gossip port (push-pull and joins need it; UDP probes succeeding
  says nothing about TCP);
- VXLAN: a datagram to its VXLAN port on a connected UDP socket; an ICMP port-unreachable comes back
  as ECONNREFUSED (closed), silence means open or filtered — UDP cannot tell more without an answer.
  The datagram is a bare VXLAN header for VNI 0, which no network uses: the peer counts it as an
  unknown-VNI drop and nothing else happens;
- path MTU: ICMP echo requests with the don't-fragment bit set (IP_PMTUDISC_PROBE: the kernel's
  cached path MTU is ignored), sizes searched by bisection up to this host's underlay MTU. A hop
  with a smaller MTU drops or refuses the larger ones, so the largest answered size is the path MTU
  for any packet between these two addresses, VXLAN's included. From it: the largest VXLAN payload
  (the inner Ethernet frame) that crosses unfragmented, and the inner MTU a network may have.

Runs inside overlayd (the host's network namespace, root for the raw ICMP socket); the answer is
plain data, `overlayctl doctor` renders it.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import struct
import time
from typing import Any

from overlaynet.model import VXLAN_OVERHEAD

IP_HEADER, ICMP_HEADER, UDP_HEADER, VXLAN_HEADER = 20, 8, 8, 8
IP_MTU_DISCOVER = 10  # <linux/in.h> (not in Python's socket module on every build)
IP_PMTUDISC_PROBE = 3  # set DF, ignore the cached path MTU
MIN_PROBE = 576  # every IPv4 path carries this
PROBE_TIMEOUT = 1.0  # a loaded host answers late; a lost answer would understate the path MTU
CONNECT_TIMEOUT = 2.0


async def check_tcp(addr: str, port: int) -> str:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(addr, port), CONNECT_TIMEOUT)
    except TimeoutError:
        return f"no answer in {CONNECT_TIMEOUT:.0f}s (filtered, or the host is down)"
    except OSError as e:
        return e.strerror or str(e)
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return "ok"


async def check_udp(addr: str, port: int) -> str:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    try:
        sock.connect((addr, port))
        sock.send(struct.pack("!II", 0x08000000, 0))  # I flag, VNI 0
        try:
            await asyncio.wait_for(loop.sock_recv(sock, 64), PROBE_TIMEOUT)
        except TimeoutError:
            return "ok (no ICMP error)"
        except ConnectionRefusedError:
            return "closed (ICMP port unreachable)"
        except OSError as e:
            return e.strerror or str(e)
        return "ok"
    finally:
        sock.close()


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _echo(ident: int, seq: int, ip_size: int) -> bytes:
    payload = bytes(ip_size - IP_HEADER - ICMP_HEADER)
    header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    return struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident, seq) + payload


class _Pinger:
    """ICMP echo with DF set on a raw socket of its own; replies are matched by identifier and
    sequence. Blocking (uvloop has no sock_recvfrom): run in a thread."""

    def __init__(self, addr: str) -> None:
        self.addr = addr
        self.ident = (os.getpid() ^ id(self)) & 0xFFFF
        self.seq = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.IPPROTO_ICMP)
        self.sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_PROBE)

    def close(self) -> None:
        self.sock.close()

    def answers(self, ip_size: int, tries: int = 2) -> bool:
        """Whether an echo of `ip_size` bytes (whole IP packet) comes back unfragmented."""
        for _ in range(tries):
            self.seq = (self.seq + 1) & 0xFFFF
            try:
                self.sock.sendto(_echo(self.ident, self.seq, ip_size), (self.addr, 0))
            except OSError as e:
                if e.errno == errno.EMSGSIZE:
                    return False  # larger than this host's own link
                raise
            deadline = time.monotonic() + PROBE_TIMEOUT
            while (left := deadline - time.monotonic()) > 0:
                self.sock.settimeout(left)
                try:
                    packet, (src, _) = self.sock.recvfrom(65535)
                except TimeoutError:
                    break
                ihl = (packet[0] & 0x0F) * 4
                kind, _, _, ident, seq = struct.unpack("!BBHHH", packet[ihl:ihl + 8])
                if src == self.addr and kind == 0 and ident == self.ident and seq == self.seq:
                    return True
        return False


def path_mtu(addr: str, ceiling: int) -> int | None:
    """The largest IP packet that reaches `addr` and back unfragmented (None: no echo answered at all)."""
    pinger = _Pinger(addr)
    try:
        if not pinger.answers(MIN_PROBE):
            return None
        if pinger.answers(ceiling):
            return ceiling
        low, high = MIN_PROBE, ceiling  # low answers, high does not
        while high - low > 1:
            middle = (low + high) // 2
            if pinger.answers(middle):
                low = middle
            else:
                high = middle
        return low
    finally:
        pinger.close()


async def check_peer(name: str, addr: str, gossip_port: int, vtep: str, vxlan_port: int,
                     ceiling: int, dataplane: str | None = None) -> dict[str, Any]:
    gossip, vxlan, mtu = await asyncio.gather(check_tcp(addr, gossip_port), check_udp(vtep, vxlan_port),
                                              asyncio.to_thread(path_mtu, vtep, ceiling))
    payload = mtu - IP_HEADER - UDP_HEADER - VXLAN_HEADER if mtu else None
    return {
        "name": name, "address": addr, "vtep": vtep, "dataplane": dataplane,
        "gossip": {"port": gossip_port, "result": gossip},
        "vxlan": {"port": vxlan_port, "result": vxlan},
        "path_mtu": mtu,
        "max_vxlan_payload": payload,  # the inner Ethernet frame, header included
        "max_inner_mtu": mtu - VXLAN_OVERHEAD if mtu else None,
    }


def warnings_for(peers: list[dict[str, Any]], networks: list[tuple[str, int]]) -> list[str]:
    """What an operator should act on: unreachable ports, networks whose MTU a path cannot carry."""
    out = []
    for peer in peers:
        for what in ("gossip", "vxlan"):
            result = peer[what]["result"]
            if what == "vxlan" and peer["dataplane"] == "kernel" and result.startswith("closed"):
                continue  # a kernel-dataplane host opens its VXLAN port with its first local endpoint
            if not result.startswith("ok"):
                out.append(f"{peer['name']}: {what} port {peer[what]['port']} not reachable: {result}")
        if peer["path_mtu"] is None:
            out.append(f"{peer['name']}: no answer to ICMP echo at {peer['vtep']}: path MTU unknown")
            continue
        for name, mtu in networks:
            if mtu > peer["max_inner_mtu"]:
                out.append(f"network {name} has MTU {mtu}, but the path to {peer['name']} carries inner "
                           f"packets of at most {peer['max_inner_mtu']} unfragmented: lower the network's "
                           "MTU or raise the underlay's")
    return out
