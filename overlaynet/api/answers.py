"""The shapes of overlayd's answers, for the OpenAPI document (api/routes.py names one per route).

The server builds its answers as plain JSON values; tests decode real answers of a live daemon into
these types, which refuse unknown keys, so the document cannot silently fall behind the server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from overlaynet import model


class Answer(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class Error(Answer):
    error: str


class Network(Answer):
    name: str
    vni: int
    subnet: str
    mtu: int
    gateway: str | None
    options: dict[str, Any]
    created_at: float
    owner: str
    egress: bool
    encrypted: bool
    key_epoch: int | None  # encrypted: the newest key epoch this host holds
    key_age_s: float | None  # ... and its age
    tx_epoch: int | None  # ... and the epoch it sends with (the previous one just after a rotation)
    endpoints: int  # on this host
    endpoints_cluster: int
    hosts: list[str]


@dataclass
class Endpoint(model.Endpoint):
    """model.Endpoint plus what the view adds (a dataclass: msgspec reads it like a Struct)."""
    host_ifname: str = ""
    container_ifname: str = ""
    gateway: str | None = None
    egress: bool = False  # the network's: the container's default route goes via the gateway
    present: bool | None = None  # only with ?check=true


class NetworkSa(Answer):
    peer: str
    dir: Literal["out", "in"]
    epoch: int
    spi: str  # hex, 0x...
    key: str  # hex
    salt: str  # hex


class NetworkKeys(Answer):
    network: str
    vni: int
    vtep: str  # this host's
    esp_port: int
    sas: list[NetworkSa]


class Address(Answer):
    ip: str
    prefixlen: int


class Member(Answer):
    name: str
    addr: str
    port: int
    state: Literal["alive", "suspect", "dead", "left"]
    incarnation: int
    last_change: float
    vtep: str | None
    dataplane: str | None


class KeyEntry(Answer):
    id: str
    primary: bool


class Keys(Answer):
    encrypted: bool
    primary: str | None
    key_file: str | None
    keys: list[KeyEntry]


class KeyChanged(Keys):
    op: str
    changed: bool


class FdbEntry(Answer):
    mac: str
    vtep: str


class NeighEntry(Answer):
    ip: str
    mac: str


class Programmed(Answer):
    fdb: list[FdbEntry]
    neigh: list[NeighEntry]
    flood: list[str]


class NetworkFdb(Answer):
    network: str
    vni: int
    local_endpoints: bool
    programmed: Programmed
    desired: Programmed


class Reconcile(msgspec.Struct, kw_only=True):
    repaired: int
    forgotten: int
    stale_removed: int
    errors: list[str]
    devices_repaired: list[str]  # "network: device" re-made because it had gone missing
    programmed_changes: int
    duration_ms: float
    at: float


class Health(Answer):
    status: Literal["ok", "degraded"]
    reasons: list[str]


class PortCheck(Answer):
    port: int
    result: str  # "ok", "ok (no ICMP error)", or what went wrong


class PeerCheck(Answer):
    name: str
    address: str
    vtep: str
    dataplane: str | None
    gossip: PortCheck
    vxlan: PortCheck
    path_mtu: int | None  # the largest IP packet that crosses unfragmented (None: no echo answered)
    max_vxlan_payload: int | None  # the largest inner Ethernet frame that crosses unfragmented
    max_inner_mtu: int | None


class Doctor(Answer):
    host: str
    advertise: str
    underlay_mtu: int
    peers: list[PeerCheck]
    warnings: list[str]


Object = dict[str, Any]  # an answer whose keys are documented in docs/api.md, not typed here
