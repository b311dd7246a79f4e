"""Permanent IP -> MAC neighbour entries on a network's VXLAN device.

With ``proxy`` on, the VXLAN device answers ARP requests from these entries and never sends ARP
across the underlay, so every remote endpoint needs one (ARP suppression).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from .diff import Changes, plan
from .fdb import NUD_PERMANENT, vxlan_device

AF_INET = 2


@dataclass(frozen=True)
class NeighEntry:
    ip: str
    mac: str


def _entries(ipr: IPRoute, index: int) -> dict[str, str]:
    found = {}
    for msg in ipr.neigh("dump", family=AF_INET, ifindex=index):
        if msg["ifindex"] == index and msg["state"] & NUD_PERMANENT and msg.get("NDA_LLADDR"):
            found[str(msg.get("NDA_DST"))] = str(msg.get("NDA_LLADDR")).lower()
    return found


def _delete(ipr: IPRoute, index: int, ip: str) -> None:
    try:
        ipr.neigh("del", ifindex=index, dst=ip)
    except NetlinkError as exc:
        if exc.code != errno.ENOENT:
            raise


def _replace(ipr: IPRoute, index: int, ip: str, mac: str) -> None:
    ipr.neigh("replace", ifindex=index, dst=ip, lladdr=mac, state=NUD_PERMANENT)


def list_neigh(sandbox: str, vni: int) -> list[NeighEntry]:
    """The permanent IPv4 neighbour entries of the device."""
    with vxlan_device(sandbox, vni) as (ipr, index):
        return [NeighEntry(ip, mac) for ip, mac in sorted(_entries(ipr, index).items())]


def set_neigh(sandbox: str, vni: int, ip: str, mac: str) -> None:
    """ARP for ip is answered with mac (added or replaced)."""
    with vxlan_device(sandbox, vni) as (ipr, index):
        _replace(ipr, index, ip, mac.lower())


def delete_neigh(sandbox: str, vni: int, ip: str) -> None:
    """Stop answering ARP for ip; absent is fine."""
    with vxlan_device(sandbox, vni) as (ipr, index):
        _delete(ipr, index, ip)


def permanent_entries(ipr: IPRoute, index: int) -> dict[str, str]:
    """IP -> MAC of the device's permanent entries (a dump)."""
    return _entries(ipr, index)


def apply_neigh(ipr: IPRoute, index: int, current: dict[str, str], desired: dict[str, str]) -> Changes:
    """Turn the permanent entries `current` into `desired` (MACs lower-case)."""
    changes = plan(current, desired)
    for ip in changes.removed:
        _delete(ipr, index, ip)
    for ip in changes.added + changes.replaced:
        _replace(ipr, index, ip, desired[ip])
    return changes


def sync_neigh(sandbox: str, vni: int, desired: dict[str, str]) -> Changes:
    """Make the permanent entries (IP -> MAC) exactly ``desired``."""
    desired = {ip: mac.lower() for ip, mac in desired.items()}
    with vxlan_device(sandbox, vni) as (ipr, index):
        return apply_neigh(ipr, index, _entries(ipr, index), desired)
