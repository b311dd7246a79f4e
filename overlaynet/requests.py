"""What clients ask overlayd for: the REST API's request bodies and query strings as typed values.

The API edge decodes every request into one of these (msgspec: types checked, unknown keys
refused), so the agent never sees a raw request. Value rules (is this a valid name, subnet, MAC?)
stay in model.py, where the agent applies them. The OpenAPI document's schemas are generated from
these classes (api/openapi.py), so they cannot drift from what the server accepts.

Defaults are omitted when a client encodes a body, so a body says only what its caller chose.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from overlaynet.model import MAX_VNI, MIN_VNI


class Request(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    """Base of every request type: an unknown key is an error, not silently ignored."""


def _doc(text: str) -> msgspec.Meta:
    return msgspec.Meta(description=text)


class NetworkCreate(Request):
    name: str
    subnet: Annotated[str, _doc("IPv4 CIDR, e.g. 198.19.1.0/24")]
    vni: Annotated[int | None, _doc(f"{MIN_VNI}..{MAX_VNI}; default: derived from the name")] = None
    mtu: Annotated[int | None, _doc("inner MTU; default: underlay MTU - 50")] = None
    gateway: Annotated[str | None, _doc(
        'an address of the subnet, or "auto": the first usable one; the anycast gateway and DNS '
        "address on every host (omit: none)")] = None
    options: dict[str, Any] | None = None
    egress: Annotated[bool, _doc("containers reach the outside through their own host (NAT on the underlay) "
                                 "and get a default route via the gateway; needs a gateway")] = False
    encrypted: Annotated[bool, _doc("ESP (AES-GCM) between hosts, never cleartext; keys travel only in encrypted "
                                    "gossip; fixed at creation (docs/encryption.md)")] = False


class EndpointCreate(Request):
    network: str
    netns: Annotated[str | None, _doc("a name under /run/netns or a namespace path; null: "
                                      "the caller moves the interface itself (Docker)")] = None
    ifname: str | None = None
    ip: str | None = None
    mac: str | None = None
    id: Annotated[str | None, _doc("at least 12 letters or digits; default: random")] = None
    labels: dict[str, str] | None = None
    names: Annotated[list[str] | None, _doc("DNS names, answered by every host's DNS on the network")] = None


class EndpointUpdate(Request):
    names: Annotated[list[str], _doc("replaces the endpoint's DNS names (only names can change)")]


class AddressReserve(Request):
    ip: Annotated[str | None, _doc("this address; default: the next free one")] = None


class KeyChange(Request):
    key: Annotated[str, _doc("the key in base64, as `overlayctl keys generate` prints it")]


# ---- query strings (values arrive as text; decoded leniently: "true" is a bool) ----------------

class NetworkDeleteQuery(Request):
    force: Annotated[bool, _doc("detach attached endpoints first")] = False


class EndpointListQuery(Request):
    network: Annotated[str | None, _doc("only this network")] = None
    all: Annotated[bool, _doc("every host's endpoints, as replicated")] = False


class EndpointGetQuery(Request):
    check: Annotated[bool, _doc('add "present": is the veth really there')] = False


class DetachQuery(Request):
    network: str
    netns: Annotated[str, _doc("namespace name or path")]
