"""Fuzzing the fast path's per-frame entry points that take what a container sends (through the
TAP): classification against the tables (ARP answered locally, unicast, flood) and the splitting of
TSO / UDP GSO frames under any virtio_net_hdr. Any bytes must give a defined answer or a
ValueError, never a crash; ARP replies are always well-formed. (The receive side: test_vxlan_codec.)
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import raw

from overlaynet.dataplane import fastpath

pytestmark = pytest.mark.unit

KNOWN_MAC, KNOWN_IP = "02:00:00:00:00:02", "198.19.1.2"
TABLES = fastpath.Tables(fdb={KNOWN_MAC: "198.18.0.2", "02:0d:00:00:00:01": "0.0.0.0"},
                         flood=["198.18.0.2", "198.18.0.3"], arp={KNOWN_IP: KNOWN_MAC})
ARP_REQUEST = raw(Ether(src="02:00:00:00:00:01", dst="ff:ff:ff:ff:ff:ff")
                  / ARP(op=1, hwsrc="02:00:00:00:00:01", psrc="198.19.1.1", pdst=KNOWN_IP))
TCP_FRAME = raw(Ether(src="02:00:00:00:00:01", dst=KNOWN_MAC) / IP(src="198.19.1.1", dst=KNOWN_IP)
                / TCP(sport=1, dport=2, flags="PA") / (b"t" * 4000))
UDP_FRAME = raw(Ether(src="02:00:00:00:00:01", dst=KNOWN_MAC) / IP(src="198.19.1.1", dst=KNOWN_IP)
                / UDP(sport=1, dport=2) / (b"u" * 3000))


def mangle(frame: bytes) -> st.SearchStrategy[bytes]:
    """frame with a few bytes overwritten and maybe cut short: gets past the first checks."""
    edits = st.lists(st.tuples(st.integers(0, len(frame) - 1), st.integers(0, 255)), max_size=6)
    return st.tuples(edits, st.integers(0, len(frame))).map(
        lambda t: bytes(_apply(bytearray(frame), t[0]))[: t[1]])


def _apply(buf: bytearray, edits: list[tuple[int, int]]) -> bytearray:
    for at, value in edits:
        buf[at] = value
    return buf


frames = st.one_of(st.binary(max_size=200), mangle(ARP_REQUEST), mangle(TCP_FRAME), mangle(UDP_FRAME))


@settings(max_examples=1500, deadline=None)
@given(frames)
def test_classify_any_frame(frame: bytes) -> None:
    kind, detail = TABLES.classify(frame)
    assert kind in {"drop", "unicast", "flood", "arp_reply", "local"}
    if kind == "arp_reply":
        reply = Ether(detail)
        assert reply[ARP].op == 2 and reply[ARP].psrc == KNOWN_IP and reply[ARP].hwsrc == KNOWN_MAC


vnet_headers = st.builds(lambda flags, gso, hdr_len, size, start, off: struct.pack(
    "<BBHHHH", flags, gso, hdr_len, size, start, off), st.integers(0, 255), st.sampled_from([0, 1, 3, 4, 5, 0x80, 7]),
    st.integers(0, 65535), st.integers(0, 65535), st.integers(0, 65535), st.integers(0, 65535))


@settings(max_examples=1500, deadline=None)
@given(vnet_headers, frames)
def test_segment_any_header_and_frame(vnet_hdr: bytes, frame: bytes) -> None:
    try:
        out = fastpath.segment(vnet_hdr, frame)
    except ValueError:
        return  # refused: the caller counts it and drops the frame
    assert isinstance(out, list) and all(isinstance(seg, bytes) for seg in out)
    assert sum(len(seg) for seg in out) <= len(frame) * 2 + 64 * len(out)  # headers repeat, nothing else grows
