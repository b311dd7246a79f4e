"""Names of every kernel object overlaynet owns.

They are derived from stable ids (VNI, endpoint id) so a restarted daemon finds and adopts its own
objects without any bookkeeping of its own. Linux interface names are at most 15 characters.
"""

from __future__ import annotations

import os

IFNAMSIZ = 15
"""Longest usable interface name (the kernel's IFNAMSIZ is 16 including the NUL)."""

BRIDGE_NAME = "ovbr0"
"""The bridge inside every sandbox (one sandbox per network, so one fixed name suffices)."""

VXLAN_PREFIX = "ovx"
TAP_PREFIX = "ovt"
HOST_VETH_PREFIX = "ove"
CONTAINER_VETH_PREFIX = "ovc"
EGRESS_HOST_PREFIX = "ovh"
EGRESS_SANDBOX_LINK = "ovg0"
"""The sandbox end of a network's egress link (one per sandbox, so one fixed name suffices)."""
ENDPOINT_ID_CHARS = 11
"""How much of an endpoint id fits after a 3-letter prefix: 3 + 11 = 14 <= 15."""


def vxlan_name(vni: int) -> str:
    """VXLAN device of a network (kernel mode). Max VNI 16777215 gives 11 characters."""
    return f"{VXLAN_PREFIX}{vni}"


def tap_name(vni: int) -> str:
    """TAP device of a network (userspace mode), created by the dataplane."""
    return f"{TAP_PREFIX}{vni}"


def egress_host_name(vni: int) -> str:
    """Host-namespace end of a network's egress link (--egress networks)."""
    return f"{EGRESS_HOST_PREFIX}{vni}"


def host_veth_name(endpoint_id: str) -> str:
    """Sandbox end of an endpoint's veth pair (on the bridge)."""
    return HOST_VETH_PREFIX + endpoint_id[:ENDPOINT_ID_CHARS]


def container_veth_name(endpoint_id: str) -> str:
    """Container end of a veth pair while it is not yet in the container (Docker moves it itself)."""
    return CONTAINER_VETH_PREFIX + endpoint_id[:ENDPOINT_ID_CHARS]


def endpoint_prefix(endpoint_id: str) -> str:
    """The part of an endpoint id that appears in device names (what list_endpoint_links returns)."""
    return endpoint_id[:ENDPOINT_ID_CHARS]


def sandbox_path(state_dir: str, vni: int) -> str:
    """Bind-mount path of a network's sandbox netns: inside the daemon's state dir, so that several
    daemons on one machine (tests, demos) never collide the way fixed /run/netns names would."""
    return os.path.join(state_dir, "netns", f"vni-{vni}")
