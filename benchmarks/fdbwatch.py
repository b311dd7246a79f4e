"""Watch the kernel FDBs of many hosts without asking their daemons: one rtnetlink socket per host,
opened inside the host's sandbox namespace and subscribed to neighbour events (RTMGRP_NEIGH), read by
one thread. A bridge FDB entry (AF_BRIDGE RTM_NEWNEIGH) that carries a MAC is the moment the host
has programmed forwarding to it.

Why not poll `GET /v1/networks/NET/fdb`: that answer is a netlink dump parsed in the daemon, and
polling 31 hosts every 20 ms is ~1500 dumps per second on the machine under test; at N=32 that load
was most of what the control-plane figures measured (docs/performance.md). Serf is observed through
files its handler appends to, which costs the agents nothing; this is the equivalent for overlayd.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time

from overlaynet.kernel.netns import call_in_netns

RTMGRP_NEIGH = 0x4
RTM_NEWNEIGH = 28
AF_BRIDGE = 7
NLMSG_HDR = struct.Struct("=IHHII")
NDMSG_LEN = 12
RTA_HDR = struct.Struct("=HH")
NDA_DST, NDA_LLADDR = 1, 2
NTF_SELF = 0x02


def _neigh_socket() -> socket.socket:
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    s.bind((0, RTMGRP_NEIGH))
    return s


def new_bridge_macs(data: bytes) -> list[bytes]:
    """The MACs (NDA_LLADDR) of the VXLAN FDB entries (AF_BRIDGE RTM_NEWNEIGH on the device itself,
    NTF_SELF, with a remote NDA_DST) in one netlink datagram. The bridge learning a MAC from a
    flooded frame is an entry too, but not programming: it has no NDA_DST."""
    found = []
    off = 0
    while off + NLMSG_HDR.size <= len(data):
        length, kind, _flags, _seq, _pid = NLMSG_HDR.unpack_from(data, off)
        if length < NLMSG_HDR.size:
            break
        end = off + length
        ndm = off + NLMSG_HDR.size
        if kind == RTM_NEWNEIGH and data[ndm] == AF_BRIDGE and data[ndm + 10] & NTF_SELF:
            attr, mac, remote = ndm + NDMSG_LEN, None, False
            while attr + RTA_HDR.size <= end:
                alen, atype = RTA_HDR.unpack_from(data, attr)
                if alen < RTA_HDR.size:
                    break
                if atype == NDA_LLADDR:
                    mac = data[attr + RTA_HDR.size:attr + alen]
                remote |= atype == NDA_DST
                attr += (alen + 3) & ~3
            if mac is not None and remote:
                found.append(mac)
        off += (length + 3) & ~3
    return found


class FdbWatch:
    def __init__(self, sandboxes: dict[str, str]) -> None:
        """sandboxes: host label -> path of the network namespace holding its bridge and VXLAN device."""
        self.socks = {call_in_netns(path, _neigh_socket): label for label, path in sandboxes.items()}
        self.seen: dict[tuple[str, bytes], float] = {}  # (host, MAC) -> when first programmed
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="fdbwatch", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        socks = list(self.socks)
        while not self.stopping:
            ready, _, _ = select.select(socks, [], [], 0.2)
            now = time.time()
            for s in ready:
                try:
                    data = s.recv(1 << 16)
                except OSError:
                    continue  # ENOBUFS: events were lost; a host whose entry was among them shows as 'never'
                for mac in new_bridge_macs(data):
                    self.seen.setdefault((self.socks[s], mac), now)

    def wait(self, mac: str, labels: list[str], t0: float, timeout: float) -> dict[str, float | None]:
        """Seconds after t0 (time.time()) at which each host programmed `mac`; None: not within timeout."""
        key = bytes.fromhex(mac.replace(":", ""))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not all((label, key) in self.seen for label in labels):
            time.sleep(0.01)
        return {label: (max(0.0, self.seen[(label, key)] - t0) if (label, key) in self.seen else None)
                for label in labels}

    def close(self) -> None:
        self.stopping = True
        self.thread.join(2)
        for s in self.socks:
            s.close()
