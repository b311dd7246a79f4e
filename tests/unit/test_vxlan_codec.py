"""VXLAN encapsulation/decapsulation against scapy's VXLAN layer, and fuzzing of the receive check."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Raw, raw

from overlaynet.dataplane import fastpath

pytestmark = pytest.mark.unit

INNER = raw(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src="198.19.1.1", dst="198.19.1.2")
            / UDP(sport=1000, dport=2000) / Raw(b"hello"))


def scapy_vxlan(vni: int, inner: bytes) -> bytes:
    # scapy turns on VXLAN-GPE bits when an Ether layer follows; RFC 7348 VXLAN has only the I flag
    return raw(VXLAN(flags=0x08, reserved1=0, vni=vni)) + inner


@pytest.mark.parametrize("vni", [0, 1, 4097, 0xABCDEF, 0xFFFFFF])
def test_encapsulation_decodes_with_scapy(vni: int) -> None:
    pkt = VXLAN(fastpath.encapsulate(vni, INNER))
    assert pkt.flags == 0x08  # I flag only
    assert pkt.vni == vni
    assert pkt.reserved1 == 0 and pkt.reserved2 == 0
    assert raw(pkt.payload) == INNER
    assert fastpath.encapsulate(vni, INNER)[:8] == bytes([8, 0, 0, 0, vni >> 16, (vni >> 8) & 255, vni & 255, 0])


@pytest.mark.parametrize("vni", [0, 7, 4097, 0xFFFFFF])
def test_scapy_packets_decapsulate(vni: int) -> None:
    assert fastpath.decapsulate(scapy_vxlan(vni, INNER)) == (vni, INNER)


def test_outer_udp_from_scapy_round_trip() -> None:
    outer = IP(src="198.18.0.1", dst="198.18.0.2") / UDP(sport=40000, dport=4789) / Raw(fastpath.encapsulate(42, INNER))
    parsed = IP(raw(outer))
    assert parsed[VXLAN].vni == 42
    assert raw(parsed[VXLAN].payload) == INNER


def test_vni_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError):
        fastpath.encapsulate(1 << 24, INNER)


@pytest.mark.parametrize(
    "header, reason",
    [
        (bytes([0x00, 0, 0, 0, 0, 0, 1, 0]), "bad_flags"),  # I flag missing
        (bytes([0x0C, 0, 0, 0, 0, 0, 1, 0]), "bad_flags"),  # GPE next-protocol bit
        (bytes([0x88, 0, 0, 0, 0, 0, 1, 0]), "bad_flags"),  # GBP bit
        (bytes([0x08, 0, 0, 3, 0, 0, 1, 0]), "bad_flags"),  # reserved byte 3
        (bytes([0x08, 0, 0, 0, 0, 0, 1, 1]), "bad_flags"),  # reserved last byte
    ],
)
def test_reserved_bits_are_dropped(header: bytes, reason: str) -> None:
    with pytest.raises(fastpath.DecapError) as e:
        fastpath.decapsulate(header + INNER)
    assert e.value.reason == reason


@pytest.mark.parametrize("n", [0, 1, 7, 8, 21])
def test_truncated_packets_are_dropped(n: int) -> None:
    with pytest.raises(fastpath.DecapError) as e:
        fastpath.decapsulate(scapy_vxlan(1, INNER)[:n])
    assert e.value.reason == "truncated"


@pytest.mark.parametrize("src", ["01:00:5e:00:00:01", "ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00"])
def test_inner_frames_with_invalid_source_mac_are_dropped(src: str) -> None:
    inner = raw(Ether(src=src, dst="02:00:00:00:00:02") / Raw(b"x" * 50))
    with pytest.raises(fastpath.DecapError) as e:
        fastpath.decapsulate(scapy_vxlan(1, inner))
    assert e.value.reason == "bad_inner"


def _valid(data: bytes) -> bool:
    if len(data) < 22 or data[0] != 0x08 or data[1] or data[2] or data[3] or data[7]:
        return False
    src = data[14:20]
    return not (src[0] & 1) and any(src)


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_decapsulation_never_delivers_malformed(data: bytes) -> None:
    try:
        vni, inner = fastpath.decapsulate(data)
    except fastpath.DecapError as e:
        assert e.reason in {"truncated", "bad_flags", "bad_inner"}
        assert not _valid(data)
        return
    assert _valid(data)
    assert vni == int.from_bytes(data[4:7], "big")
    assert inner == data[8:] and len(inner) >= 14


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 0xFFFFFF), st.binary(min_size=0, max_size=300))
def test_fuzz_round_trip(vni: int, payload: bytes) -> None:
    inner = bytes.fromhex("020000000002" "020000000001" "0800") + payload
    assert fastpath.decapsulate(fastpath.encapsulate(vni, inner)) == (vni, inner)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=2000))
def test_fuzz_receive_path_never_crashes(data: bytes) -> None:
    # the whole per-frame receive logic (L3/L4 parsing, checksum checks, coalescing) on garbage
    out = fastpath.coalesce([data, data, data[: len(data) // 2]], mtu=1450)
    assert len(out) >= 1
    for frame in out:
        assert len(frame) >= 10
