"""The members-only filter for VXLAN in the host namespace (kernel dataplane).

The Linux VXLAN device accepts a packet from any sender that knows the VNI. This nftables table
admits UDP to the VXLAN port only from the cluster's current VTEP addresses (a set), and counts
and drops the rest before the VXLAN socket sees it:

    table ip overlaynet_vxlan {
        set members { type ipv4_addr; }
        chain input { type filter hook input priority 0; policy accept;
                      udp dport 4789 ip saddr != @members counter drop }
    }

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
CHAIN = "input"


def _elements(vteps: set[str]) -> list[nftables.Command]:
    if not vteps:
        return []  # nft refuses an empty element list; an empty set admits nobody
    return [{"add": {"element": {"family": FAMILY, "table": TABLE, "name": SET, "elem": sorted(vteps)}}}]


def _body(port: int, vteps: set[str]) -> list[nftables.Command]:
    table = {"family": FAMILY, "table": TABLE}
    return [
        {"add": {"set": {**table, "name": SET, "type": "ipv4_addr"}}},
        {"add": {"chain": {**table, "name": CHAIN, "type": "filter", "hook": "input", "prio": 0,
                           "policy": "accept"}}},
        {"add": {"rule": {**table, "chain": CHAIN, "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": port}},
            {"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": f"@{SET}"}},
            {"counter": None},
            {"drop": None},
        ]}}},
        *_elements(vteps),
    ]


def _filter_rule(objects: list[nftables.Command]) -> dict[str, Any] | None:
    for obj in objects:
        rule = obj.get("rule")
        if rule and rule.get("chain") == CHAIN:
            return dict(rule)
    return None


def _rule_port(rule: dict[str, Any]) -> int | None:
    for expr in rule.get("expr", []):
        match = expr.get("match") if isinstance(expr, dict) else None
        if match and match.get("left", {}).get("payload", {}).get("field") == "dport":
            return int(match["right"])
    return None


def sync_vxlan_members(port: int, vteps: set[str], netns: str | None = None) -> None:
    """Admit VXLAN on `port` only from `vteps` (in the calling thread's netns, or `netns`)."""
    rule = _filter_rule(nftables.list_table(netns, FAMILY, TABLE))
    if rule is None or _rule_port(rule) != port:
        nftables.replace_table(netns, FAMILY, TABLE, _body(port, vteps))
        return
    flush = {"flush": {"set": {"family": FAMILY, "table": TABLE, "name": SET}}}
    nftables.run(netns, [flush, *_elements(vteps)])


def vxlan_non_member_drops(netns: str | None = None) -> int:
    """Packets the filter dropped since the table was made (0 if there is none)."""
    rule = _filter_rule(nftables.list_table(netns, FAMILY, TABLE))
    for expr in (rule or {}).get("expr", []):
        if isinstance(expr, dict) and isinstance(expr.get("counter"), dict):
            return int(expr["counter"].get("packets", 0))
    return 0


def remove_vxlan_filter(netns: str | None = None) -> None:
    nftables.delete_table(netns, FAMILY, TABLE)
