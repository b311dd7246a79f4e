"""kernel.sync_vxlan_members: the members-only nftables filter, programmed in a namespace and read
back with `nft -j` (an independent view of what the kernel holds)."""

from __future__ import annotations

import json
import subprocess

import pytest

from overlaynet import kernel

pytestmark = pytest.mark.integration


def ruleset(ns: str) -> list[dict]:
    out = subprocess.run(["ip", "netns", "exec", ns, "nft", "-j", "list", "table", "ip", "overlaynet_vxlan"],
                         capture_output=True, text=True, check=True).stdout
    return [o for o in json.loads(out)["nftables"] if "metainfo" not in o]


def members(ns: str) -> set[str]:
    sets = [o["set"] for o in ruleset(ns) if "set" in o]
    return set(sets[0].get("elem", []))


def dports(ns: str) -> list[int]:
    return [e["match"]["right"] for o in ruleset(ns) if "rule" in o for e in o["rule"]["expr"]
            if "match" in e and e["match"]["left"].get("payload", {}).get("field") == "dport"]


def test_members_follow_membership_and_the_rule_follows_the_port(netns):
    ns = netns("vf")
    path = f"/run/netns/{ns}"
    kernel.sync_vxlan_members(4789, set(), netns=path)
    assert members(ns) == set() and dports(ns) == [4789]  # nobody is a member: everything dropped
    kernel.sync_vxlan_members(4789, {"198.18.0.2", "198.18.0.3"}, netns=path)
    kernel.sync_vxlan_members(4789, {"198.18.0.2", "198.18.0.3"}, netns=path)  # idempotent
    assert members(ns) == {"198.18.0.2", "198.18.0.3"} and dports(ns) == [4789]
    kernel.sync_vxlan_members(4789, {"198.18.0.3"}, netns=path)
    assert members(ns) == {"198.18.0.3"}
    kernel.sync_vxlan_members(8472, {"198.18.0.4"}, netns=path)  # another port: one rule, for it
    assert members(ns) == {"198.18.0.4"} and dports(ns) == [8472]
    assert kernel.vxlan_non_member_drops(netns=path) == 0
    kernel.remove_vxlan_filter(netns=path)
    gone = subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "table", "ip", "overlaynet_vxlan"],
                          capture_output=True, text=True)
    assert gone.returncode != 0


def test_a_table_an_older_overlayd_made_is_replaced_by_this_layout(netns):
    """Before the fast rule for members' unicast, the chain `input` held the drop and meter rules
    itself; a restarted overlayd must not keep that layout (nor program a set into it)."""
    ns = netns("vf")
    path = f"/run/netns/{ns}"
    old = ("table ip overlaynet_vxlan {\n set members { type ipv4_addr; elements = { 198.18.0.9 }; }\n"
           " chain input { type filter hook input priority 0; policy accept;\n"
           "  udp dport 4789 ip saddr != @members counter drop\n }\n}\n")
    subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=old, text=True, check=True)
    kernel.sync_vxlan_members(4789, {"198.18.0.2"}, netns=path)  # same port, no per-peer cap: as it was
    rules = [o["rule"] for o in ruleset(ns) if "rule" in o]
    assert [r["chain"] for r in rules] == ["input", "vxlan", "vxlan"], rules
    assert rules[1].get("comment") == "member_unicast", rules
    assert members(ns) == {"198.18.0.2"} and dports(ns) == [4789]
    kernel.sync_vxlan_members(4789, {"198.18.0.2", "198.18.0.3"}, netns=path, peer_bum_rate=100)
    assert members(ns) == {"198.18.0.2", "198.18.0.3"}
    assert [o["rule"].get("comment") for o in ruleset(ns) if "rule" in o] == [None, "member_unicast", None, "peer_bum"]
    assert kernel.vxlan_non_member_drops(netns=path) == 0 and kernel.vxlan_peer_bum_drops(netns=path) == 0
    kernel.remove_vxlan_filter(netns=path)
