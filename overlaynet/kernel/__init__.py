"""kernel/: the only code in overlaynet that talks netlink (pyroute2).

Small idempotent verbs over named, ownable objects; see docs/kernel.md. Every verb opens and
closes its own netlink sockets and never changes the calling thread's namespace, so the daemon
may call them from an executor thread. They act relative to the calling thread's netns (the
"host" netns) and take sandboxes and container namespaces as paths.
"""

from .diff import Changes
from .egress import EgressSpec, sync_egress
from .errors import KernelError
from .fdb import BRIDGE_LOCAL, FLOOD_MAC, FdbEntry, delete_fdb, list_fdb, set_fdb, set_flood_list, sync_fdb
from .links import device_exists, ensure_bridge, ensure_port
from .mount_home import find_home as pin_sandboxes_outside_private_mounts
from .names import (
    BRIDGE_NAME,
    container_veth_name,
    endpoint_prefix,
    host_veth_name,
    sandbox_path,
    tap_name,
    vxlan_name,
)
from .neigh import NeighEntry, delete_neigh, list_neigh, set_neigh, sync_neigh
from .netns import (
    call_in_netns,
    current_netns_identity,
    ensure_sandbox,
    list_sandboxes,
    netns_attached,
    netns_identity,
    netns_matching,
    remove_sandbox,
    resolve_netns,
    sandbox_exists,
)
from .port_guard import DROP_REASONS, GuardedPort, PortGuard, drop_counters, sync_port_guard
from .probe import ProbedEndpoint, probe_endpoint
from .rtnl import batch
from .underlay import (
    detect_advertise_address,
    is_local_address,
    underlay_device,
    underlay_mtu,
    underlay_networks,
)
from .veth import VethInfo, VethSpec, ensure_veth, list_endpoint_links, remove_veth
from .vxlan import VxlanSpec, ensure_vxlan, remove_vxlan, vxlan_counters
from .vxlan_filter import (
    remove_vxlan_filter,
    sync_vxlan_members,
    vxlan_non_member_drops,
    vxlan_peer_bum_drops,
)
from .vxlan_table import VxlanTable, program_vxlan_table
from .xfrm import esp_gcm_missing as xfrm_esp_gcm_missing

__all__ = [
    "xfrm_esp_gcm_missing",
    "BRIDGE_LOCAL",
    "BRIDGE_NAME",
    "FLOOD_MAC",
    "Changes",
    "EgressSpec",
    "DROP_REASONS",
    "FdbEntry",
    "GuardedPort",
    "KernelError",
    "NeighEntry",
    "ProbedEndpoint",
    "batch",
    "PortGuard",
    "VethInfo",
    "VethSpec",
    "VxlanSpec",
    "call_in_netns",
    "container_veth_name",
    "current_netns_identity",
    "detect_advertise_address",
    "device_exists",
    "delete_fdb",
    "delete_neigh",
    "drop_counters",
    "endpoint_prefix",
    "ensure_bridge",
    "ensure_port",
    "ensure_sandbox",
    "ensure_veth",
    "ensure_vxlan",
    "host_veth_name",
    "is_local_address",
    "list_endpoint_links",
    "list_fdb",
    "list_neigh",
    "list_sandboxes",
    "netns_attached",
    "netns_identity",
    "pin_sandboxes_outside_private_mounts",
    "netns_matching",
    "probe_endpoint",
    "remove_sandbox",
    "remove_veth",
    "remove_vxlan",
    "remove_vxlan_filter",
    "resolve_netns",
    "sandbox_exists",
    "sandbox_path",
    "set_fdb",
    "set_flood_list",
    "set_neigh",
    "sync_egress",
    "sync_port_guard",
    "sync_fdb",
    "sync_neigh",
    "sync_vxlan_members",
    "vxlan_peer_bum_drops",
    "tap_name",
    "underlay_device",
    "underlay_mtu",
    "underlay_networks",
    "vxlan_counters",
    "VxlanTable",
    "program_vxlan_table",
    "vxlan_name",
    "vxlan_non_member_drops",
]
