"""Networks and endpoints: pure data and the rules that make them valid. No I/O here."""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from overlaynet.errors import BadRequest
from overlaynet.rules import DNS_LABEL_RE as DNS_LABEL_RE
from overlaynet.rules import MAX_DNS_NAME as MAX_DNS_NAME
from overlaynet.rules import MAX_NAMES as MAX_NAMES
from overlaynet.rules import MAX_VNI, MIN_VNI
from overlaynet.rules import usable_dns_names as usable_dns_names
from overlaynet.rules import validate_dns_name as validate_dns_name
from overlaynet.rules import validate_dns_names as validate_dns_names

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
# Automatic VNIs come from this range; 1..4095 are left for operators who pick their own.
AUTO_VNI_FIRST = 4096
AUTO_VNI_COUNT = MAX_VNI - AUTO_VNI_FIRST + 1
MIN_MTU = 576  # below this IPv4 itself stops working
MAX_MTU = 9000 - 50
VXLAN_OVERHEAD = 50  # outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
# Ranges that can never be an overlay subnet: their addresses mean something else to every host.
UNUSABLE_RANGES = {
    ipaddress.IPv4Network("0.0.0.0/8"): "'this network' (0.0.0.0/8)",
    ipaddress.IPv4Network("127.0.0.0/8"): "loopback (127.0.0.0/8)",
    ipaddress.IPv4Network("224.0.0.0/4"): "multicast (224.0.0.0/4)",
    ipaddress.IPv4Network("240.0.0.0/4"): "reserved (240.0.0.0/4)",
}
GATEWAY_MAC_PREFIX = "02:0d:00:"
"""Every network's anycast gateway MAC starts so (then the VNI): no endpoint may take one."""


def validate_name(name: object) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise BadRequest(
            f"invalid network name {name!r}: use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def validate_subnet(subnet: object) -> ipaddress.IPv4Network:
    if not isinstance(subnet, str):
        raise BadRequest("missing subnet: give one in CIDR form, e.g. 198.19.1.0/24")
    try:
        net = ipaddress.ip_network(subnet, strict=True)
    except ValueError as e:
        if "has host bits set" in str(e):
            raise BadRequest(
                f"invalid subnet {subnet!r}: host bits are set; did you mean "
                f"{ipaddress.ip_network(subnet, strict=False)}?"
            ) from None
        raise BadRequest(f"invalid subnet {subnet!r}: expected IPv4 CIDR such as 198.19.1.0/24") from None
    if not isinstance(net, ipaddress.IPv4Network):
        raise BadRequest(f"invalid subnet {subnet!r}: only IPv4 overlay subnets are supported")
    if net.prefixlen > 30:
        raise BadRequest(f"subnet {subnet} is too small: use /30 or larger (at least 2 usable addresses)")
    for reserved, meaning in UNUSABLE_RANGES.items():
        if net.overlaps(reserved):
            raise BadRequest(f"subnet {subnet} overlaps {meaning}, which cannot carry container addresses; "
                             "pick a private range such as 10.10.0.0/24")
    return net


def check_clear_of_underlay(subnet: ipaddress.IPv4Network, underlay: list[str], vteps: list[str]) -> None:
    """Refuse an overlay subnet that overlaps the underlay: a container would take a host's address,
    and traffic meant for the underlay would be routed into the overlay (or the reverse)."""
    for cidr in underlay:
        if subnet.overlaps(ipaddress.IPv4Network(cidr, strict=False)):
            raise BadRequest(f"subnet {subnet} overlaps this host's underlay network {cidr}; "
                             "overlay and underlay must not overlap, pick another subnet")
    for vtep in vteps:
        if ipaddress.IPv4Address(vtep) in subnet:
            raise BadRequest(f"subnet {subnet} contains the underlay address {vtep} of a cluster member; "
                             "overlay and underlay must not overlap, pick another subnet")


def validate_vni(vni: object) -> int:
    if isinstance(vni, bool) or not isinstance(vni, int) or not MIN_VNI <= vni <= MAX_VNI:
        raise BadRequest(f"VNI {vni!r} out of range: choose {MIN_VNI}..{MAX_VNI}")
    return vni


def validate_mtu(mtu: object) -> int:
    if isinstance(mtu, bool) or not isinstance(mtu, int) or not MIN_MTU <= mtu <= MAX_MTU:
        raise BadRequest(f"MTU {mtu!r} out of range: choose {MIN_MTU}..{MAX_MTU}")
    return mtu


def parse_mac(mac: object) -> str:
    """Six hex pairs (':' or '-' between them) in canonical form, lower case with ':'. Raises
    ValueError. The syntax alone: validate_mac adds what an endpoint's MAC must also be."""
    value = mac.lower().replace("-", ":") if isinstance(mac, str) else ""
    if not MAC_RE.match(value):
        raise ValueError(f"invalid MAC address {mac!r}: expected six hex pairs such as 02:00:c6:13:01:02")
    return value


def validate_mac(mac: object) -> str:
    try:
        value = parse_mac(mac)
    except ValueError as e:
        raise BadRequest(str(e)) from None
    first = int(value[:2], 16)
    if first & 1:
        raise BadRequest(f"invalid MAC address {mac}: it is multicast; the first byte must be even")
    if value == "00:00:00:00:00:00":
        raise BadRequest("invalid MAC address 00:00:00:00:00:00")
    if value.startswith(GATEWAY_MAC_PREFIX):
        raise BadRequest(f"MAC address {mac} is reserved for overlaynet's anycast gateways "
                         f"({GATEWAY_MAC_PREFIX}xx:xx:xx); pick another or omit the MAC")
    return value


def validate_ifname(ifname: object) -> str:
    if not isinstance(ifname, str) or not IFNAME_RE.match(ifname) or ifname in (".", ".."):
        raise BadRequest(f"invalid interface name {ifname!r}: 1-15 letters, digits, '.', '_' or '-'")
    return ifname


def validate_labels(labels: object) -> dict[str, str]:
    if labels is None:
        return {}
    if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise BadRequest("labels must be a JSON object of string keys and string values")
    if len(labels) > 32 or any(len(k) > 128 or len(v) > 1024 for k, v in labels.items()):
        raise BadRequest("too many or too long labels: at most 32, keys 128 and values 1024 characters")
    return dict(labels)


def gateway_mac(vni: int) -> str:
    """The anycast gateway's MAC: the same on every host for one network, unique per VNI.

    Locally administered unicast (02), then 0d ("DNS"), then the 24-bit VNI: every host's bridge
    answers ARP for the gateway address with this one MAC, so duplicate answers are identical.
    """
    vni = validate_vni(vni)
    return GATEWAY_MAC_PREFIX + ":".join(f"{b:02x}" for b in vni.to_bytes(3, "big"))


def auto_vni(name: str, taken: set[int]) -> int:
    """A VNI derived from the name, so hosts that create the same name concurrently agree on it.

    Linear probing past VNIs already in use keeps it unique in the cluster.
    """
    start = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big") % AUTO_VNI_COUNT
    for i in range(AUTO_VNI_COUNT):
        vni = AUTO_VNI_FIRST + (start + i) % AUTO_VNI_COUNT
        if vni not in taken:
            return vni
    raise BadRequest("no free VNI left")


def mac_for(endpoint_id: str) -> str:
    """A stable, locally administered unicast MAC derived from the endpoint id."""
    digest = hashlib.sha256(endpoint_id.encode()).digest()
    mac = "02:" + ":".join(f"{b:02x}" for b in digest[:5])
    if mac.startswith(GATEWAY_MAC_PREFIX):  # one id in 65536: step out of the gateways' range
        mac = "02:" + ":".join(f"{b:02x}" for b in digest[5:10])
    return mac


@dataclass
class Network:
    name: str
    vni: int
    subnet: str
    mtu: int
    gateway: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    owner: str = ""
    egress: bool = False  # containers reach the outside through their host (NAT), docs/cni.md
    # ESP between hosts, fail closed (docs/encryption.md); fixed when the network is created.
    encrypted: bool = False

    @property
    def ip_network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)

    @property
    def gateway_cidr(self) -> str | None:
        """The anycast gateway's address on every host's bridge ("IP/prefixlen"), if there is one."""
        return f"{self.gateway}/{self.ip_network.prefixlen}" if self.gateway else None

    @property
    def gateway_mac(self) -> str | None:
        return gateway_mac(self.vni) if self.gateway else None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if not self.encrypted:
            del data["encrypted"]  # a plain network's record stays as it was before the flag existed
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Network:
        """From a state file or a `networks` table row (the same form). Raises ValueError for what
        is not a network record (a peer's bug must not reach the dataplane)."""
        try:
            net = cls(
                name=data["name"],
                vni=int(data["vni"]),
                subnet=data["subnet"],
                mtu=int(data["mtu"]),
                gateway=data.get("gateway"),
                options=dict(data.get("options") or {}),
                created_at=float(data.get("created_at") or 0.0),
                owner=data.get("owner") or "",
                egress=data.get("egress") is True,
                encrypted=data.get("encrypted") is True,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not a network record: {type(e).__name__} {e}") from None
        if type(net.name) is not str or type(net.subnet) is not str or type(net.owner) is not str \
                or not (net.gateway is None or type(net.gateway) is str):
            raise ValueError(f"not a network record: wrong types in {data!r:.200}")
        return net


@dataclass
class Endpoint:
    id: str
    network: str
    ip: str
    prefixlen: int
    mac: str
    ifname: str
    netns: str | None
    mtu: int
    host: str
    vtep: str
    created_at: float = 0.0
    labels: dict[str, str] = field(default_factory=dict)  # who made it and why, e.g. {"owner": "cni"}
    names: list[str] = field(default_factory=list)  # DNS names, answered by every host's DNS (dns.md)

    @property
    def address_cidr(self) -> str:
        return f"{self.ip}/{self.prefixlen}"

    @property
    def record(self) -> EndpointRecord:
        """What the cluster learns about this endpoint (its row in the `endpoints` table)."""
        return EndpointRecord(id=self.id, network=self.network, ip=self.ip, prefixlen=self.prefixlen,
                              mac=self.mac, host=self.host, vtep=self.vtep, names=tuple(self.names))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Endpoint:
        return cls(
            id=data["id"],
            network=data["network"],
            ip=data["ip"],
            prefixlen=int(data["prefixlen"]),
            mac=data["mac"],
            ifname=data.get("ifname") or "eth0",
            netns=data.get("netns"),
            mtu=int(data["mtu"]),
            host=data.get("host") or "",
            vtep=data.get("vtep") or "",
            created_at=float(data.get("created_at") or 0.0),
            labels={str(k): str(v) for k, v in (data.get("labels") or {}).items()},
            names=[str(n) for n in (data.get("names") or [])],
        )


@dataclass(frozen=True)
class EndpointRecord:
    """One endpoint as every host sees it: its row in the replicated `endpoints` table, written by
    the host it lives on. Hosts running other versions read and write the same record, so its wire
    form (`to_record`, a dict in this key order) does not change; `from_record` also reads the
    records of versions before DNS names (no `names`)."""

    id: str
    network: str
    ip: str
    prefixlen: int
    mac: str
    host: str
    vtep: str
    names: tuple[str, ...] = ()

    def to_record(self) -> dict[str, Any]:
        return {"id": self.id, "network": self.network, "ip": self.ip, "prefixlen": self.prefixlen,
                "mac": self.mac, "host": self.host, "vtep": self.vtep, "names": list(self.names)}

    @classmethod
    def from_record(cls, value: dict[str, Any]) -> EndpointRecord:
        """Raises ValueError for a record that is not one (a peer's bug must not reach the dataplane)."""
        names = value.get("names", [])  # absent in the records of versions before DNS names
        try:
            record = cls(id=value["id"], network=value["network"], ip=value["ip"], prefixlen=value["prefixlen"],
                         mac=value["mac"], host=value["host"], vtep=value["vtep"],
                         names=tuple(names) if type(names) is list else ())
        except KeyError as e:
            raise ValueError(f"not an endpoint record: no {e}") from None
        texts = (record.id, record.network, record.ip, record.mac, record.host, record.vtep, *record.names)
        if type(names) is not list or type(record.prefixlen) is not int or any(type(t) is not str for t in texts):
            raise ValueError(f"not an endpoint record: wrong types in {value!r:.200}")
        return record
