"""ESP SA derivation (overlaynet/dataplane/esp_keys.py): both ends agree, everything that should separate
SAs does, and the documented formula is what runs (recomputed here from RFC 5869 with hmac/hashlib)."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.ipsec import ESP, SecurityAssociation
from scapy.packet import Raw, raw

from overlaynet.dataplane import esp
from overlaynet.dataplane.esp_keys import EspKeyError, derive_sa, derive_spi

pytestmark = pytest.mark.unit

SECRET = bytes(range(32))
A, B, C = "198.18.0.1", "198.18.0.2", "198.18.0.3"


def rfc5869_hkdf_sha256(ikm: bytes, info: bytes, length: int) -> bytes:
    prk = hmac.new(b"\0" * 32, ikm, hashlib.sha256).digest()  # no salt: HashLen zeros
    okm, block, i = b"", b"", 1
    while len(okm) < length:
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        okm, i = okm + block, i + 1
    return okm[:length]


def documented_ids(vni: int, epoch: int, src: str, dst: str) -> bytes:
    s, d = ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed
    return (b"overlaynet-esp-v1" + vni.to_bytes(4, "big") + epoch.to_bytes(4, "big")
            + bytes([len(s)]) + s + bytes([len(d)]) + d)


def test_known_answer_vector() -> None:
    sa = derive_sa(SECRET, 4242, 7, A, B)
    assert sa.spi == 0xB84E5672
    assert sa.key.hex() == "e435f9388bd753955bdddb5e69adae2b"
    assert sa.salt.hex() == "f49026ee"


@pytest.mark.parametrize("src, dst", [(A, B), (B, A), ("2001:db8::1", "2001:db8::2"), (A, "::ffff:198.18.0.2")])
def test_the_documented_formula_is_what_runs(src: str, dst: str) -> None:
    ids = documented_ids(99, 3, src, dst)
    okm = rfc5869_hkdf_sha256(SECRET, b"key " + ids, 20)
    h = int.from_bytes(hashlib.sha256(b"spi " + ids).digest()[:4], "big")
    sa = derive_sa(SECRET, 99, 3, src, dst)
    assert (sa.key, sa.salt, sa.spi) == (okm[:16], okm[16:], 256 + h % (2**32 - 256))


def test_both_ends_build_the_same_sa_without_talking() -> None:
    """Host A seals with the A->B SA it derived; host B opens with the A->B SA it derived on its own;
    and scapy, given only the derived parameters, agrees."""
    sender_view = derive_sa(bytes(SECRET), 4242, 1, A, B)
    receiver_view = derive_sa(bytes(bytearray(SECRET)), 4242, 1, A, B)
    tx = esp.EspSa(sender_view.spi, sender_view.key, sender_view.salt)
    rx = esp.EspSa(receiver_view.spi, receiver_view.key, receiver_view.salt)
    datagram = raw(IP(src=A, dst=B) / UDP(dport=4789) / Raw(b"\x08\0\0\0\0\x10\x92\0" + b"frame"))[20:]
    sealed = tx.seal(datagram, 1)
    assert esp.open_packet(sealed, {rx.spi: rx}) == (datagram, None)
    scapy_sa = SecurityAssociation(ESP, spi=receiver_view.spi, crypt_algo="AES-GCM",
                                   crypt_key=receiver_view.key + receiver_view.salt, nat_t_header=UDP(dport=4500))
    wire = IP(raw(IP(src=A, dst=B) / UDP(sport=4500, dport=4500, chksum=0) / Raw(sealed)))
    assert raw(scapy_sa.decrypt(wire))[20:] == datagram


def test_directions_epochs_networks_and_secrets_all_separate_keys() -> None:
    base = derive_sa(SECRET, 4242, 1, A, B)
    variants = {
        "reverse direction": derive_sa(SECRET, 4242, 1, B, A),
        "other destination": derive_sa(SECRET, 4242, 1, A, C),
        "next epoch": derive_sa(SECRET, 4242, 2, A, B),
        "other network": derive_sa(SECRET, 4243, 1, A, B),
    }
    for what, other in variants.items():
        assert other.key != base.key and other.salt != base.salt and other.spi != base.spi, what
    # the SPI is public (it is on the wire): it does not depend on the secret, the key does
    other_secret = derive_sa(bytes(32), 4242, 1, A, B)
    assert other_secret.key != base.key and other_secret.spi == base.spi
    assert derive_spi(4242, 1, A, B) == base.spi


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 2**24 - 1), st.integers(0, 2**32 - 1), st.ip_addresses(), st.ip_addresses())
def test_spis_are_never_reserved(vni: int, epoch: int, src: object, dst: object) -> None:
    spi = derive_spi(vni, epoch, str(src), str(dst))
    assert esp.MIN_SPI <= spi < 2**32
    esp.EspSa(spi, bytes(16), bytes(4))  # the codec accepts every derived SPI


def test_key_material_is_not_printed() -> None:
    sa = derive_sa(SECRET, 4242, 1, A, B)
    assert sa.key.hex() not in repr(sa) and "key=<16 bytes>" in repr(sa)


@pytest.mark.parametrize("args, message", [
    ((b"short", 1, 0, A, B), "at least 16 bytes"),
    ((SECRET, 0, 0, A, B), "VNI 0 is out of range"),
    ((SECRET, 2**24, 0, A, B), "out of range"),
    ((SECRET, 1, -1, A, B), "key epoch -1"),
    ((SECRET, 1, 2**32, A, B), "key epoch"),
    ((SECRET, 1, 0, "host-a", B), "'host-a' is not an IP address"),
])
def test_bad_input_is_refused_with_one_line(args: tuple, message: str) -> None:
    with pytest.raises(EspKeyError, match=message):
        derive_sa(*args)
