"""The kernel-mode VXLAN device of a network: created from the host netns straight into the sandbox.

One RTM_NEWLINK with IFLA_NET_NS_FD creates the device inside the sandbox while its UDP socket
belongs to the requesting (host) netns — Docker's overlay layout without a window in which a
half-made device sits in the host netns.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from overlaynet.model import MAX_VNI

from .errors import KernelError, describe
from .links import Link, bridge_index, converge_link, delete_link, find_link, get_link, link_kind
from .names import VXLAN_PREFIX, vxlan_name
from .netns import sandbox_exists
from .rtnl import rtnl

VXLAN_PORT = 4789


@dataclass(frozen=True)
class VxlanSpec:
    """What a network's VXLAN device must look like."""

    vni: int
    local: str
    """This host's underlay IPv4 address (outer source)."""
    port: int = VXLAN_PORT
    mtu: int = 1450
    underlay_dev: str | None = None
    """Pin the device to this host-netns interface (None: routing decides)."""


def _wanted_attrs(spec: VxlanSpec, link_index: int | None) -> dict[str, object]:
    """The identity of the device; any difference means delete and recreate (not changeable live)."""
    attrs: dict[str, object] = {
        "vxlan_id": spec.vni,
        "vxlan_local": spec.local,
        "vxlan_port": spec.port,
        "vxlan_learning": 0,  # remote MACs come only from our FDB entries
        "vxlan_proxy": 1,  # answer ARP from neighbour entries: no ARP crosses the underlay
        "vxlan_l2miss": 0,
        "vxlan_l3miss": 0,
        "vxlan_udp_csum": 1,  # the kernel default for IPv4
    }
    if link_index is not None:
        attrs["vxlan_link"] = link_index
    return attrs


def _matches(link: Link, wanted: dict[str, object]) -> bool:
    get = link.get
    if link_kind(link) != "vxlan":
        return False
    if "vxlan_link" not in wanted and get(("linkinfo", "data", "vxlan_link")):
        return False
    return all(get(("linkinfo", "data", key)) == value for key, value in wanted.items())


def _socket_in_calling_netns(sandbox: IPRoute, link: Link) -> bool:
    """True if the device's UDP socket lives in the calling (host) netns: the sandbox's id for our
    netns equals the device's link-netnsid. A device made inside the sandbox has none."""
    if link.get("link_netnsid") is None:
        return False
    fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        reply = sandbox.get_netnsid(fd=fd)
    finally:
        os.close(fd)
    return reply is not None and reply.get("nsid") == link.get("link_netnsid")


def _remove_stale_in_host(host: IPRoute, spec: VxlanSpec) -> None:
    """Delete our leftover same-VNI device in the host netns; refuse to touch a foreign one."""
    for link in host.get_links():
        if link_kind(link) != "vxlan":
            continue
        if link.get(("linkinfo", "data", "vxlan_id")) != spec.vni:
            continue
        if link.get(("linkinfo", "data", "vxlan_port")) != spec.port:
            continue
        name = link.get("ifname")
        if not str(name).startswith(VXLAN_PREFIX):
            raise KernelError(
                f"VNI {spec.vni} (UDP port {spec.port}) is already used by device {name} in this "
                "namespace, which overlaynet did not create: delete it or choose another VNI"
            )
        delete_link(host, link["index"])


def ensure_vxlan(sandbox: str, spec: VxlanSpec) -> bool:
    """Make the network's VXLAN device exist in the sandbox, on the bridge, up.

    Adopts a matching device (MTU fixed in place). Replaces a mismatching one and any leftover
    same-VNI device of ours in the host netns. Returns True if the device was (re)created, which
    means its FDB and neighbour entries are empty and must be programmed again.
    """
    if not 1 <= spec.vni <= MAX_VNI:
        raise KernelError(f"VNI {spec.vni} out of range: use 1..{MAX_VNI}")
    name = vxlan_name(spec.vni)
    try:
        with rtnl() as host, rtnl(sandbox) as sb:
            link_index = None
            if spec.underlay_dev is not None:
                underlay = find_link(host, spec.underlay_dev)
                if underlay is None:
                    raise KernelError(f"underlay device {spec.underlay_dev} not found in this namespace")
                link_index = int(underlay["index"])
            wanted = _wanted_attrs(spec, link_index)
            bridge = bridge_index(sb, sandbox)
            link = find_link(sb, name)
            if link is not None and _matches(link, wanted) and _socket_in_calling_netns(sb, link):
                converge_link(sb, link, mtu=spec.mtu, master=bridge)
                return False
            if link is not None:
                delete_link(sb, link["index"])
            _remove_stale_in_host(host, spec)
            fd = os.open(sandbox, os.O_RDONLY | os.O_CLOEXEC)
            try:
                host.link("add", ifname=name, kind="vxlan", mtu=spec.mtu, net_ns_fd=fd, **wanted)
            except NetlinkError as exc:
                if exc.code == errno.EEXIST:
                    raise KernelError(
                        f"cannot create VXLAN device {name}: VNI {spec.vni} (UDP port {spec.port}) is "
                        "already in use by a device of this host namespace that lives in another "
                        "namespace (another overlayd state dir, or Docker's overlay driver?): remove "
                        "it or choose another VNI"
                    ) from None
                raise
            finally:
                os.close(fd)
            link = get_link(sb, name)
            try:
                converge_link(sb, link, mtu=spec.mtu, master=bridge)
            except NetlinkError as exc:
                if exc.code == errno.EADDRINUSE:
                    delete_link(sb, link["index"])
                    raise KernelError(
                        f"cannot bring up VXLAN device {name}: UDP port {spec.port} is taken in this "
                        "namespace (the userspace dataplane, or another VXLAN tool?): free it or use "
                        "another port"
                    ) from None
                raise
            return True
    except NetlinkError as exc:
        raise KernelError(
            f"cannot set up VXLAN device {name} in sandbox {sandbox}: {describe(exc)}"
        ) from None


def remove_vxlan(sandbox: str, vni: int) -> None:
    """Delete the network's VXLAN device; a missing device or sandbox is fine."""
    name = vxlan_name(vni)
    if not sandbox_exists(sandbox):
        return
    try:
        with rtnl(sandbox) as sb:
            link = find_link(sb, name)
            if link is not None:
                delete_link(sb, link["index"])
    except NetlinkError as exc:
        raise KernelError(
            f"cannot remove VXLAN device {name} in sandbox {sandbox}: {describe(exc)}"
        ) from None


VXLAN_COUNTERS = ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_dropped", "tx_dropped",
                  "rx_errors", "tx_errors")


def vxlan_counters(sandbox: str, vni: int) -> dict[str, int] | None:
    """The network's VXLAN device counters (IFLA_STATS64): tx is frames leaving the bridge for the
    underlay, rx frames arriving from it, as the fast path counts them. None without a device."""
    if not sandbox_exists(sandbox):
        return None
    try:
        with rtnl(sandbox) as sb:
            link = find_link(sb, vxlan_name(vni))
            stats = link.get_attr("IFLA_STATS64") if link is not None else None
    except NetlinkError as exc:
        raise KernelError(f"cannot read the counters of {vxlan_name(vni)} in {sandbox}: {describe(exc)}") from None
    if not stats:
        return None
    return {key: int(stats.get(key, 0)) for key in VXLAN_COUNTERS}
