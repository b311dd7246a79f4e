"""Facts about the underlay (the host netns the daemon runs in): which device holds an address."""

from __future__ import annotations

import ipaddress

from pyroute2 import IPRoute

from .errors import KernelError
from .rtnl import rtnl


def _device_index(ipr: IPRoute, address: str) -> int | None:
    for msg in ipr.get_addr(family=2):
        if msg.get("address") == address:
            return int(msg["index"])
    return None


def is_local_address(address: str) -> bool:
    """True if this IPv4 address is configured on a device in the calling thread's netns."""
    with rtnl() as ipr:
        return _device_index(ipr, address) is not None


def underlay_device(address: str) -> str:
    """Name of the device holding this IPv4 address (to pin the VXLAN device to it)."""
    with rtnl() as ipr:
        index = _device_index(ipr, address)
        if index is None:
            raise _not_local(address)
        return str(ipr.link("get", index=index)[0].get("ifname"))


def underlay_mtu(address: str) -> int:
    """MTU of the device holding this IPv4 address; the overlay MTU is this minus 50."""
    with rtnl() as ipr:
        index = _device_index(ipr, address)
        if index is None:
            raise _not_local(address)
        return int(ipr.link("get", index=index)[0].get("mtu"))


def underlay_networks(address: str) -> list[str]:
    """The IPv4 networks ("net/prefix") of the device holding this address: the underlay."""
    with rtnl() as ipr:
        index = _device_index(ipr, address)
        if index is None:
            raise _not_local(address)
        return sorted({str(ipaddress.IPv4Network(f"{m.get('address')}/{m['prefixlen']}", strict=False))
                       for m in ipr.get_addr(family=2, index=index)})


def _not_local(address: str) -> KernelError:
    return KernelError(
        f"address {address} is not configured on any interface in this network namespace: "
        "set the daemon's underlay address to one of this host's addresses"
    )


def detect_advertise_address() -> str:
    """The underlay address to use when none is configured: the one global IPv4 address here.

    With several, guessing could pick the wrong VTEP silently, so ask the operator instead.
    """
    with rtnl() as ipr:
        found = [str(m.get("address")) for m in ipr.get_addr(family=2) if m.get("scope") == 0]
    if len(found) == 1:
        return found[0]
    if not found:
        raise KernelError("no IPv4 address on this host to advertise: configure one, or pass --advertise")
    raise KernelError(
        f"this host has several IPv4 addresses ({', '.join(found)}): choose the underlay one with --advertise"
    )
