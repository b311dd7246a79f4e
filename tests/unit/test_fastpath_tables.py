"""Forwarding decisions: FDB unicast, head-end replication, ARP suppression."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import raw

from overlaynet.dataplane import fastpath

pytestmark = pytest.mark.unit

A, B, C = "02:00:00:00:00:0a", "02:00:00:00:00:0b", "02:00:00:00:00:0c"
FLOOD = ["198.18.0.2", "198.18.0.3", "198.18.0.4"]


def tables() -> fastpath.Tables:
    return fastpath.Tables(fdb={B: "198.18.0.2", C: "198.18.0.3"}, flood=FLOOD,
                           arp={"198.19.1.2": B, "198.19.1.3": C})


def ip_frame(dst: str) -> bytes:
    return raw(Ether(src=A, dst=dst) / IP(src="198.19.1.1", dst="198.19.1.9"))


def arp_request(target: str, sender_ip: str = "198.19.1.1", src: str = A) -> bytes:
    return raw(Ether(src=src, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=src, psrc=sender_ip, pdst=target))


def test_known_unicast_goes_to_its_vtep() -> None:
    assert tables().classify(ip_frame(B)) == ("unicast", "198.18.0.2")
    assert tables().classify(ip_frame(C)) == ("unicast", "198.18.0.3")


@pytest.mark.parametrize("dst", ["02:00:00:00:00:99", "ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:01", "33:33:00:00:00:01"])
def test_broadcast_multicast_and_unknown_unicast_are_replicated(dst: str) -> None:
    assert tables().classify(ip_frame(dst)) == ("flood", FLOOD)


def test_arp_request_for_known_ip_is_answered_locally() -> None:
    kind, reply = tables().classify(arp_request("198.19.1.2"))
    assert kind == "arp_reply"
    pkt = Ether(reply)
    assert pkt.dst == A and pkt.src == B
    assert pkt[ARP].op == 2 and pkt[ARP].hwsrc == B and pkt[ARP].psrc == "198.19.1.2"
    assert pkt[ARP].hwdst == A and pkt[ARP].pdst == "198.19.1.1"


def test_arp_for_unknown_ip_and_gratuitous_arp_are_flooded() -> None:
    assert tables().classify(arp_request("198.19.1.77"))[0] == "flood"
    assert tables().classify(arp_request("198.19.1.2", sender_ip="198.19.1.2", src=B))[0] == "flood"
    reply = raw(Ether(src=A, dst="ff:ff:ff:ff:ff:ff") / ARP(op=2, hwsrc=A, psrc="198.19.1.1", pdst="198.19.1.2"))
    assert tables().classify(reply)[0] == "flood"


def test_empty_tables_flood_to_nobody_and_runts_drop() -> None:
    t = fastpath.Tables()
    assert t.classify(ip_frame(B)) == ("flood", [])
    assert t.classify(b"\x02" * 10) == ("drop", None)


def test_large_tables() -> None:
    fdb = {f"02:00:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}": f"198.18.{i >> 8 & 255}.{i & 255 or 1}"
           for i in range(1, 20000)}
    t = fastpath.Tables(fdb=fdb, flood=FLOOD)
    for mac, vtep in list(fdb.items())[::997]:
        assert t.classify(ip_frame(mac)) == ("unicast", vtep)


def test_bad_table_entries_are_refused() -> None:
    with pytest.raises(ValueError):
        fastpath.Tables(fdb={"nonsense": "198.18.0.2"})
    with pytest.raises(OSError):
        fastpath.Tables(flood=["not-an-ip"])


def test_frames_for_this_hosts_bridge_are_neither_answered_nor_sent() -> None:
    """The anycast gateway's MAC is local (VTEP 0.0.0.0): the bridge answers ARP for it itself, so
    the fast path must not answer a second time, flood the request, or send frames for it away."""
    gw_mac, gw_ip = "02:0d:00:00:10:01", "198.19.1.254"
    t = fastpath.Tables(fdb={B: "198.18.0.2", gw_mac: fastpath.LOCAL_VTEP}, flood=FLOOD,
                        arp={"198.19.1.2": B, gw_ip: gw_mac})
    assert t.classify(arp_request(gw_ip)) == ("local", None)
    assert t.classify(ip_frame(gw_mac)) == ("local", None)
    # the bridge's own broadcasts (ARP for a local container) stay on this host
    from_bridge = raw(Ether(src=gw_mac, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=gw_mac, psrc=gw_ip,
                                                                      pdst="198.19.1.7"))
    assert t.classify(from_bridge) == ("local", None)
    assert t.classify(arp_request("198.19.1.2"))[0] == "arp_reply"  # remote entries unchanged
    assert t.classify(ip_frame(B)) == ("unicast", "198.18.0.2")
