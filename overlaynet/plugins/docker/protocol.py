"""Docker's remote network/IPAM driver protocol: typed requests (requests.py) mapped to what the
driver needs, and answers shaped for Docker. Pure, no I/O.

Docker sends JSON bodies to `POST /<Interface>.<Method>` and expects JSON back; a failure is
`{"Err": "<message>"}`, which Docker prints to the user prefixed with the method name.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from overlaynet.plugins.docker import requests as rq

CONTENT_TYPE = "application/vnd.docker.plugins.v1.2+json"
GENERIC_OPTIONS = "com.docker.network.generic"
GATEWAY_REQUEST = "com.docker.network.gateway"
POOL_PREFIX = "overlaynet:"
ADDRESS_SPACE_LOCAL = "overlaynet-local"
ADDRESS_SPACE_GLOBAL = "overlaynet-global"
# Without --subnet, overlaynet IPAM hands out the first /24 of this pool that no overlaynet network
# (on any host: overlayd's list is the cluster's) and no Docker network here uses. The same default
# on every host, like Docker's `default-address-pools`; `overlaynet-docker --default-pool` changes it.
DEFAULT_POOL = "10.213.0.0/16"
DEFAULT_POOL_PREFIXLEN = 24


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
    internal: bool = False
    encrypted: bool = False


def activate() -> dict[str, Any]:
    return {"Implements": ["NetworkDriver", "IpamDriver"]}


def driver_capabilities() -> dict[str, Any]:
    # "global" would make Docker demand swarm; cross-host state is carried by overlayd's gossip.
    return {"Scope": "local", "ConnectivityScope": "local"}


def ipam_capabilities() -> dict[str, Any]:
    return {"RequiresMACAddress": False, "RequiresRequestReplay": False}


def default_address_spaces() -> dict[str, Any]:
    return {"LocalDefaultAddressSpace": ADDRESS_SPACE_LOCAL, "GlobalDefaultAddressSpace": ADDRESS_SPACE_GLOBAL}


# `docker network create -o KEY=VALUE` (Compose: driver_opts). Anything else is refused, so a typo
# never goes unnoticed.
MTU_OPTION = "com.docker.network.driver.mtu"  # Docker's standard key; `mtu` is our short form
NETWORK_OPTIONS = {
    MTU_OPTION: "the overlay MTU, e.g. 1400",
    "mtu": f"the same as {MTU_OPTION}",
    "vni": "the VXLAN network identifier, used when the network is created",
    "name": "the overlaynet network that carries this Docker network (default: the Docker name)",
}
# Docker's overlay encrypts when the option is present, whatever its value (`-o encrypted`,
# `-o encrypted=`, `-o encrypted=true`). We do too, except that a value saying "no" is refused rather
# than silently encrypting (or not): the user meant something we must not guess.
ENCRYPTED_OPTION = "encrypted"
ENCRYPTED_YES = ("", "true", "1", "yes", "on")
MIN_PREFIXLEN = 8
UNUSABLE = [ipaddress.IPv4Network(n) for n in ("0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4",
                                                 "240.0.0.0/4")]


def _int_option(options: dict[str, str], key: str) -> int | None:
    value = options.get(key)
    if value in (None, ""):
        return None
    try:
        return int(str(value))
    except ValueError:
        raise PluginError(f"option {key}={value!r} is not a number: use e.g. -o {key}=1400") from None


def _options(generic: dict[str, str | int | float | bool] | None) -> dict[str, str]:
    given = {str(k): str(v) for k, v in (generic or {}).items()}
    unknown = sorted(k for k in given if k not in NETWORK_OPTIONS and k != ENCRYPTED_OPTION)
    if unknown:
        raise PluginError(f"unknown option {', '.join('-o ' + k for k in unknown)}: overlaynet knows "
                          + ", ".join(sorted([*NETWORK_OPTIONS, ENCRYPTED_OPTION])))
    return given


def _encrypted(options: dict[str, str]) -> bool:
    if ENCRYPTED_OPTION not in options:
        return False
    value = options[ENCRYPTED_OPTION].strip().lower()
    if value not in ENCRYPTED_YES:
        raise PluginError(f"-o {ENCRYPTED_OPTION}={options[ENCRYPTED_OPTION]!r}: give -o {ENCRYPTED_OPTION} (or "
                          f"{ENCRYPTED_OPTION}=true) for an encrypted network, or leave the option out")
    return True


def _mtu(options: dict[str, str]) -> int | None:
    standard, short = _int_option(options, MTU_OPTION), _int_option(options, "mtu")
    if standard is not None and short is not None and standard != short:
        raise PluginError(f"-o {MTU_OPTION}={standard} and -o mtu={short} disagree: give one of them")
    return standard if standard is not None else short


def check_pool(pool: str) -> str:
    """A subnet a user may give for an overlay network, normalised; PluginError saying why not."""
    try:
        subnet = ipaddress.IPv4Network(pool)
    except ValueError:
        raise PluginError(f"invalid subnet {pool!r}: expected IPv4 CIDR such as 198.19.5.0/24") from None
    if subnet.prefixlen < MIN_PREFIXLEN:
        raise PluginError(f"subnet {subnet} is too large for one overlay network: use /{MIN_PREFIXLEN} or "
                          "smaller, e.g. --subnet 198.19.5.0/24")
    if subnet.prefixlen > 30:
        raise PluginError(f"subnet {subnet} is too small: use /30 or larger")
    if any(subnet.overlaps(special) for special in UNUSABLE):
        raise PluginError(f"subnet {subnet} is in a range containers cannot use (0/8, 127/8, 169.254/16, "
                          "224/4, 240/4); pick a private range such as 10.0.0.0/8 or 198.19.0.0/16")
    return str(subnet)


def parse_create_network(body: rq.CreateNetwork) -> NetworkRequest:
    if body.i_pv6_data:
        raise PluginError("overlaynet carries IPv4 only: create the network without --ipv6")
    v4 = body.i_pv4_data or []
    if len(v4) != 1:
        raise PluginError("overlaynet needs exactly one IPv4 subnet: give one --subnet, e.g. --subnet 198.19.5.0/24")
    pool = v4[0].pool
    if pool in ("", "0.0.0.0/0"):
        # Docker's null IPAM: addresses must be cluster-wide unique, which only our IPAM knows.
        raise PluginError("overlaynet needs its own IPAM: add --ipam-driver overlaynet (and --subnet "
                          "198.19.5.0/24, the same on every host, or none to get a free one)")
    subnet = check_pool(pool)
    gateway = v4[0].gateway.split("/")[0] or None
    options = body.options or rq.NetworkOptions()
    given = _options(options.generic)
    return NetworkRequest(
        docker_id=body.network_id, subnet=subnet, gateway=gateway, name=given.get("name") or None,
        vni=_int_option(given, "vni"), mtu=_mtu(given), internal=options.internal, encrypted=_encrypted(given),
    )


@dataclass
class EndpointRequest:
    docker_network_id: str
    endpoint_id: str
    ip: str | None
    mac: str | None


def parse_create_endpoint(body: rq.CreateEndpoint) -> EndpointRequest:
    iface = body.interface or rq.Interface()
    if iface.address_i_pv6:
        raise PluginError("overlaynet carries IPv4 only: the endpoint asked for an IPv6 address")
    ip = iface.address.split("/")[0] or None
    mac = iface.mac_address.lower() or None
    return EndpointRequest(body.network_id, body.endpoint_id, ip, mac)


def create_endpoint_response(request: EndpointRequest, endpoint: dict[str, Any]) -> dict[str, Any]:
    """Return only the fields Docker left empty: echoing a given Address makes Docker roll back."""
    iface: dict[str, Any] = {}
    if request.mac is None:
        iface["MacAddress"] = endpoint["mac"]
    if request.ip is None:
        iface["Address"] = f"{endpoint['ip']}/{endpoint['prefixlen']}"
    return {"Interface": iface}


def join_response(endpoint: dict[str, Any], internal: bool) -> dict[str, Any]:
    """Docker moves `SrcName` (the veth end overlayd left in the host namespace) into the container
    and renames it eth<N>.

    No Gateway: the network's gateway address is the anycast DNS address, not a router. Without a
    Gateway, Docker's gateway service also attaches the container to `docker_gwbridge` (eth1, with
    the default route): that is where egress and published ports go, as with Docker's own overlay.
    An `--internal` network gets neither: DisableGatewayService (Docker skips internal networks
    itself; saying so keeps it true whatever the Docker version)."""
    answer: dict[str, Any] = {"InterfaceName": {"SrcName": endpoint["container_ifname"], "DstPrefix": "eth"}}
    if internal:
        answer["DisableGatewayService"] = True
    return answer


def oper_info(endpoint: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "network", "ip", "mac", "mtu", "host", "vtep", "host_ifname")
    return {"Value": {k: endpoint.get(k) for k in keys if k in endpoint}}


# ---- IPAM -------------------------------------------------------------------------------------


@dataclass
class PoolRequest:
    subnet: str | None  # None: pick a free one from the default pool
    network: str | None  # --ipam-opt network=NAME: reuse an overlaynet network's subnet


def parse_request_pool(body: rq.RequestPool) -> PoolRequest:
    if body.v6:
        raise PluginError("overlaynet IPAM hands out IPv4 only: create the network without --ipv6")
    if body.sub_pool:
        raise PluginError("overlaynet IPAM does not support --ip-range: the whole --subnet is one pool")
    options = body.options or {}
    unknown = sorted(set(options) - {"network"})
    if unknown:
        raise PluginError(f"unknown IPAM option {', '.join('--ipam-opt ' + k for k in unknown)}: "
                          "overlaynet IPAM knows network=NAME")
    network = options.get("network") or None
    if not body.pool:
        return PoolRequest(None, network)
    return PoolRequest(check_pool(body.pool), network)


def pick_subnet(pool: str, taken: list[str]) -> str | None:
    """The first /24 (DEFAULT_POOL_PREFIXLEN) of `pool` that overlaps none of `taken`; None if full."""
    used = [ipaddress.IPv4Network(t) for t in taken]
    parent = ipaddress.IPv4Network(pool)
    size = max(DEFAULT_POOL_PREFIXLEN, parent.prefixlen)
    for candidate in parent.subnets(new_prefix=size):
        if not any(candidate.overlaps(u) for u in used):
            return str(candidate)
    return None


def pool_response(subnet: str) -> dict[str, Any]:
    return {"PoolID": POOL_PREFIX + subnet, "Pool": subnet, "Data": {}}


def subnet_of_pool(pool_id: str) -> str:
    """The subnet behind one of our PoolIDs (PluginError for anything else)."""
    if not pool_id.startswith(POOL_PREFIX):
        raise PluginError(f"unknown address pool {pool_id!r}: it was not handed out by overlaynet IPAM")
    try:
        return str(ipaddress.IPv4Network(pool_id[len(POOL_PREFIX):]))
    except ValueError:
        raise PluginError(f"unknown address pool {pool_id!r}: it was not handed out by overlaynet IPAM") from None


def is_gateway_request(body: rq.RequestAddress) -> bool:
    return (body.options or {}).get("RequestAddressType") == GATEWAY_REQUEST


def gateway_address(subnet: str, requested: str | None) -> str:
    """Docker's bookkeeping gateway: the requested one, else the first host address."""
    net = ipaddress.IPv4Network(subnet)
    if requested:
        addr = parse_address(requested)
        if addr not in net:
            raise PluginError(f"gateway {requested} is outside the subnet {subnet}")
    else:
        addr = net.network_address + 1
    return f"{addr}/{net.prefixlen}"


def parse_address(text: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        raise PluginError(f"invalid address {text!r}: expected IPv4 such as 198.19.5.9") from None


def requested_ip(body: rq.RequestAddress) -> str | None:
    """The address Docker asks for (--ip, --gateway), validated; None: any free one."""
    text = body.address.split("/")[0]
    return str(parse_address(text)) if text else None


def error(message: str) -> dict[str, Any]:
    return {"Err": message}
