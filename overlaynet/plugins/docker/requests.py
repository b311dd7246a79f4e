"""The bodies Docker sends to the plugin, as typed values (msgspec Structs), validated at the edge.

`decode(method, raw)` turns the bytes of one request into its Struct or raises BadBody with one
line a user understands: a wrong JSON type, a NetworkID that is no Docker id, a body nested too
deep. Nothing raw travels inward: the driver only ever sees these types. Unknown keys are ignored
(Docker adds some across versions); known keys must have the documented types.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec
from msgspec import Meta, Struct, field

# Docker's ids: 64 hex characters locally, 25 letters and digits from a swarm manager. Letters and
# digits only, so an id can never name a path ("../../etc") or an odd kernel device.
DockerId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9]{12,64}$")]
MAX_BODY = 1 << 20


class BadBody(Exception):
    """A request body that is not what Docker sends for this method; the message says why."""


class Empty(Struct):
    """Methods whose body carries nothing we use (Activate, GetCapabilities, ...)."""


class IPData(Struct, rename="pascal"):
    address_space: str = ""
    pool: str = ""
    gateway: str = ""
    aux_addresses: dict[str, str] | None = None


class NetworkOptions(Struct):
    generic: dict[str, str | int | float | bool] | None = field(default=None, name="com.docker.network.generic")
    internal: bool = field(default=False, name="com.docker.network.internal")
    enable_ipv6: bool = field(default=False, name="com.docker.network.enable_ipv6")


class CreateNetwork(Struct, rename="pascal"):
    network_id: DockerId = field(name="NetworkID")
    options: NetworkOptions | None = None
    i_pv4_data: list[IPData] | None = field(default=None, name="IPv4Data")
    i_pv6_data: list[IPData] | None = field(default=None, name="IPv6Data")


class NetworkOnly(Struct):
    network_id: DockerId = field(name="NetworkID")


class PortBinding(Struct, rename="pascal"):
    proto: int = 0
    ip: str = field(default="", name="IP")
    port: int = 0
    host_ip: str = field(default="", name="HostIP")
    host_port: int = 0
    host_port_end: int = 0


class ExposedPort(Struct, rename="pascal"):
    proto: int = 0
    port: int = 0


class EndpointOptions(Struct):
    portmap: list[PortBinding] | None = field(default=None, name="com.docker.network.portmap")
    exposed: list[ExposedPort] | None = field(default=None, name="com.docker.network.endpoint.exposedports")


class Interface(Struct, rename="pascal"):
    address: str = ""
    address_i_pv6: str = field(default="", name="AddressIPv6")
    mac_address: str = ""


class CreateEndpoint(Struct, rename="pascal"):
    network_id: DockerId = field(name="NetworkID")
    endpoint_id: DockerId = field(name="EndpointID")
    interface: Interface | None = None
    options: EndpointOptions | None = None


class EndpointRef(Struct):
    """Join, Leave, DeleteEndpoint, EndpointOperInfo, Program/RevokeExternalConnectivity."""

    network_id: DockerId = field(name="NetworkID")
    endpoint_id: DockerId = field(name="EndpointID")
    sandbox_key: str = field(default="", name="SandboxKey")


class RequestPool(Struct, rename="pascal"):
    address_space: str = ""
    pool: str = ""
    sub_pool: str = ""
    options: dict[str, str] | None = None
    v6: bool = field(default=False, name="V6")


class ReleasePool(Struct, rename="pascal"):
    pool_id: str = field(name="PoolID")


class RequestAddress(Struct, rename="pascal"):
    pool_id: str = field(name="PoolID")
    address: str = ""
    options: dict[str, str] | None = None


BODIES: dict[str, type[Struct]] = {
    "NetworkDriver.CreateNetwork": CreateNetwork,
    "NetworkDriver.AllocateNetwork": CreateNetwork,
    "NetworkDriver.DeleteNetwork": NetworkOnly,
    "NetworkDriver.FreeNetwork": NetworkOnly,
    "NetworkDriver.CreateEndpoint": CreateEndpoint,
    "NetworkDriver.DeleteEndpoint": EndpointRef,
    "NetworkDriver.EndpointOperInfo": EndpointRef,
    "NetworkDriver.Join": EndpointRef,
    "NetworkDriver.Leave": EndpointRef,
    "NetworkDriver.ProgramExternalConnectivity": EndpointRef,
    "NetworkDriver.RevokeExternalConnectivity": EndpointRef,
    "IpamDriver.RequestPool": RequestPool,
    "IpamDriver.ReleasePool": ReleasePool,
    "IpamDriver.RequestAddress": RequestAddress,
    "IpamDriver.ReleaseAddress": RequestAddress,
}

_ID_PATTERN = re.compile(r"matching regex '[^']*'")


def decode(method: str, raw: bytes) -> Any:
    """The typed body of `method`, or BadBody. An empty body is an empty object."""
    if len(raw) > MAX_BODY:
        raise BadBody(f"{method}: request body of {len(raw)} bytes is larger than {MAX_BODY}")
    kind = BODIES.get(method, Empty)
    if not raw.strip():
        raw = b"{}"
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as e:
        text = _ID_PATTERN.sub("that is a Docker id (12-64 letters or digits)", str(e))
        raise BadBody(f"{method}: invalid request: {text}") from None
    except msgspec.DecodeError as e:
        raise BadBody(f"{method}: request body is not JSON: {e}") from None
    except RecursionError:
        raise BadBody(f"{method}: request body nests too deep; Docker never sends that") from None
