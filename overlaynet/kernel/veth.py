"""Endpoints: a veth pair with one end on the sandbox's bridge and the other in the container.

The pair is created by one RTM_NEWLINK from the calling (host) netns that puts each end straight
into its namespace, so a crash never leaves a half-placed pair. Adoption recognises our pair by
name and by the two ends pointing at each other (IFLA_LINK).
"""

from __future__ import annotations

import errno
import ipaddress
import os
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from .errors import KernelError, describe
from .links import Link, bridge_index, converge_link, delete_link, find_link, get_link, link_kind
from .names import HOST_VETH_PREFIX, container_veth_name, host_veth_name
from .netns import resolve_netns, sandbox_exists
from .rtnl import rtnl


@dataclass(frozen=True)
class VethSpec:
    """What an endpoint's veth pair must look like."""

    endpoint_id: str
    target_netns: str | None
    """Container netns (name or path). None: leave the container end in the calling netns under
    container_veth_name(endpoint_id) for Docker to move and configure itself."""
    ifname: str
    """Name of the container end inside target_netns (e.g. eth0); unused when target_netns is None."""
    mac: str
    address_cidr: str | None
    """e.g. 198.19.1.2/24; not applied when target_netns is None (Docker does it)."""
    mtu: int
    gateway: str | None = None


@dataclass(frozen=True)
class VethInfo:
    """Where an endpoint's veth pair ended up."""

    host_ifname: str
    """Sandbox end, on the bridge."""
    container_ifname: str
    container_netns: str | None
    """Resolved path, or None for the calling netns (Docker mode)."""
    created: bool
    """False when an existing pair was adopted."""


def _peers(a: Link, b: Link) -> bool:
    """True if two veth ends point at each other (IFLA_LINK holds the peer's ifindex)."""
    return (
        link_kind(a) == "veth"
        and link_kind(b) == "veth"
        and a.get("link") == b["index"]
        and b.get("link") == a["index"]
    )


def _open_fd(path: str) -> int:
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


def _create_pair(
    sandbox: str, host_ifname: str, peer_ifname: str, target: str | None, spec: VethSpec, bridge: int
) -> None:
    peer: dict[str, object] = {"ifname": peer_ifname, "address": spec.mac.lower(), "mtu": spec.mtu}
    fds: list[int] = []
    try:
        fds.append(_open_fd(sandbox))
        if target is not None:
            fds.append(_open_fd(target))
            peer["net_ns_fd"] = fds[1]
        with rtnl() as here:
            # The sandbox end on the bridge and up in the same request (the kernel resolves `master`
            # in the sandbox): two requests fewer per attach than setting them afterwards.
            here.link("add", ifname=host_ifname, kind="veth", mtu=spec.mtu, net_ns_fd=fds[0], master=bridge,
                      state="up", peer=peer)
    finally:
        for fd in fds:
            os.close(fd)


def _converge_ip(ipr: IPRoute, index: int, address_cidr: str | None, gateway: str | None) -> None:
    """Exactly this IPv4 address on the interface, and a default route via the gateway."""
    if address_cidr is not None:
        iface = ipaddress.IPv4Interface(address_cidr)
        present = {(a.get("address"), a["prefixlen"]) for a in ipr.get_addr(family=2, index=index)}
        wanted = (str(iface.ip), iface.network.prefixlen)
        for address, prefixlen in present - {wanted}:
            ipr.addr("del", index=index, address=address, prefixlen=prefixlen)
        if wanted not in present:
            ipr.addr("add", index=index, address=wanted[0], prefixlen=wanted[1])
    if gateway is not None:
        routes = ipr.get_default_routes(family=2)
        if not any(r.get("gateway") == gateway and r.get("oif") == index for r in routes):
            ipr.route("replace", dst="0.0.0.0/0", gateway=gateway, oif=index)


def ensure_veth(sandbox: str, spec: VethSpec) -> VethInfo:
    """Make the endpoint's veth pair exist and match spec; adopt a matching pair in place.

    A sandbox end whose peer is not the expected container end is replaced. An unrelated device
    already holding the container-side name is never deleted: that is an error to report.
    """
    host_ifname = host_veth_name(spec.endpoint_id)
    docker_mode = spec.target_netns is None
    target = None if docker_mode else resolve_netns(spec.target_netns or "")
    peer_ifname = container_veth_name(spec.endpoint_id) if docker_mode else spec.ifname
    where = f"sandbox {sandbox}"
    try:
        with rtnl(sandbox) as sb, rtnl(target) as ct:
            bridge = bridge_index(sb, sandbox)
            host_end = find_link(sb, host_ifname)
            peer_end = find_link(ct, peer_ifname)
            adopted = host_end is not None and peer_end is not None and _peers(host_end, peer_end)
            if docker_mode and host_end is not None and peer_end is None:
                # Docker moved the container end away (into the container): still ours.
                adopted = link_kind(host_end) == "veth" and host_end.get("link_netnsid") is not None
            if not adopted:
                if host_end is not None:
                    delete_link(sb, host_end["index"])
                    peer_end = find_link(ct, peer_ifname)  # gone with it if it was its peer
                if peer_end is not None:
                    if not docker_mode:
                        raise KernelError(
                            f"interface {peer_ifname} already exists in network namespace {target}: "
                            "choose another interface name or remove that interface"
                        )
                    delete_link(ct, peer_end["index"])  # our derived name: a leftover
                _create_pair(sandbox, host_ifname, peer_ifname, target, spec, bridge)
                host_end = get_link(sb, host_ifname)
                peer_end = get_link(ct, peer_ifname)
            where = f"network namespace {target or '(this one)'}"
            if peer_end is not None:
                # Docker mode: Docker brings it up and sets addresses once it is in the container.
                converge_link(ct, peer_end, mtu=spec.mtu, address=spec.mac, up=not docker_mode)
                if not docker_mode:
                    _converge_ip(ct, peer_end["index"], spec.address_cidr, spec.gateway)
            where = f"sandbox {sandbox}"
            converge_link(sb, host_end, mtu=spec.mtu, master=bridge)
    except NetlinkError as exc:
        raise KernelError(
            f"cannot set up endpoint {spec.endpoint_id} ({host_ifname} <-> {peer_ifname}) in {where}: "
            f"{describe(exc)}"
        ) from None
    return VethInfo(host_ifname, peer_ifname, target, created=not adopted)


def remove_veth(sandbox: str, endpoint_id: str) -> bool:
    """Delete the endpoint's veth pair (both ends go together); absent is fine. True if deleted.

    Also deletes the Docker-mode container end if it is back in the calling netns.
    """
    removed = False
    try:
        if sandbox_exists(sandbox):
            with rtnl(sandbox) as sb:
                link = find_link(sb, host_veth_name(endpoint_id))
                if link is not None:
                    delete_link(sb, link["index"])
                    removed = True
        with rtnl() as here:
            link = find_link(here, container_veth_name(endpoint_id))
            if link is not None and link_kind(link) == "veth":
                delete_link(here, link["index"])
                removed = True
    except NetlinkError as exc:
        if exc.code != errno.ENODEV:
            raise KernelError(f"cannot remove endpoint {endpoint_id}: {describe(exc)}") from None
    return removed


def list_endpoint_links(sandbox: str) -> set[str]:
    """Endpoint-id prefixes (see names.endpoint_prefix) that have a veth in the sandbox."""
    if not sandbox_exists(sandbox):
        return set()
    with rtnl(sandbox) as sb:
        names = (str(link.get("ifname")) for link in sb.get_links())
        return {n[len(HOST_VETH_PREFIX) :] for n in names if n.startswith(HOST_VETH_PREFIX)}
