"""Static forwarding entries on a network's VXLAN device: which VTEP owns a MAC, and where to flood.

All entries are permanent "self" entries of the VXLAN device (not of the bridge), as with
``bridge fdb ... dev ovxN dst VTEP self permanent``. The flood list is the set of all-zero-MAC
entries, one per remote VTEP, which carries broadcast/unknown/multicast frames.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import ndmsg

from .diff import Changes, plan
from .errors import KernelError, describe
from .links import find_link
from .names import vxlan_name
from .rtnl import rtnl

FLOOD_MAC = "00:00:00:00:00:00"
BRIDGE_LOCAL = "0.0.0.0"
"""The "VTEP" of a MAC that lives on this host's bridge itself (the anycast gateway): with a
neighbour entry pointing at such a MAC, the VXLAN device's ARP proxy stays silent (the kernel's
"bridge-local neighbour") and the bridge answers ARP itself; nothing crosses the underlay."""
AF_BRIDGE = 7
NUD_PERMANENT = ndmsg.states["permanent"]
NTF_SELF = ndmsg.flags["self"]


@dataclass(frozen=True)
class FdbEntry:
    mac: str
    vtep: str


@contextmanager
def vxlan_device(sandbox: str, vni: int) -> Iterator[tuple[IPRoute, int]]:
    """(rtnl handle, ifindex) of the network's VXLAN device; netlink errors become KernelError."""
    name = vxlan_name(vni)
    try:
        with rtnl(sandbox) as ipr:
            link = find_link(ipr, name)
            if link is None:
                raise KernelError(
                    f"VXLAN device {name} not found in sandbox {sandbox}: call ensure_vxlan first"
                )
            yield ipr, int(link["index"])
    except NetlinkError as exc:
        raise KernelError(f"cannot program {name} in sandbox {sandbox}: {describe(exc)}") from None


def _entries(ipr: IPRoute, index: int) -> list[FdbEntry]:
    found = []
    for msg in ipr.fdb("dump"):
        if msg["ifindex"] != index or not msg["flags"] & NTF_SELF:
            continue
        vtep = msg.get("NDA_DST")
        if vtep is not None:
            found.append(FdbEntry(str(msg.get("NDA_LLADDR")).lower(), vtep))
    return found


def _replace(ipr: IPRoute, index: int, mac: str, vtep: str) -> None:
    # pyroute2 only fills in state/flags defaults for add/append/del, so spell them out.
    ipr.fdb("replace", ifindex=index, lladdr=mac, dst=vtep, state=NUD_PERMANENT, flags=NTF_SELF)


def _delete(ipr: IPRoute, index: int, mac: str, vtep: str | None = None) -> None:
    spec: dict[str, object] = {"ifindex": index, "lladdr": mac}
    if vtep is not None:
        spec["dst"] = vtep  # only this remote of a multi-remote entry (the flood list)
    try:
        ipr.fdb("del", **spec)
    except NetlinkError as exc:
        if exc.code != errno.ENOENT:
            raise


def list_fdb(sandbox: str, vni: int) -> list[FdbEntry]:
    """All VTEP entries of the device, flood entries (FLOOD_MAC) included."""
    with vxlan_device(sandbox, vni) as (ipr, index):
        return sorted(_entries(ipr, index), key=lambda e: (e.mac, e.vtep))


def set_fdb(sandbox: str, vni: int, mac: str, vtep: str) -> None:
    """Frames for mac go to vtep (added, or replaced if it pointed elsewhere)."""
    with vxlan_device(sandbox, vni) as (ipr, index):
        _replace(ipr, index, mac.lower(), vtep)


def delete_fdb(sandbox: str, vni: int, mac: str) -> None:
    """Forget where mac lives; absent is fine."""
    with vxlan_device(sandbox, vni) as (ipr, index):
        _delete(ipr, index, mac.lower())


def current_unicast(entries: list[FdbEntry]) -> dict[str, str]:
    """MAC -> VTEP of the unicast entries (a MAC with several remotes maps to "": not what we program)."""
    current: dict[str, str] = {}
    for entry in entries:
        if entry.mac != FLOOD_MAC:
            current[entry.mac] = entry.vtep if entry.mac not in current else ""
    return current


def apply_unicast(ipr: IPRoute, index: int, current: dict[str, str], desired: dict[str, str]) -> Changes:
    """Turn the unicast entries `current` into `desired` (MACs lower-case)."""
    changes = plan(current, desired)
    for mac in changes.removed:
        _delete(ipr, index, mac)
    for mac in changes.added + changes.replaced:
        if current.get(mac) == "":
            _delete(ipr, index, mac)
        _replace(ipr, index, mac, desired[mac])
    return changes


def apply_flood(ipr: IPRoute, index: int, current: set[str], vteps: set[str]) -> Changes:
    """Turn the flood list `current` into `vteps`."""
    changes = plan(dict.fromkeys(current, ""), dict.fromkeys(vteps, ""))
    for vtep in changes.added:
        ipr.fdb("append", ifindex=index, lladdr=FLOOD_MAC, dst=vtep, state=NUD_PERMANENT, flags=NTF_SELF)
    for vtep in changes.removed:
        _delete(ipr, index, FLOOD_MAC, vtep)
    return changes


def sync_fdb(sandbox: str, vni: int, desired: dict[str, str]) -> Changes:
    """Make the unicast entries (MAC -> VTEP) exactly ``desired``; flood entries are left alone."""
    desired = {mac.lower(): vtep for mac, vtep in desired.items()}
    with vxlan_device(sandbox, vni) as (ipr, index):
        return apply_unicast(ipr, index, current_unicast(_entries(ipr, index)), desired)


def set_flood_list(sandbox: str, vni: int, vteps: set[str]) -> Changes:
    """Make the flood list (BUM frames) exactly ``vteps``: add the missing, remove the extra."""
    with vxlan_device(sandbox, vni) as (ipr, index):
        return apply_flood(ipr, index, {e.vtep for e in _entries(ipr, index) if e.mac == FLOOD_MAC}, vteps)
