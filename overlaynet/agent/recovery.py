"""Endpoints whose state file was unreadable: rebuilt from what still exists, or kept and reported.

A state file that cannot be read never causes a kernel object to be removed. An endpoint file that
was moved aside as `endpoints/<id>.json.corrupt` (state.py) still names the endpoint's id; with it
the endpoint is rebuilt from
  - the cluster's replicated record of this host's endpoint (network, IP, MAC, DNS names), and
  - the kernel: the veth in the sandbox (named after the id) and its container end (namespace,
    interface name, MAC, MTU, IPv4 address), see kernel/probe.py.
What cannot be rebuilt stays `unknown`: its veth is kept, reconcile leaves it alone, `status` and
`endpoint ls` list it with what to do, and `overlayctl endpoint rm ID` removes it for good.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from overlaynet import kernel
from overlaynet.model import Endpoint, EndpointRecord, Network

log = logging.getLogger("overlaynet.agent")
CORRUPT_SUFFIX = ".json.corrupt"


@dataclass
class UnknownEndpoint:
    id: str
    file: str  # the quarantined state file
    network: str | None = None
    sandbox: str | None = None  # where its veth is, if it has one

    def view(self) -> dict[str, Any]:
        veth = kernel.host_veth_name(self.id)
        if self.sandbox:
            hint = (f"its state file was unreadable and it could not be rebuilt; its veth {veth} is kept so the "
                    f"container stays connected. Restore {self.file} as {self.file[:-len('.corrupt')]} and "
                    f"restart overlayd, or remove the endpoint with `overlayctl endpoint rm {self.id}`")
        else:
            hint = (f"its state file was unreadable and no veth is left in the kernel; remove the record "
                    f"with `overlayctl endpoint rm {self.id}`")
        return {"id": self.id, "state": "unknown", "network": self.network, "host_ifname": veth,
                "sandbox": self.sandbox, "file": self.file, "hint": hint}


def unreadable_endpoint_ids(state_dir: str, loaded: Iterable[str]) -> dict[str, str]:
    """id -> quarantined file, for every `endpoints/<id>.json.corrupt` without a readable `<id>.json`."""
    directory = os.path.join(state_dir, "endpoints")
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return {}
    have = set(loaded)
    return {name[: -len(CORRUPT_SUFFIX)]: os.path.join(directory, name) for name in names
            if name.endswith(CORRUPT_SUFFIX) and name[: -len(CORRUPT_SUFFIX)] not in have}


def rebuild(endpoint_id: str, file: str, record: EndpointRecord | None, networks: dict[str, Network],
            state_dir: str, host: str, vtep: str) -> Endpoint | UnknownEndpoint:
    """Blocking (netlink): call from the kernel thread."""
    by_vni = {net.vni: net for net in networks.values()}
    candidates: list[Network] = []
    if record is not None and record.network in networks:
        candidates.append(networks[record.network])
    candidates += [by_vni[vni] for vni in sorted(by_vni) if by_vni[vni] not in candidates]
    for net in candidates:
        sandbox = kernel.sandbox_path(state_dir, net.vni)
        probed = kernel.probe_endpoint(sandbox, endpoint_id, skip_under=state_dir)
        if probed is None:
            continue
        ip = (record.ip if record else None) or probed.ip
        mac = (record.mac if record else None) or probed.mac
        if not ip or not mac or (record is None and probed.netns is None):
            return UnknownEndpoint(endpoint_id, file, net.name, sandbox)
        return Endpoint(
            id=endpoint_id, network=net.name, ip=ip, prefixlen=net.ip_network.prefixlen, mac=mac,
            ifname=probed.ifname or "eth0", netns=probed.netns, mtu=probed.mtu or net.mtu, host=host,
            vtep=vtep, names=list(record.names) if record else [],
        )
    return UnknownEndpoint(endpoint_id, file, record.network if record else None)
