"""Read an endpoint back from the kernel, for when its state file is lost or unreadable.

What the kernel still knows about an endpoint: the sandbox end of its veth (named after the
endpoint id), and through IFLA_LINK the container end's ifindex. The container end is found by
looking at every network namespace in reach (mounted ones: /run/netns, Docker's and CNI's netns
dirs, any bind mount; then those of running processes) for the one the sandbox knows by the veth's IFLA_LINK_NETNSID; the interface there with
index IFLA_LINK is the container end: its name, MAC, MTU and IPv4 address are the
endpoint's. A namespace held only by a mount in another mount namespace is not found: the caller
reports the endpoint as unknown.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from .errors import KernelError
from .links import AF_INET, Link, find_link, link_kind
from .names import host_veth_name
from .netns import is_netns, sandbox_exists
from .rtnl import rtnl


@dataclass(frozen=True)
class ProbedEndpoint:
    host_ifname: str
    netns: str | None  # a path to the container's namespace, None if not found
    ifname: str | None = None
    mac: str | None = None
    mtu: int | None = None
    ip: str | None = None
    prefixlen: int | None = None


def netns_paths(skip_under: str = "") -> list[str]:
    """A path to every network namespace in reach, one per namespace: nsfs mounts first (stable
    names such as /run/netns/NAME), then /proc/PID/ns/net of processes (a namespace held only by
    its container's processes)."""
    paths: list[str] = []
    own = os.stat("/proc/self/ns/net")
    seen: set[tuple[int, int]] = {(own.st_dev, own.st_ino)}  # ours: never a container's

    def add(path: str) -> None:
        try:
            st = os.stat(path)
        except OSError:
            return
        if (st.st_dev, st.st_ino) not in seen and is_netns(path):
            seen.add((st.st_dev, st.st_ino))
            paths.append(path)

    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[fields.index("-") + 1] == "nsfs":
                path = fields[4].replace("\\040", " ")
                if not (skip_under and path.startswith(skip_under)):
                    add(path)
    for pid in sorted((p for p in os.listdir("/proc") if p.isdigit()), key=int):
        add(f"/proc/{pid}/ns/net")
    return paths


def _nsid_of(sandbox_rtnl: IPRoute, path: str) -> int | None:
    """The sandbox's id for the namespace at path (what IFLA_LINK_NETNSID names), if it has one."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        nsid = sandbox_rtnl.get_netnsid(fd=fd).get("nsid")
    finally:
        os.close(fd)
    return nsid if isinstance(nsid, int) and 0 <= nsid < 0xFFFFFFFF else None


def _container_end(path: str, peer_index: int) -> tuple[Link, list[tuple[str, int]]] | None:
    with rtnl(path) as ipr:
        for link in ipr.get_links():
            if link["index"] == peer_index and link_kind(link) == "veth":
                addrs = [(a.get("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr(index=link["index"], family=AF_INET)]
                return link, addrs
    return None


def probe_endpoint(sandbox: str, endpoint_id: str, skip_under: str = "") -> ProbedEndpoint | None:
    """The endpoint's veth as the kernel has it, or None if the sandbox has no veth for it."""
    if not sandbox_exists(sandbox):
        return None
    host_ifname = host_veth_name(endpoint_id)
    try:
        with rtnl(sandbox) as sb:
            host_link = find_link(sb, host_ifname)
            if host_link is None:
                return None
            # The peer is identified by the pair (namespace id as the sandbox sees it, ifindex):
            # an ifindex alone repeats in every namespace.
            wanted_nsid, peer_index = host_link.get("link_netnsid"), host_link.get("link")
            candidates = []
            for path in netns_paths(skip_under):
                try:
                    if wanted_nsid is not None and _nsid_of(sb, path) == wanted_nsid:
                        candidates.append(path)
                except (NetlinkError, OSError):
                    continue  # a namespace that vanished meanwhile
        for path in candidates:
            try:
                found = _container_end(path, peer_index)
            except (KernelError, NetlinkError, OSError):
                continue
            if found is None:
                continue
            link, addrs = found
            ip, prefixlen = addrs[0] if addrs else (None, None)
            return ProbedEndpoint(host_ifname, path, link.get("ifname"), link.get("address"),
                                  link.get("mtu"), ip, prefixlen)
    except NetlinkError as exc:
        raise KernelError(f"cannot read endpoint {endpoint_id} from {sandbox}: {exc}") from None
    return ProbedEndpoint(host_ifname, None)
