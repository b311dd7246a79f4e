"""Egress for networks created with `--egress`: containers reach the outside through their own host.

```
container ──(default via the anycast gateway .1)──> ovbr0 in the sandbox ──(default via 169.254.77.1)──>
  ovg0 ═veth═ ovh<vni> in the host namespace ──> the host's routes, masqueraded (nftables) to its address
```

Back the same way: the host routes each of its local containers' addresses (`<ip>/32 via
169.254.77.2 dev ovh<vni>`), which is also what lets a DNAT for a published port (CNI `portmap`)
reach the container. The link between sandbox and host uses the same two link-local addresses for
every network (routes name the device, `onlink`), so nothing needs allocating.

One verb, `sync_egress(wanted)`, makes the host hold exactly the egress of the networks listed, and
removes the links and nftables tables of any other network (a crash or a `--egress` network whose
last local endpoint left). NAT and a forwarding guard are one nftables table per network, `ip
overlaynet_egress_<vni>`, replaced as a whole (nftables.py).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from . import nftables
from .errors import KernelError, describe
from .links import converge_link, delete_link, find_link, link_kind
from .names import EGRESS_HOST_PREFIX, EGRESS_SANDBOX_LINK, egress_host_name
from .netns import call_in_netns, sandbox_exists
from .rtnl import rtnl

HOST_LINK_ADDRESS = "169.254.77.1"
SANDBOX_LINK_ADDRESS = "169.254.77.2"
TABLE_PREFIX = "overlaynet_egress_"
RTNH_F_ONLINK = 4
AF_INET = 2


@dataclass(frozen=True)
class EgressSpec:
    vni: int
    subnet: str
    sandbox: str
    local_ips: frozenset[str]
    """This host's containers on the network: each gets a host route (replies, published ports)."""


def _forwarding_on() -> None:
    """IPv4 forwarding in the calling thread's namespace (sysctls under /proc/sys/net are per netns)."""
    with open("/proc/sys/net/ipv4/ip_forward", "r+") as f:
        if f.read().strip() != "1":
            f.seek(0)
            f.write("1")


def _one_address(ipr: IPRoute, index: int, address: str) -> None:
    present = {(a.get("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr(family=AF_INET, index=index)}
    for ip, plen in present - {(address, 32)}:
        ipr.addr("del", index=index, address=ip, prefixlen=plen)
    if (address, 32) not in present:
        ipr.addr("add", index=index, address=address, prefixlen=32)


def _link_pair(host: IPRoute, sandbox: str, name: str) -> int:
    """The veth between sandbox and host, adopted if whole; returns the host end's index."""
    link = find_link(host, name)
    if link is not None and (link_kind(link) != "veth" or link.get("link_netnsid") is None):
        delete_link(host, link["index"])  # our name, but not our pair any more
        link = None
    if link is None:
        fd = os.open(sandbox, os.O_RDONLY | os.O_CLOEXEC)
        try:
            host.link("add", ifname=name, kind="veth", peer={"ifname": EGRESS_SANDBOX_LINK, "net_ns_fd": fd})
        finally:
            os.close(fd)
        link = find_link(host, name)
        assert link is not None
    converge_link(host, link)
    return int(link["index"])


def _sandbox_side(sandbox: str) -> None:
    with rtnl(sandbox) as sb:
        link = find_link(sb, EGRESS_SANDBOX_LINK)
        if link is None:
            raise KernelError(f"{EGRESS_SANDBOX_LINK} missing in sandbox {sandbox} although its host end exists")
        converge_link(sb, link)
        _one_address(sb, link["index"], SANDBOX_LINK_ADDRESS)
        sb.route("replace", dst="0.0.0.0/0", gateway=HOST_LINK_ADDRESS, oif=link["index"], flags=RTNH_F_ONLINK)
    call_in_netns(sandbox, _forwarding_on)


def _host_routes(host: IPRoute, index: int, ips: frozenset[str]) -> None:
    present = {r.get("RTA_DST") for r in host.get_routes(family=AF_INET, oif=index)
               if r["dst_len"] == 32 and r.get("RTA_GATEWAY") == SANDBOX_LINK_ADDRESS}
    for ip in present - ips:
        host.route("del", dst=f"{ip}/32", gateway=SANDBOX_LINK_ADDRESS, oif=index)
    for ip in ips - present:
        host.route("replace", dst=f"{ip}/32", gateway=SANDBOX_LINK_ADDRESS, oif=index, flags=RTNH_F_ONLINK)


def _prefix(cidr: str) -> dict[str, object]:
    addr, _, length = cidr.partition("/")
    return {"prefix": {"addr": addr, "len": int(length)}}


def egress_rules(spec: EgressSpec) -> list[nftables.Command]:
    """The network's NAT and guard.

    NAT: its containers' traffic that leaves the overlay takes the host's address. Guard: forwarding
    and the host routes must not make the host a router *into* the overlay (an underlay neighbour
    routing the subnet via this host, a container of another --egress network): only replies to the
    containers' own connections and published ports (DNAT, e.g. CNI portmap) are forwarded to them.
    """
    table, chain = TABLE_PREFIX + str(spec.vni), "postrouting"
    link = egress_host_name(spec.vni)
    to_sandbox = {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": link}}
    return [
        {"add": {"chain": {"family": "ip", "table": table, "name": "forward", "type": "filter", "hook": "forward",
                           "prio": 0, "policy": "accept"}}},
        {"add": {"rule": {"family": "ip", "table": table, "chain": "forward", "expr": [
            to_sandbox, {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}},
            {"accept": None}]}}},
        {"add": {"rule": {"family": "ip", "table": table, "chain": "forward", "expr": [
            to_sandbox, {"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}},
            {"accept": None}]}}},
        {"add": {"rule": {"family": "ip", "table": table, "chain": "forward", "expr": [
            to_sandbox, {"counter": None}, {"drop": None}]}}},
        {"add": {"chain": {"family": "ip", "table": table, "name": chain, "type": "nat", "hook": "postrouting",
                           "prio": 100, "policy": "accept"}}},
        {"add": {"rule": {"family": "ip", "table": table, "chain": chain, "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                       "right": _prefix(spec.subnet)}},
            {"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                       "right": _prefix(spec.subnet)}},
            {"match": {"op": "!=", "left": {"meta": {"key": "oifname"}}, "right": link}},
            {"masquerade": None},
        ]}}},
    ]


def _ensure(spec: EgressSpec) -> None:
    name = egress_host_name(spec.vni)
    try:
        with rtnl() as host:
            index = _link_pair(host, spec.sandbox, name)
            _one_address(host, index, HOST_LINK_ADDRESS)
            _sandbox_side(spec.sandbox)
            _host_routes(host, index, spec.local_ips)
        _forwarding_on()
    except (NetlinkError, OSError) as exc:
        raise KernelError(f"cannot set up egress for VNI {spec.vni} ({name} <-> {EGRESS_SANDBOX_LINK} in "
                          f"{spec.sandbox}): {describe(exc)}") from None
    nftables.replace_table(None, "ip", TABLE_PREFIX + str(spec.vni), egress_rules(spec))


def _egress_tables() -> set[int]:
    out = nftables.run(None, [{"list": {"tables": {"family": "ip"}}}])
    names = (obj["table"]["name"] for obj in out.get("nftables", []) if "table" in obj)
    return {int(n[len(TABLE_PREFIX):]) for n in names if n.startswith(TABLE_PREFIX) and n[len(TABLE_PREFIX):].isdigit()}


def _egress_links() -> dict[int, int]:
    """VNI -> host-end index of every egress link in the calling namespace."""
    with rtnl() as host:
        out = {}
        for link in host.get_links():
            name = str(link.get("ifname"))
            if name.startswith(EGRESS_HOST_PREFIX) and name[len(EGRESS_HOST_PREFIX):].isdigit():
                out[int(name[len(EGRESS_HOST_PREFIX):])] = int(link["index"])
        return out


def sync_egress(wanted: list[EgressSpec]) -> None:
    """Make the calling namespace hold exactly the egress of `wanted` (see the module's docstring)."""
    for spec in wanted:
        if sandbox_exists(spec.sandbox):
            _ensure(spec)
    keep = {spec.vni for spec in wanted}
    for vni, index in _egress_links().items():
        if vni not in keep:
            try:
                with rtnl() as host:
                    host.link("del", index=index)
            except NetlinkError as exc:
                if exc.code != errno.ENODEV:
                    raise KernelError(f"cannot remove egress link {egress_host_name(vni)}: {describe(exc)}") from None
    for vni in _egress_tables() - keep:
        nftables.delete_table(None, "ip", TABLE_PREFIX + str(vni))
