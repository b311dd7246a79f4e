"""TSO split (transmit), TCP and UDP coalescing (receive): checksums and headers checked with scapy."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw, raw

from overlaynet.dataplane import fastpath

pytestmark = pytest.mark.unit

ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
NEEDS_CSUM, DATA_VALID = 1, 2
GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4 = 1, 4, 5


def vnet(flags: int = 0, gso_type: int = 0, hdr_len: int = 0, gso_size: int = 0, start: int = 0, off: int = 0) -> bytes:
    return struct.pack("<BBHHHH", flags, gso_type, hdr_len, gso_size, start, off)


def unvnet(b: bytes) -> tuple[tuple[int, ...], bytes]:
    return struct.unpack("<BBHHHH", b[:10]), b[10:]


def checksums_ok(frame: bytes) -> bool:
    pkt = Ether(frame)
    l4 = pkt[TCP] if TCP in pkt else pkt[UDP]
    got = l4.chksum
    del l4.chksum
    ok = Ether(raw(pkt))
    good = (ok[TCP] if TCP in ok else ok[UDP]).chksum == got
    if IP in pkt:
        ip_got = pkt[IP].chksum
        del pkt[IP].chksum
        good = good and Ether(raw(pkt))[IP].chksum == ip_got
    return good


def tso_frame(payload: bytes, v6: bool = False, flags: str = "PA", seq: int = 1000) -> bytes:
    l3 = IPv6(src="fd00::1", dst="fd00::2") if v6 else IP(src="198.19.1.1", dst="198.19.1.2", id=100, flags="DF")
    return raw(ETH / l3 / TCP(sport=40000, dport=5001, flags=flags, seq=seq, ack=7,
                              options=[("NOP", None), ("NOP", None), ("Timestamp", (1, 2))]) / Raw(payload))


@pytest.mark.parametrize("v6", [False, True])
@pytest.mark.parametrize("size, mss", [(3000, 1000), (65000, 1398), (1399, 1398), (1, 1398), (8898 * 7, 8898)])
def test_tso_split_headers_and_checksums(v6: bool, size: int, mss: int) -> None:
    payload = bytes(i % 251 for i in range(size))
    frame = tso_frame(payload, v6)
    hlen = 14 + (40 if v6 else 20) + 32
    segs = fastpath.segment(vnet(NEEDS_CSUM, GSO_TCPV6 if v6 else GSO_TCPV4, hlen, mss, hlen - 32, 16), frame)
    assert len(segs) == -(-size // mss)
    got = b""
    for i, s in enumerate(segs):
        pkt = Ether(s)
        assert checksums_ok(s), f"segment {i} has a bad checksum"
        assert pkt[TCP].seq == 1000 + i * mss
        last = i == len(segs) - 1
        assert ("P" in str(pkt[TCP].flags)) == last  # PSH only on the last segment
        if not v6:
            assert pkt[IP].id == (100 + i) & 0xFFFF and pkt[IP].len == len(s) - 14
        else:
            assert pkt[IPv6].plen == len(s) - 54
        got += bytes(pkt[TCP].payload)
    assert got == payload


def test_tso_fin_and_cwr_only_where_they_belong() -> None:
    frame = tso_frame(b"z" * 2500, flags="FPAC")
    segs = fastpath.segment(vnet(NEEDS_CSUM, GSO_TCPV4 | 0x80, 66, 1000, 34, 16), frame)
    flags = [str(Ether(s)[TCP].flags) for s in segs]
    assert "C" in flags[0] and all("C" not in f for f in flags[1:])
    assert "F" in flags[-1] and all("F" not in f for f in flags[:-1])


def test_tso_rejects_non_tcp() -> None:
    frame = raw(ETH / IP(src="198.19.1.1", dst="198.19.1.2") / UDP() / Raw(b"u" * 3000))
    with pytest.raises(ValueError):
        fastpath.segment(vnet(NEEDS_CSUM, GSO_TCPV4, 42, 1000, 34, 6), frame)


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_needs_csum_is_completed(proto: str) -> None:
    l4 = TCP(sport=1, dport=2, flags="A") if proto == "tcp" else UDP(sport=1, dport=2)
    pkt = ETH / IP(src="198.19.1.1", dst="198.19.1.2") / l4 / Raw(b"abc" * 33)
    frame = bytearray(raw(pkt))
    off = 16 if proto == "tcp" else 6
    # what the kernel hands over with CHECKSUM_PARTIAL: the pseudo-header sum in the field
    psum = partial_field(bytes(frame), 34, 6 if proto == "tcp" else 17)
    frame[34 + off: 36 + off] = psum
    (out,) = fastpath.segment(vnet(NEEDS_CSUM, 0, 0, 0, 34, off), bytes(frame))
    assert checksums_ok(out)


def partial_field(frame: bytes, l4off: int, proto: int) -> bytes:
    ip = frame[14:34]
    s = sum(struct.unpack("!4H", ip[12:20])) + proto + (len(frame) - l4off)
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return struct.pack("!H", s)


def split(payload: bytes, mss: int, v6: bool = False, seq: int = 1000) -> list[bytes]:
    frame = tso_frame(payload, v6, seq=seq)
    hlen = 14 + (40 if v6 else 20) + 32
    return fastpath.segment(vnet(NEEDS_CSUM, GSO_TCPV6 if v6 else GSO_TCPV4, hlen, mss, hlen - 32, 16), frame)


@pytest.mark.parametrize("v6", [False, True])
def test_coalesce_in_order_segments_into_one_gso_frame(v6: bool) -> None:
    payload = bytes(range(256)) * 100
    segs = split(payload, 1398, v6)
    (out,) = fastpath.coalesce(segs)
    (flags, gso_type, hdr_len, gso_size, start, off), frame = unvnet(out)
    hl = 14 + (40 if v6 else 20)
    assert (flags, gso_type, hdr_len, gso_size, start, off) == (
        NEEDS_CSUM, GSO_TCPV6 if v6 else GSO_TCPV4, hl + 32, 1398, hl, 16)
    pkt = Ether(frame)
    assert bytes(pkt[TCP].payload) == payload
    assert pkt[TCP].seq == 1000 and "P" in str(pkt[TCP].flags)
    if not v6:
        assert pkt[IP].len == len(frame) - 14
        ip_sum = pkt[IP].chksum
        del pkt[IP].chksum
        assert Ether(raw(pkt))[IP].chksum == ip_sum
    # the TCP field holds the pseudo-header sum for the kernel to complete
    assert frame[hl + 16: hl + 18] == partial_field(frame, hl, 6) or v6


def test_single_verified_segment_is_marked_data_valid() -> None:
    (seg,) = split(b"q" * 100, 1398)
    (out,) = fastpath.coalesce([seg])
    hdr, frame = unvnet(out)
    assert hdr[0] == DATA_VALID and hdr[1] == 0 and frame == seg


def test_out_of_order_and_other_flows_are_not_merged() -> None:
    a = split(b"a" * 4000, 1000)
    b = split(b"b" * 2000, 1000, seq=50000)
    out = fastpath.coalesce([a[0], a[2], a[1], b[0], b[1]])
    kinds = [unvnet(o)[0][1] for o in out]
    assert len(out) == 4  # a0 | a2 | a1 | b0+b1
    assert kinds == [0, 0, 0, GSO_TCPV4]
    frames = [unvnet(o)[1] for o in out]
    assert frames[0] == a[0] and frames[1] == a[2] and frames[2] == a[1]


def test_bad_checksum_is_passed_on_untouched_and_never_merged() -> None:
    segs = split(b"c" * 3000, 1000)
    bad = bytearray(segs[1])
    bad[-1] ^= 0xFF
    out = fastpath.coalesce([segs[0], bytes(bad), segs[2]])
    assert len(out) == 3
    hdr, frame = unvnet(out[1])
    assert hdr == (0, 0, 0, 0, 0, 0) and frame == bytes(bad)


def test_partial_checksum_from_a_kernel_peer_is_passed_as_needs_csum() -> None:
    pkt = ETH / IP(src="198.19.1.1", dst="198.19.1.2") / UDP(sport=5, dport=6) / Raw(b"k" * 40)
    frame = bytearray(raw(pkt))
    frame[40:42] = partial_field(bytes(frame), 34, 17)
    (out,) = fastpath.coalesce([bytes(frame)])
    hdr, f = unvnet(out)
    assert hdr == (NEEDS_CSUM, 0, 0, 0, 34, 6) and f == bytes(frame)
    # and the completed checksum is right
    assert checksums_ok(fastpath.finish_checksum(f, 34, 6))


def test_oversized_inner_frame_becomes_a_gso_frame() -> None:
    frame = bytearray(tso_frame(b"s" * 20000))
    frame[50:52] = partial_field(bytes(frame), 34, 6)
    (out,) = fastpath.coalesce([bytes(frame)], mtu=1450)
    (flags, gso_type, hdr_len, gso_size, start, off), f = unvnet(out)
    assert (flags, gso_type, hdr_len, gso_size, start, off) == (NEEDS_CSUM, GSO_TCPV4, 66, 1450 - 52, 34, 16)
    assert f == bytes(frame)


def test_non_ip_frames_pass_unchanged() -> None:
    frames = [raw(ETH / IP(src="198.19.1.1", dst="198.19.1.2") / ICMP() / Raw(b"p" * 56)),
              bytes.fromhex("ffffffffffff020000000001" "0806") + b"\0" * 28]
    out = fastpath.coalesce(frames)
    assert [unvnet(o)[1] for o in out] == frames
    assert fastpath.coalesce(frames, vnet=False) == frames


@settings(max_examples=150, deadline=None)
@given(st.binary(min_size=1, max_size=30000), st.integers(200, 9000), st.booleans())
def test_split_then_coalesce_round_trip(payload: bytes, mss: int, v6: bool) -> None:
    segs = split(payload, mss, v6)
    assert all(checksums_ok(s) for s in segs)
    data = b""
    for o in fastpath.coalesce(segs):
        data += bytes(Ether(unvnet(o)[1])[TCP].payload)
    assert data == payload


def test_flow_hash_follows_the_flow() -> None:
    def f(sport: int) -> bytes:
        return raw(ETH / IP(src="198.19.1.1", dst="198.19.1.2") / TCP(sport=sport, dport=80) / Raw(b"x"))
    assert fastpath.flow_hash(f(1000)) == fastpath.flow_hash(f(1000) + b"pad")
    assert len({fastpath.flow_hash(f(p)) % 16 for p in range(1000, 1100)}) > 8  # spreads over ports
    assert isinstance(fastpath.flow_hash(b""), int)


# ---- UDP coalescing: a train of same-size datagrams of one flow becomes one UDP GSO frame

def udp_frame(payload: bytes, sport: int = 4000, ip_id: int = 0, df: bool = True, v6: bool = False) -> bytes:
    l3 = (IPv6(src="fd00::1", dst="fd00::2") if v6 else
          IP(src="198.19.1.1", dst="198.19.1.2", id=ip_id, flags="DF" if df else 0))
    return raw(ETH / l3 / UDP(sport=sport, dport=9) / Raw(payload))


def udp_datagrams(out: list[bytes]) -> list[bytes]:
    """Cut what the receive path wrote back into datagram payloads, the way the kernel does for
    VIRTIO_NET_HDR_GSO_UDP_L4 (every gso_size bytes, the last one shorter)."""
    got = []
    for o in out:
        (flags, gso_type, hdr_len, gso_size, start, off), frame = unvnet(o)
        pkt = Ether(frame)
        data = bytes(pkt[UDP].payload)
        if gso_type == GSO_UDP_L4:
            assert flags == NEEDS_CSUM and (start, off) == (hdr_len - 8, 6)
            assert pkt[UDP].len == len(frame) - start
            assert frame[start + 6: start + 8] == partial_field(frame, start, 17) or IPv6 in pkt
            got += [data[i:i + gso_size] for i in range(0, len(data), gso_size)]
        else:
            assert gso_type == 0
            got.append(data)
    return got


@pytest.mark.parametrize("v6", [False, True])
def test_udp_train_becomes_one_gso_frame(v6: bool) -> None:
    payloads = [bytes([i]) * 18 for i in range(40)] + [b"tail"]
    out = fastpath.coalesce([udp_frame(p, v6=v6) for p in payloads])
    assert len(out) == 1
    (flags, gso_type, hdr_len, gso_size, start, off), frame = unvnet(out[0])
    hl = 14 + (40 if v6 else 20)
    assert (flags, gso_type, hdr_len, gso_size, start, off) == (NEEDS_CSUM, GSO_UDP_L4, hl + 8, 18, hl, 6)
    if not v6:
        pkt = Ether(frame)
        assert pkt[IP].len == len(frame) - 14
        ip_sum = pkt[IP].chksum
        del pkt[IP].chksum
        assert Ether(raw(pkt))[IP].chksum == ip_sum
    assert udp_datagrams(out) == payloads


def test_udp_is_not_merged_without_gso_support_or_across_flows() -> None:
    frames = [udp_frame(b"a" * 30) for _ in range(5)]
    assert [unvnet(o)[1] for o in fastpath.coalesce(frames, udp_gso=False)] == frames
    # interleaved flows are coalesced each on its own, never into each other
    mixed = [udp_frame(bytes([i]) * 30, sport=1 + i % 3) for i in range(12)]
    out = fastpath.coalesce(mixed)
    assert len(out) == 3
    for o in out:
        sport = Ether(unvnet(o)[1])[UDP].sport
        assert udp_datagrams([o]) == [bytes([i]) * 30 for i in range(12) if 1 + i % 3 == sport]


def test_more_flows_than_groups_keep_their_order() -> None:
    flows = 20  # more than the coalescer holds at once: the oldest groups are written out early
    frames = [udp_frame(bytes([i % 256]) * 40, sport=1000 + i % flows) for i in range(flows * 6)]
    out = fastpath.coalesce(frames)
    per_flow: dict[int, list[bytes]] = {}
    for o in out:
        per_flow.setdefault(Ether(unvnet(o)[1])[UDP].sport, []).extend(udp_datagrams([o]))
    for sport, got in per_flow.items():
        assert got == [bytes([i % 256]) * 40 for i in range(flows * 6) if 1000 + i % flows == sport]


def test_udp_boundaries_survive_size_changes() -> None:
    # a bigger datagram after smaller ones, or anything after a short one, starts a new train
    sizes = [100, 100, 60, 100, 100, 200, 200, 200]
    payloads = [bytes([i]) * n for i, n in enumerate(sizes)]
    out = fastpath.coalesce([udp_frame(p) for p in payloads])
    assert len(out) == 3
    assert udp_datagrams(out) == payloads


def test_udp_ip_ids_must_count_up_without_df() -> None:
    counting = [udp_frame(b"x" * 50, ip_id=7 + i, df=False) for i in range(4)]
    assert len(fastpath.coalesce(counting)) == 1
    jumping = [udp_frame(b"x" * 50, ip_id=i * 3, df=False) for i in range(4)]
    assert len(fastpath.coalesce(jumping)) == 4


def test_udp_bad_checksum_or_bad_length_is_never_merged() -> None:
    good = [udp_frame(b"g" * 40) for _ in range(3)]
    bad = bytearray(good[1])
    bad[-1] ^= 0xFF
    out = fastpath.coalesce([good[0], bytes(bad), good[2]])
    assert len(out) == 3 and unvnet(out[1]) == ((0, 0, 0, 0, 0, 0), bytes(bad))
    short = bytearray(good[1])
    short[38:40] = struct.pack("!H", 20)  # UDP length says less than the IP packet holds
    assert len(fastpath.coalesce([good[0], bytes(short), good[2]])) == 3


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(1, 1400), min_size=1, max_size=120), st.booleans())
def test_udp_coalesce_round_trip(sizes: list[int], v6: bool) -> None:
    payloads = [bytes((i + j) % 256 for j in range(n)) for i, n in enumerate(sizes)]
    out = fastpath.coalesce([udp_frame(p, v6=v6) for p in payloads])
    assert udp_datagrams(out) == payloads
    for o in out:
        assert len(unvnet(o)[1]) <= 14 + 65535


def test_one_group_only_merges_back_to_back_frames() -> None:
    mixed = [udp_frame(bytes([i]) * 30, sport=1 + i % 2) for i in range(6)]
    assert len(fastpath.coalesce(mixed, flows=1)) == 6
    assert len(fastpath.coalesce(mixed)) == 2


# ---- UDP GSO (USO) split on transmit: one GSO frame from the TAP becomes its datagrams

@pytest.mark.parametrize("v6", [False, True])
@pytest.mark.parametrize("size, gso", [(18 * 40 + 7, 18), (3000, 1000), (1000, 1000), (65000, 1400)])
def test_uso_split_into_datagrams(v6: bool, size: int, gso: int) -> None:
    payload = bytes(i % 253 for i in range(size))
    frame = udp_frame(payload, ip_id=500, v6=v6)
    hl = 14 + (40 if v6 else 20)
    segs = fastpath.segment(vnet(NEEDS_CSUM, GSO_UDP_L4, hl + 8, gso, hl, 6), frame)
    assert len(segs) == -(-size // gso)
    got = []
    for i, s in enumerate(segs):
        pkt = Ether(s)
        assert checksums_ok(s), f"datagram {i} has a bad checksum"
        assert pkt[UDP].len == len(s) - hl and pkt[UDP].sport == 4000
        if not v6:
            assert pkt[IP].id == 500 + i and pkt[IP].len == len(s) - 14
        else:
            assert pkt[IPv6].plen == len(s) - 54
        got.append(bytes(pkt[UDP].payload))
    assert got == [payload[i:i + gso] for i in range(0, size, gso)]


def test_uso_then_coalesce_round_trip() -> None:
    payload = bytes(i % 251 for i in range(18 * 30 + 5))
    segs = fastpath.segment(vnet(NEEDS_CSUM, GSO_UDP_L4, 42, 18, 34, 6), udp_frame(payload))
    assert udp_datagrams(fastpath.coalesce(segs)) == [payload[i:i + 18] for i in range(0, len(payload), 18)]


def test_uso_rejects_a_frame_that_is_not_udp() -> None:
    with pytest.raises(ValueError):
        fastpath.segment(vnet(NEEDS_CSUM, GSO_UDP_L4, 66, 1000, 34, 16), tso_frame(b"t" * 3000))
