"""The checksum loop (AVX2 and portable) and receive coalescing of frames the outer UDP checksum covered."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw, raw
from test_fastpath_frames import DATA_VALID, GSO_TCPV4, NEEDS_CSUM, checksums_ok, partial_field, split, unvnet

from overlaynet.dataplane import fastpath

pytestmark = pytest.mark.unit

ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


def reference_sum(data: bytes) -> int:
    """RFC 1071 sum in memory byte order (little-endian words on x86), folded, not inverted."""
    if len(data) % 2:
        data += b"\0"
    s = sum(int.from_bytes(data[i:i + 2], "little") for i in range(0, len(data), 2))
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return s


@pytest.fixture(params=["avx2", "portable"])
def impl(request: pytest.FixtureRequest) -> Iterator[str]:
    fastpath.checksum_allow_avx2(request.param == "avx2")
    try:
        if request.param == "avx2" and fastpath.checksum_impl() != "avx2":
            pytest.skip("this CPU has no AVX2")
        assert fastpath.checksum_impl() == request.param
        yield request.param
    finally:
        fastpath.checksum_allow_avx2(True)


@pytest.mark.parametrize("size", [0, 1, 2, 3, 63, 64, 65, 127, 128, 129, 1448, 1449, 8948, 65000, 65535])
def test_checksum_matches_rfc1071(impl: str, size: int) -> None:
    data = bytes((i * 7 + 3) % 256 for i in range(size + 3))
    for off in range(3):  # unaligned starts
        assert fastpath.checksum_sum(data[: size + off], off) == reference_sum(data[off: size + off])
    ones = b"\xff" * size  # every accumulator lane at its maximum
    assert fastpath.checksum_sum(ones) == reference_sum(ones)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=5000), st.integers(0, 7))
def test_checksum_matches_rfc1071_fuzzed(data: bytes, off: int) -> None:
    for allow in (True, False):
        fastpath.checksum_allow_avx2(allow)
        try:
            assert fastpath.checksum_sum(data, min(off, len(data))) == reference_sum(data[min(off, len(data)):])
        finally:
            fastpath.checksum_allow_avx2(True)


def test_covered_segments_merge_without_inner_verification() -> None:
    segs = split(b"c" * 3000, 1000)
    out = fastpath.coalesce(segs, covered=True)
    assert len(out) == 1
    hdr, frame = unvnet(out[0])
    assert hdr[0] == NEEDS_CSUM and hdr[1] == GSO_TCPV4


def test_covered_lone_frame_is_data_valid_and_partial_stays_needs_csum() -> None:
    pkt = ETH / IP(src="198.19.1.1", dst="198.19.1.2") / UDP(sport=5, dport=6) / Raw(b"k" * 40)
    (out,) = fastpath.coalesce([raw(pkt)], covered=True)
    assert unvnet(out)[0][0] == DATA_VALID
    # a kernel peer's CHECKSUM_PARTIAL frame: still told apart, still completed only when it leaves
    frame = bytearray(raw(pkt))
    frame[40:42] = partial_field(bytes(frame), 34, 17)
    (out,) = fastpath.coalesce([bytes(frame)], covered=True)
    hdr, f = unvnet(out)
    assert hdr == (NEEDS_CSUM, 0, 0, 0, 34, 6)
    assert checksums_ok(fastpath.finish_checksum(f, 34, 6))


def test_uncovered_frames_are_still_verified() -> None:
    """Datagrams without an outer checksum (kernel VXLAN's IPv4 default): inner checksums checked."""
    segs = split(b"c" * 3000, 1000)
    bad = bytearray(segs[1])
    bad[-1] ^= 0xFF
    out = fastpath.coalesce([segs[0], bytes(bad), segs[2]], covered=False)
    assert len(out) == 3 and unvnet(out[1]) == ((0, 0, 0, 0, 0, 0), bytes(bad))
    tcp = raw(ETH / IP(src="198.19.1.1", dst="198.19.1.2") / TCP(sport=1, dport=2, flags="S"))
    assert unvnet(fastpath.coalesce([tcp], covered=False)[0])[0][0] == DATA_VALID
