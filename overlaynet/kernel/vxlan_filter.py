"""The members-only filter for VXLAN in the host namespace (kernel dataplane).

The Linux VXLAN device accepts a packet from any sender that knows the VNI. This nftables table
admits UDP to the VXLAN port only from the cluster's current VTEP addresses (a set), and counts
and drops the rest before the VXLAN socket sees it:

    table ip overlaynet_vxlan {
        set members { type ipv4_addr; }
        chain input { type filter hook input priority 0; policy accept;
                      udp dport 4789 goto vxlan }
        chain vxlan { ip saddr @members @th,135,1 0 accept
                      ip saddr != @members counter drop
                      @th,135,1 1 meter peer_bum { ip saddr limit rate over R/second
                                                   burst R packets } counter drop }
    }

The third rule is the per-peer cap on broadcast/multicast frames (`peer_bum_rate`, the same
budget the userspace fast path applies per peer): `@th,135,1` is the group bit of the inner
destination MAC (UDP header 8 bytes + VXLAN header 8 bytes = byte 16 of the transport header, its
lowest bit). One token bucket per peer address, whatever inner source MACs it uses. GRO does not
blur the count: the kernel merges no broadcast frames (ARP and inner UDP are not aggregated).

Every packet pays for this filter (a netfilter hook pass), so the common case is the cheapest:
the VXLAN port is compared once, in the base chain (other UDP leaves after one rule), and unicast
from a member is accepted by the first rule of `vxlan`, one set lookup; only what remains
(non-members, broadcast/multicast) goes on to the drop and the meter.

The agent's programming pass calls `sync_vxlan_members` whenever membership changes; the set is
swapped in one transaction (flush + add), so there is no instant without a filter or with a half
set. The table outlives overlayd on purpose (like the VXLAN devices): a restart keeps the filter.
Not covered: a packet whose outer source is forged to a member's address (docs/security.md).
"""

from __future__ import annotations

from typing import Any

from . import nftables

TABLE = "overlaynet_vxlan"
FAMILY = "ip"
SET = "members"
PEER_BUM_SET = "peer_bum"
CHAIN = "input"
VXLAN_CHAIN = "vxlan"  # reached only by UDP to the VXLAN port
_GROUP_BIT = {"payload": {"base": "th", "offset": 135, "len": 1}}  # of the inner destination MAC


def _elements(vteps: set[str]) -> list[nftables.Command]:
    if not vteps:
        return []  # nft refuses an empty element list; an empty set admits nobody
    return [{"add": {"element": {"family": FAMILY, "table": TABLE, "name": SET, "elem": sorted(vteps)}}}]


def _saddr(op: str) -> nftables.Command:
    return {"match": {"op": op, "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": f"@{SET}"}}


def _peer_bum_rule(peer_bum_rate: int) -> list[nftables.Command]:
    if not peer_bum_rate:
        return []  # 0: no per-peer cap
    table = {"family": FAMILY, "table": TABLE}
    over = {"limit": {"rate": peer_bum_rate, "per": "second", "burst": peer_bum_rate, "inv": True}}
    return [
        {"add": {"rule": {**table, "chain": VXLAN_CHAIN, "comment": "peer_bum", "expr": [
            {"match": {"op": "==", "left": _GROUP_BIT, "right": 1}},
            {"meter": {"name": PEER_BUM_SET, "key": {"payload": {"protocol": "ip", "field": "saddr"}},
                       "stmt": over}},
            {"counter": None},
            {"drop": None},
        ]}}},
    ]


def _body(port: int, vteps: set[str], peer_bum_rate: int) -> list[nftables.Command]:
    table = {"family": FAMILY, "table": TABLE}
    return [
        {"add": {"set": {**table, "name": SET, "type": "ipv4_addr"}}},
        {"add": {"chain": {**table, "name": CHAIN, "type": "filter", "hook": "input", "prio": 0,
                           "policy": "accept"}}},
        {"add": {"chain": {**table, "name": VXLAN_CHAIN}}},
        {"add": {"rule": {**table, "chain": CHAIN, "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": port}},
            {"goto": {"target": VXLAN_CHAIN}},
        ]}}},
        {"add": {"rule": {**table, "chain": VXLAN_CHAIN, "comment": "member_unicast", "expr": [
            _saddr("=="), {"match": {"op": "==", "left": _GROUP_BIT, "right": 0}}, {"accept": None},
        ]}}},
        {"add": {"rule": {**table, "chain": VXLAN_CHAIN, "expr": [_saddr("!="), {"counter": None}, {"drop": None}]}}},
        *_peer_bum_rule(peer_bum_rate),
        *_elements(vteps),
    ]


def _rules(objects: list[nftables.Command], chain: str = VXLAN_CHAIN) -> list[dict[str, Any]]:
    return [dict(obj["rule"]) for obj in objects if obj.get("rule", {}).get("chain") == chain]


def _filter_rule(objects: list[nftables.Command]) -> dict[str, Any] | None:
    """The members-only rule (the one that drops what is not from @members)."""
    for rule in _rules(objects):
        if any(isinstance(e, dict) and e.get("match", {}).get("op") == "!=" for e in rule.get("expr", [])):
            return rule
    return None


def _peer_bum_limit(objects: list[nftables.Command]) -> dict[str, Any] | None:
    for rule in _rules(objects):
        if rule.get("comment") == "peer_bum":
            return rule
    return None


def _current_layout(objects: list[nftables.Command]) -> bool:
    """Whether the table has this version's rules (a table an older overlayd made is replaced)."""
    return any(rule.get("comment") == "member_unicast" for rule in _rules(objects))


def _rule_rate(rule: dict[str, Any] | None) -> int:
    for expr in (rule or {}).get("expr", []):
        if isinstance(expr, dict) and "meter" in expr:
            stmt = expr["meter"].get("stmt", {})
            if isinstance(stmt, dict) and "limit" in stmt:
                return int(stmt["limit"]["rate"])
    return 0


def _counted(rule: dict[str, Any] | None) -> int:
    for expr in (rule or {}).get("expr", []):
        if isinstance(expr, dict) and isinstance(expr.get("counter"), dict):
            return int(expr["counter"].get("packets", 0))
    return 0


def _port(objects: list[nftables.Command]) -> int | None:
    """The UDP port the base chain sends to the filter."""
    for rule in _rules(objects, CHAIN):
        for expr in rule.get("expr", []):
            match = expr.get("match") if isinstance(expr, dict) else None
            if match and match.get("left", {}).get("payload", {}).get("field") == "dport":
                return int(match["right"])
    return None


def sync_vxlan_members(port: int, vteps: set[str], netns: str | None = None, peer_bum_rate: int = 0) -> None:
    """Admit VXLAN on `port` only from `vteps` (in the calling thread's netns, or `netns`), and at most
    `peer_bum_rate` broadcast/multicast frames per second from each of them (0: no cap)."""
    objects = nftables.list_table(netns, FAMILY, TABLE)
    if not _current_layout(objects) or _port(objects) != port or _rule_rate(_peer_bum_limit(objects)) != peer_bum_rate:
        nftables.replace_table(netns, FAMILY, TABLE, _body(port, vteps, peer_bum_rate))
        return
    flush = {"flush": {"set": {"family": FAMILY, "table": TABLE, "name": SET}}}
    nftables.run(netns, [flush, *_elements(vteps)])


def vxlan_non_member_drops(netns: str | None = None) -> int:
    """Packets the filter dropped since the table was made (0 if there is none)."""
    return _counted(_filter_rule(nftables.list_table(netns, FAMILY, TABLE)))


def vxlan_peer_bum_drops(netns: str | None = None) -> int:
    """Broadcast/multicast frames from members dropped by the per-peer cap since the table was made."""
    return _counted(_peer_bum_limit(nftables.list_table(netns, FAMILY, TABLE)))


def remove_vxlan_filter(netns: str | None = None) -> None:
    nftables.delete_table(netns, FAMILY, TABLE)
