"""Docker's remote network/IPAM driver protocol: parsing requests and shaping answers. Pure, no I/O.

Docker sends JSON bodies to `POST /<Interface>.<Method>` and expects JSON back; a failure is
`{"Err": "<message>"}`, which Docker prints to the user prefixed with the method name.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

CONTENT_TYPE = "application/vnd.docker.plugins.v1.2+json"
GENERIC_OPTIONS = "com.docker.network.generic"
GATEWAY_REQUEST = "com.docker.network.gateway"
POOL_PREFIX = "overlaynet:"
ADDRESS_SPACE_LOCAL = "overlaynet-local"
ADDRESS_SPACE_GLOBAL = "overlaynet-global"
# Options a user may give with `docker network create -o KEY=VALUE` (they arrive as strings).
NETWORK_OPTIONS = ("name", "vni", "mtu")


class PluginError(Exception):
    """A failure Docker shows the user: one line, what was wrong and what to do."""


@dataclass
class NetworkRequest:
    docker_id: str
    subnet: str
    gateway: str | None
    name: str | None = None
    vni: int | None = None
    mtu: int | None = None
    extra: dict[str, str] = field(default_factory=dict)


def activate() -> dict[str, Any]:
    return {"Implements": ["NetworkDriver", "IpamDriver"]}


def driver_capabilities() -> dict[str, Any]:
    # "global" would make Docker demand swarm; cross-host state is carried by overlayd's gossip.
    return {"Scope": "local", "ConnectivityScope": "local"}


def ipam_capabilities() -> dict[str, Any]:
    return {"RequiresMACAddress": False, "RequiresRequestReplay": False}


def default_address_spaces() -> dict[str, Any]:
    return {"LocalDefaultAddressSpace": ADDRESS_SPACE_LOCAL, "GlobalDefaultAddressSpace": ADDRESS_SPACE_GLOBAL}


def _int_option(options: dict[str, Any], key: str) -> int | None:
    value = options.get(key)
    if value in (None, ""):
        return None
    try:
        return int(str(value))
    except ValueError:
        raise PluginError(f"option {key}={value!r} is not a number: use e.g. -o {key}=1400") from None


def parse_create_network(body: dict[str, Any]) -> NetworkRequest:
    docker_id = body.get("NetworkID")
    if not isinstance(docker_id, str) or not docker_id:
        raise PluginError("CreateNetwork without a NetworkID")
    if body.get("IPv6Data"):
        raise PluginError("overlaynet carries IPv4 only: create the network without --ipv6")
    v4 = body.get("IPv4Data") or []
    if len(v4) != 1:
        raise PluginError("overlaynet needs exactly one IPv4 subnet: give one --subnet, e.g. --subnet 198.19.5.0/24")
    pool = v4[0].get("Pool") or ""
    if pool in ("", "0.0.0.0/0"):
        raise PluginError("overlaynet needs a subnet: add --subnet 198.19.5.0/24 (the same on every host)")
    try:
        subnet = str(ipaddress.IPv4Network(pool))
    except ValueError:
        raise PluginError(f"invalid subnet {pool!r}: expected IPv4 CIDR such as 198.19.5.0/24") from None
    gateway = (v4[0].get("Gateway") or "").split("/")[0] or None
    options = body.get("Options") or {}
    generic = options.get(GENERIC_OPTIONS) or {}
    if not isinstance(generic, dict):
        generic = {}
    name = generic.get("name") or None
    extra = {str(k): str(v) for k, v in generic.items() if k not in NETWORK_OPTIONS}
    return NetworkRequest(
        docker_id=docker_id, subnet=subnet, gateway=gateway, name=name,
        vni=_int_option(generic, "vni"), mtu=_int_option(generic, "mtu"), extra=extra,
    )


def endpoint_id(body: dict[str, Any]) -> str:
    value = body.get("EndpointID")
    if not isinstance(value, str) or not value.isalnum() or len(value) < 12:
        raise PluginError(f"invalid EndpointID {value!r}")
    # Docker's 64-hex id is used as is: every kernel name overlayd derives from it can be found
    # again from the id alone, so Leave/DeleteEndpoint never depend on this process's memory.
    return value


def network_id(body: dict[str, Any]) -> str:
    value = body.get("NetworkID")
    if not isinstance(value, str) or not value:
        raise PluginError("request without a NetworkID")
    return value


@dataclass
class EndpointRequest:
    docker_network_id: str
    endpoint_id: str
    ip: str | None
    mac: str | None


def parse_create_endpoint(body: dict[str, Any]) -> EndpointRequest:
    iface = body.get("Interface") or {}
    if iface.get("AddressIPv6"):
        raise PluginError("overlaynet carries IPv4 only: the endpoint asked for an IPv6 address")
    address = iface.get("Address") or ""
    ip = address.split("/")[0] or None
    mac = (iface.get("MacAddress") or "").lower() or None
    return EndpointRequest(network_id(body), endpoint_id(body), ip, mac)


def create_endpoint_response(request: EndpointRequest, endpoint: dict[str, Any]) -> dict[str, Any]:
    """Return only the fields Docker left empty: echoing a given Address makes Docker roll back."""
    iface: dict[str, Any] = {}
    if request.mac is None:
        iface["MacAddress"] = endpoint["mac"]
    if request.ip is None:
        iface["Address"] = f"{endpoint['ip']}/{endpoint['prefixlen']}"
    return {"Interface": iface}


def join_response(endpoint: dict[str, Any]) -> dict[str, Any]:
    """Docker moves `SrcName` (the veth end overlayd left in the host namespace) into the container
    and renames it eth<N>. No Gateway, even when the network has one: that address is the anycast
    gateway for DNS only, not a router, so it must not become the container's default route; and
    DisableGatewayService keeps Docker from adding docker_gwbridge (a second interface with a
    default route) instead."""
    return {
        "InterfaceName": {"SrcName": endpoint["container_ifname"], "DstPrefix": "eth"},
        "DisableGatewayService": True,
    }




def oper_info(endpoint: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "network", "ip", "mac", "mtu", "host", "vtep", "host_ifname")
    return {"Value": {k: endpoint.get(k) for k in keys if k in endpoint}}


# ---- IPAM -------------------------------------------------------------------------------------


@dataclass
class PoolRequest:
    subnet: str | None
    network: str | None  # --ipam-opt network=NAME: reuse an overlaynet network's subnet


def parse_request_pool(body: dict[str, Any]) -> PoolRequest:
    if body.get("V6"):
        raise PluginError("overlaynet IPAM hands out IPv4 only: create the network without --ipv6")
    if body.get("SubPool"):
        raise PluginError("overlaynet IPAM does not support --ip-range: the whole --subnet is one pool")
    options = body.get("Options") or {}
    network = options.get("network") or None
    pool = body.get("Pool") or None
    if pool is None:
        if network is None:
            raise PluginError(
                "overlaynet IPAM needs a subnet: add --subnet 198.19.5.0/24 (the same on every host), "
                "or --ipam-opt network=NAME to use an existing overlaynet network's subnet"
            )
        return PoolRequest(None, network)
    try:
        subnet = ipaddress.IPv4Network(pool)
    except ValueError:
        raise PluginError(f"invalid subnet {pool!r}: expected IPv4 CIDR such as 198.19.5.0/24") from None
    return PoolRequest(str(subnet), network)


def pool_response(subnet: str) -> dict[str, Any]:
    return {"PoolID": POOL_PREFIX + subnet, "Pool": subnet, "Data": {}}


def subnet_of_pool(pool_id: object) -> str:
    if not isinstance(pool_id, str) or not pool_id.startswith(POOL_PREFIX):
        raise PluginError(f"unknown address pool {pool_id!r}: it was not handed out by overlaynet IPAM")
    return pool_id[len(POOL_PREFIX):]


def is_gateway_request(body: dict[str, Any]) -> bool:
    return (body.get("Options") or {}).get("RequestAddressType") == GATEWAY_REQUEST


def gateway_address(subnet: str, requested: str | None) -> str:
    """Docker's bookkeeping gateway: the requested one, else the first host address."""
    net = ipaddress.IPv4Network(subnet)
    if requested:
        addr = ipaddress.IPv4Address(requested)
        if addr not in net:
            raise PluginError(f"gateway {requested} is outside the subnet {subnet}")
    else:
        addr = net.network_address + 1
    return f"{addr}/{net.prefixlen}"


def requested_ip(body: dict[str, Any]) -> str | None:
    address = body.get("Address") or ""
    return address.split("/")[0] or None


def error(message: str) -> dict[str, Any]:
    return {"Err": message}
