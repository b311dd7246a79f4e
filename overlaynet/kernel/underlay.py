"""Facts about the underlay (the host netns the daemon runs in): which device holds an address."""

from __future__ import annotations

from pyroute2 import IPRoute

from .errors import KernelError


def _device_index(ipr: IPRoute, address: str) -> int | None:
    for msg in ipr.get_addr(family=2):
        if msg.get("address") == address:
            return int(msg["index"])
    return None


def is_local_address(address: str) -> bool:
    """True if this IPv4 address is configured on a device in the calling thread's netns."""
    with IPRoute() as ipr:
        return _device_index(ipr, address) is not None


def underlay_device(address: str) -> str:
    """Name of the device holding this IPv4 address (to pin the VXLAN device to it)."""
    with IPRoute() as ipr:
        index = _device_index(ipr, address)
        if index is None:
            raise _not_local(address)
        return str(ipr.link("get", index=index)[0].get("ifname"))


def underlay_mtu(address: str) -> int:
    """MTU of the device holding this IPv4 address; the overlay MTU is this minus 50."""
    with IPRoute() as ipr:
        index = _device_index(ipr, address)
        if index is None:
            raise _not_local(address)
        return int(ipr.link("get", index=index)[0].get("mtu"))


def _not_local(address: str) -> KernelError:
    return KernelError(
        f"address {address} is not configured on any interface in this network namespace: "
        "set the daemon's underlay address to one of this host's addresses"
    )
