"""The ESP codec (dataplane/csrc/fp_esp.c) against independent implementations of the standard: scapy's
SecurityAssociation (RFC 4303 + RFC 4106 + RFC 3948) both ways, `cryptography`'s AES-GCM for hand-built
packets, and a model of the RFC 4303 3.4.3 replay window."""

from __future__ import annotations

import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.ipsec import ESP, SecurityAssociation
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Raw, raw

from overlaynet.dataplane import esp

pytestmark = pytest.mark.unit

KEY = bytes(range(16))
SALT = b"\xaa\xbb\xcc\xdd"
SPI = 0x0A0B0C0D
VTEP_A, VTEP_B = "198.18.0.1", "198.18.0.2"
REASONS = {"malformed", "unknown_spi", "replay", "too_old", "bad_icv"}


def vxlan_datagram(payload: bytes, vni: int = 42) -> bytes:
    """The inner UDP datagram (UDP header + VXLAN + Ethernet + IPv4 + ICMP echo) the codec encrypts."""
    pkt = (IP(src=VTEP_A, dst=VTEP_B) / UDP(sport=33333, dport=4789) / VXLAN(vni=vni)
           / Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
           / IP(src="198.19.0.1", dst="198.19.0.2") / ICMP(id=7, seq=1) / Raw(payload))
    return raw(pkt)[20:]


def on_the_wire(esp_payload: bytes) -> IP:
    """What a capture shows: outer IPv4 / UDP 4500 (RFC 3948, no checksum) / ESP."""
    return IP(raw(IP(src=VTEP_A, dst=VTEP_B) / UDP(sport=4500, dport=4500, chksum=0) / Raw(esp_payload)))


def scapy_sa() -> SecurityAssociation:
    return SecurityAssociation(ESP, spi=SPI, crypt_algo="AES-GCM", crypt_key=KEY + SALT,
                               nat_t_header=UDP(dport=4500))


def pair() -> tuple[esp.EspSa, esp.EspSa]:
    return esp.EspSa(SPI, KEY, SALT), esp.EspSa(SPI, KEY, SALT)


# Payload lengths that exercise every padding length (0-3) and a full 1400-byte inner MTU.
PAYLOADS = [b"", b"h", b"he", b"hes", b"hes-ping", bytes(range(256)) * 5 + b"x" * 42]


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: f"{len(p)}B")
def test_scapy_decrypts_what_we_seal_and_finds_vxlan_and_icmp(payload: bytes) -> None:
    tx, _ = pair()
    wire = on_the_wire(tx.seal(vxlan_datagram(payload), 7))
    assert wire[UDP].dport == esp.PORT and wire[ESP].spi == SPI and wire[ESP].seq == 7

    clear = scapy_sa().decrypt(wire)  # raises if the ICV (over SPI||seq AAD) does not verify

    assert clear[UDP].dport == 4789 and clear[VXLAN].vni == 42
    assert clear[ICMP].id == 7 and clear[ICMP].type == 8
    assert bytes(clear[ICMP].payload) == payload


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: f"{len(p)}B")
def test_we_open_what_scapy_seals(payload: bytes) -> None:
    datagram = vxlan_datagram(payload)
    inner = IP(raw(IP(src=VTEP_A, dst=VTEP_B, proto=17) / Raw(datagram)))
    wire = IP(raw(scapy_sa().encrypt(inner, seq_num=3)))
    assert wire[UDP].dport == 4500

    _, rx = pair()
    opened, reason = rx.open(raw(wire[UDP].payload))

    assert reason is None
    assert opened == datagram


def test_a_replayed_packet_is_dropped_as_replay() -> None:
    tx, rx = pair()
    pkt = tx.seal(vxlan_datagram(b"once"), 1)
    assert rx.open(pkt)[1] is None
    assert rx.open(pkt) == (None, "replay")


def test_window_takes_1024_packets_of_reordering_and_drops_older_ones() -> None:
    tx, rx = pair()
    dg = vxlan_datagram(b"w")
    newest = 5000
    assert rx.open(tx.seal(dg, newest))[1] is None
    assert rx.open(tx.seal(dg, newest - esp.REPLAY_WINDOW + 1))[1] is None  # oldest still inside
    assert rx.open(tx.seal(dg, newest - esp.REPLAY_WINDOW)) == (None, "too_old")
    assert rx.open(tx.seal(dg, 1)) == (None, "too_old")
    assert rx.open(tx.seal(dg, newest - 1))[1] is None  # late but new
    assert rx.open(tx.seal(dg, newest - 1)) == (None, "replay")


@pytest.mark.parametrize("offset", [0, 1, 63])
def test_a_replay_at_the_far_edge_of_the_window_is_still_caught(offset: int) -> None:
    """The oldest packet the window admits shares a bitmap word's ring slot with the newest one: the
    ring needs a spare word, or advancing to the newest would forget the oldest."""
    tx, rx = pair()
    dg = vxlan_datagram(b"edge")
    newest = 64 * 40 + offset
    oldest = newest - esp.REPLAY_WINDOW + 1
    assert rx.open(tx.seal(dg, oldest))[1] is None
    assert rx.open(tx.seal(dg, newest))[1] is None
    assert rx.open(tx.seal(dg, oldest)) == (None, "replay")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=4000), min_size=1, max_size=300))
def test_replay_window_matches_rfc4303_model(seqs: list[int]) -> None:
    """Any arrival order: accepted iff new to the right of the window, or inside it and unseen."""
    tx, rx = pair()
    dg = vxlan_datagram(b"m")
    seen: set[int] = set()
    top = 0
    for seq in seqs:
        if seq > top or (top - seq < esp.REPLAY_WINDOW and seq not in seen):
            expected = None
        else:
            expected = "replay" if top - seq < esp.REPLAY_WINDOW else "too_old"
        assert rx.open(tx.seal(dg, seq))[1] == expected, (seq, top)
        if expected is None:
            seen.add(seq)
            top = max(top, seq)


def test_every_flipped_bit_after_the_spi_is_dropped_and_does_not_advance_the_window() -> None:
    tx, rx = pair()
    good = tx.seal(vxlan_datagram(b"integrity"), 9)
    for i in range(4, len(good)):
        for bit in (0x01, 0x80):
            bad = bytearray(good)
            bad[i] ^= bit
            opened, reason = rx.open(bytes(bad))
            assert opened is None
            # a flipped sequence number may become 0 (never sent); everything else fails the ICV
            assert reason == ("replay" if i < 8 and struct.unpack_from("!I", bad, 4)[0] == 0 else "bad_icv"), i
    assert rx.open(good)[1] is None  # forgeries with seq 9 did not mark 9 as seen


def test_unknown_spi_and_wrong_key_are_dropped() -> None:
    tx, _ = pair()
    pkt = tx.seal(vxlan_datagram(b"k"), 1)
    other = esp.EspSa(SPI + 1, KEY, SALT)
    assert esp.open_packet(pkt, {other.spi: other}) == (None, "unknown_spi")
    assert other.open(pkt) == (None, "unknown_spi")
    wrong_key = esp.EspSa(SPI, bytes(16), SALT)
    assert esp.open_packet(pkt, {SPI: wrong_key}) == (None, "bad_icv")
    wrong_salt = esp.EspSa(SPI, KEY, bytes(4))
    assert wrong_salt.open(pkt) == (None, "bad_icv")
    right = esp.EspSa(SPI, KEY, SALT)
    assert esp.open_packet(pkt, {SPI: right, other.spi: other})[1] is None


def hand_sealed(plaintext: bytes, seq: int = 1) -> bytes:
    """An authentic ESP packet with an arbitrary plaintext (payload + trailer), built with `cryptography`."""
    head = struct.pack("!II", SPI, seq)
    iv = struct.pack("!Q", seq)
    return head + iv + AESGCM(KEY).encrypt(SALT + iv, plaintext, head)


@pytest.mark.parametrize("trailer, reason", [
    (b"\x00\x11", None),  # no padding, next header UDP: what a valid packet ends with
    (b"\x01\x02\x02\x11", None),
    (b"\x00\x04", "malformed"),  # next header IPv4 (tunnel mode): not ours
    (b"\x00\x3b", "malformed"),  # next header 59: a TFC dummy packet
    (b"\x01\x01\x09\x11", "malformed"),  # pad bytes not 1, 2, ...
    (b"\xff\x11", "malformed"),  # pad length beyond the payload
])
def test_authentic_packets_with_a_bad_trailer_are_malformed(trailer: bytes, reason: str | None) -> None:
    _, rx = pair()
    payload = b"12345678"  # 8 + trailer: 4-byte aligned in the valid cases
    opened, got = rx.open(hand_sealed(payload + trailer))
    assert got == reason
    if reason is None:
        assert opened == payload


def test_truncations_of_a_valid_packet_are_all_dropped() -> None:
    tx, _ = pair()
    good = tx.seal(vxlan_datagram(b"trunc"), 1)
    for n in range(len(good)):
        _, rx = pair()
        opened, reason = esp.open_packet(good[:n], {SPI: rx})
        assert opened is None and reason in ({"malformed"} if n < 34 else {"bad_icv"}), n


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_arbitrary_bytes_never_crash_and_are_classified(data: bytes) -> None:
    _, rx = pair()
    opened, reason = esp.open_packet(data, {SPI: rx})
    assert opened is None and reason in REASONS
    opened, reason = rx.open(data)
    assert opened is None and reason in REASONS


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=34, max_size=120))
def test_random_packets_with_our_spi_fail_authentication(data: bytes) -> None:
    _, rx = pair()
    forged = struct.pack("!I", SPI) + struct.pack("!I", 1) + data[8:]
    assert rx.open(forged) == (None, "bad_icv")


def test_mtu_overhead_is_exact() -> None:
    for n in range(64):
        added = 8 + esp.sealed_len(n) - n  # UDP 4500 header + ESP around an n-byte VXLAN datagram
        assert esp.OVERHEAD_FIXED <= added <= esp.OVERHEAD_MAX
        assert (esp.sealed_len(n) - 8 - 8 - 16) % 4 == 0  # payload + pad + trailer 4-byte aligned
    assert (esp.OVERHEAD_FIXED, esp.OVERHEAD_MAX) == (42, 45)
    for underlay in (1500, 1501, 1502, 1503, 9000, 1280):
        mtu = esp.inner_mtu(underlay)
        assert underlay - 50 - esp.OVERHEAD_MAX <= mtu <= underlay - 50 - esp.OVERHEAD_FIXED

        def outer_len(inner_mtu: int) -> int:
            frame = bytes(14 + inner_mtu)
            datagram = raw(IP(src=VTEP_A, dst=VTEP_B) / UDP(dport=4789) / VXLAN(vni=1) / Raw(frame))[20:]
            return len(raw(scapy_sa().encrypt(IP(src=VTEP_A, dst=VTEP_B, proto=17) / Raw(datagram))))

        assert outer_len(mtu) <= underlay < outer_len(mtu + 1)  # measured with scapy's own encoder
    assert esp.inner_mtu(1500) == 1408
    assert esp.inner_mtu(60) == 0


def test_bad_arguments_are_refused_with_a_clear_error() -> None:
    with pytest.raises(esp.EspError, match="16-byte key"):
        esp.EspSa(SPI, bytes(32), SALT)
    with pytest.raises(esp.EspError, match="reserved"):
        esp.EspSa(255, KEY, SALT)
    tx, _ = pair()
    with pytest.raises(esp.EspError, match="sequence number 0"):
        tx.seal(b"x", 0)
