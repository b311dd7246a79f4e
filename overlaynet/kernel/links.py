"""Generic link verbs shared by the bridge, VXLAN, port and veth code, plus the bridge and ports.

Everything converges in place: an attribute is written only when it differs, so calling an ensure
verb on healthy objects never disturbs traffic.
"""

from __future__ import annotations

import errno
import os
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from .errors import KernelError, describe
from .names import BRIDGE_NAME
from .netns import call_in_netns
from .rtnl import rtnl

IFF_UP = 0x1
AF_INET = 2

Link = Any
"""A pyroute2 ifinfmsg (pyroute2 ships no type hints)."""


def find_link(ipr: IPRoute, ifname: str) -> Link | None:
    """The link called ifname in ipr's netns, or None."""
    try:
        return ipr.link("get", ifname=ifname)[0]
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return None
        raise


def device_exists(netns: str | None, ifname: str) -> bool:
    """Whether a device called ifname exists in the netns at path (None: the calling thread's)."""
    try:
        with rtnl(netns) as ipr:
            return find_link(ipr, ifname) is not None
    except NetlinkError as exc:
        raise KernelError(f"cannot look up {ifname}: {describe(exc)}") from None


def get_link(ipr: IPRoute, ifname: str) -> Link:
    """The link called ifname, which we just created or moved: its absence is a kernel surprise."""
    link = find_link(ipr, ifname)
    if link is None:
        raise KernelError(f"device {ifname} vanished right after it was set up: is another tool deleting it?")
    return link


def link_kind(link: Link) -> str | None:
    return link.get(("linkinfo", "kind"))


def delete_link(ipr: IPRoute, index: int) -> None:
    """Delete a link; one that is gone already is fine."""
    try:
        ipr.link("del", index=index)
    except NetlinkError as exc:
        if exc.code != errno.ENODEV:
            raise


def converge_link(
    ipr: IPRoute,
    link: Link,
    *,
    mtu: int | None = None,
    master: int | None = None,
    address: str | None = None,
    up: bool = True,
) -> bool:
    """Bring one link to the wanted MTU/master/MAC/state, writing only what differs."""
    get = link.get
    index = link["index"]
    changes: dict[str, object] = {}
    if mtu is not None and get("mtu") != mtu:
        changes["mtu"] = mtu
    if address is not None and str(get("address")).lower() != address.lower():
        changes["address"] = address.lower()
    if master is not None and get("master") != master:
        changes["master"] = master
    if changes:
        ipr.link("set", index=index, **changes)
    if up and not (get("flags") or 0) & IFF_UP:
        ipr.link("set", index=index, state="up")
        changes["state"] = "up"
    return bool(changes)


def bridge_index(ipr: IPRoute, sandbox: str) -> int:
    """Index of the sandbox's bridge; a clear error if ensure_bridge was not called."""
    bridge = find_link(ipr, BRIDGE_NAME)
    if bridge is None:
        raise KernelError(f"bridge {BRIDGE_NAME} missing in sandbox {sandbox}: call ensure_bridge first")
    return int(bridge["index"])


def _converge_address(ipr: IPRoute, index: int, address_cidr: str | None) -> None:
    """Exactly this IPv4 address (or none) on the link."""
    present = {f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}" for a in ipr.get_addr(family=AF_INET, index=index)}
    wanted = {address_cidr} if address_cidr else set()
    for cidr in present - wanted:
        ip, _, plen = cidr.partition("/")
        ipr.addr("del", index=index, address=ip, prefixlen=int(plen))
    for cidr in wanted - present:
        ip, _, plen = cidr.partition("/")
        ipr.addr("add", index=index, address=ip, prefixlen=int(plen))


def _no_ipv6_on_bridge() -> None:
    # The bridge carries IPv4 only; without this it would get an IPv6 link-local address from its
    # MAC, which is the same on every host (anycast gateway): duplicate-address noise on the overlay.
    try:
        with open(f"/proc/sys/net/ipv6/conf/{BRIDGE_NAME}/disable_ipv6", "r+") as f:
            if f.read().strip() != "1":
                f.seek(0)
                f.write("1")
    except FileNotFoundError:  # a kernel without IPv6
        pass


def ensure_bridge(sandbox: str, mtu: int, mac: str | None = None, address: str | None = None) -> bool:
    """Make the sandbox's bridge exist, up, with this MTU. Returns True if it was created.

    `mac` pins the bridge's MAC (else the kernel picks one); `address` ("IP/prefixlen") is then its
    only IPv4 address (None: no address) — the network's anycast gateway, the same IP and MAC on
    every host. IPv6 is off on the bridge. A non-bridge device squatting on the name is replaced.
    """
    try:
        with rtnl(sandbox) as ipr:
            link = find_link(ipr, BRIDGE_NAME)
            if link is not None and link_kind(link) != "bridge":
                delete_link(ipr, link["index"])
                link = None
            created = link is None
            if created:
                # STP off (the default): ports forward at once, there is no loop to break here.
                ipr.link("add", ifname=BRIDGE_NAME, kind="bridge", mtu=mtu)
                link = get_link(ipr, BRIDGE_NAME)
            assert link is not None
            call_in_netns(sandbox, _no_ipv6_on_bridge)  # before it goes up: no link-local, no DAD
            converge_link(ipr, link, mtu=mtu, address=mac)
            _converge_address(ipr, int(link["index"]), address)
            return created
    except OSError as exc:
        raise KernelError(f"cannot set up bridge {BRIDGE_NAME} in sandbox {sandbox}: {exc}") from None
    except NetlinkError as exc:
        raise KernelError(
            f"cannot set up bridge {BRIDGE_NAME} in sandbox {sandbox}: {describe(exc)}"
        ) from None


def ensure_port(sandbox: str, ifname: str, mtu: int | None = None) -> None:
    """Plug an existing device (e.g. the dataplane's TAP) into the sandbox's bridge, up.

    If it is not in the sandbox yet it is looked up in the calling thread's netns and moved in.
    """
    try:
        with rtnl(sandbox) as ipr:
            link = find_link(ipr, ifname)
            if link is None:
                with rtnl() as here:
                    outside = find_link(here, ifname)
                    if outside is None:
                        raise KernelError(
                            f"device {ifname} not found in sandbox {sandbox} nor in this namespace: "
                            "create it before plugging it into the bridge"
                        )
                    fd = os.open(sandbox, os.O_RDONLY | os.O_CLOEXEC)
                    try:
                        here.link("set", index=outside["index"], net_ns_fd=fd)
                    finally:
                        os.close(fd)
                link = get_link(ipr, ifname)
            converge_link(ipr, link, mtu=mtu, master=bridge_index(ipr, sandbox))
    except NetlinkError as exc:
        raise KernelError(f"cannot plug {ifname} into bridge in sandbox {sandbox}: {describe(exc)}") from None
