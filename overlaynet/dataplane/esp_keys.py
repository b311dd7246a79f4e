"""ESP security associations for encrypted networks, derived from a per-network secret. No I/O.

Every host holds the network's secret (distributed by the encrypted gossip keyring), so both ends of an
ordered host pair compute the same SA for a key epoch without a round trip:

    ids  = "overlaynet-esp-v1" || vni (4, big-endian) || epoch (4, big-endian)
           || len(src) (1) || src address || len(dst) (1) || dst address      (4 or 16 address bytes)
    key || salt = HKDF-SHA256(ikm=secret, salt=none, info="key " || ids, length=20)  (16 key + 4 salt)
    h    = SHA-256("spi " || ids), first 4 bytes as a big-endian integer
    spi  = 256 + h mod (2**32 - 256)      (0 is RFC 3948's non-ESP marker, 1-255 are reserved)

"src" is the sending VTEP and "dst" the receiving one: the SA for A -> B differs from B -> A in key
and SPI, so each direction has its own sequence-number space. The receiver demultiplexes by SPI; two
SAs that land on one SPI at one receiver (odds about n**2 / 2**33 for n inbound SAs) must be refused
by whoever installs them. This is the equivalent of Docker's SPI from (source IP, key tag, destination
IP). See docs/encryption.md.

`cryptography` (HKDF) is imported by the first derivation, not with this module: a host without an
encrypted network never needs it (~8 MiB of RSS, docs/performance.md).
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

from overlaynet import model

LABEL = b"overlaynet-esp-v1"
KEY_LEN = 16  # AES-128
SALT_LEN = 4  # RFC 4106 nonce salt
MIN_SPI = 256
MIN_SECRET_LEN = 16
MAX_EPOCH = 2**32 - 1


class EspKeyError(ValueError):
    """Bad input to the derivation (secret too short, epoch or address out of range)."""


@dataclass(frozen=True)
class EspSaParams:
    """What the dataplane needs to build one unidirectional SA."""

    spi: int
    key: bytes
    salt: bytes

    def __repr__(self) -> str:  # never print key material in logs or tracebacks
        return f"EspSaParams(spi={self.spi:#010x}, key=<{len(self.key)} bytes>, salt=<{len(self.salt)} bytes>)"


def _address(value: str) -> bytes:
    try:
        packed = ipaddress.ip_address(value).packed
    except ValueError:
        raise EspKeyError(f"{value!r} is not an IP address") from None
    return bytes([len(packed)]) + packed


def _ids(vni: int, epoch: int, src: str, dst: str) -> bytes:
    if not model.MIN_VNI <= vni <= model.MAX_VNI:
        raise EspKeyError(f"VNI {vni} is out of range {model.MIN_VNI}..{model.MAX_VNI}")
    if not 0 <= epoch <= MAX_EPOCH:
        raise EspKeyError(f"key epoch {epoch} is out of range 0..{MAX_EPOCH}")
    return LABEL + vni.to_bytes(4, "big") + epoch.to_bytes(4, "big") + _address(src) + _address(dst)


def derive_spi(vni: int, epoch: int, src: str, dst: str) -> int:
    """The SPI of the SA from VTEP `src` to VTEP `dst`: public, so it needs no secret."""
    h = int.from_bytes(hashlib.sha256(b"spi " + _ids(vni, epoch, src, dst)).digest()[:4], "big")
    return MIN_SPI + h % (2**32 - MIN_SPI)


def derive_sa(secret: bytes, vni: int, epoch: int, src: str, dst: str) -> EspSaParams:
    """The SA that carries the network's traffic from VTEP `src` to VTEP `dst` in key epoch `epoch`."""
    if len(secret) < MIN_SECRET_LEN:
        raise EspKeyError(f"a network secret needs at least {MIN_SECRET_LEN} bytes")
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    ids = _ids(vni, epoch, src, dst)
    okm = HKDF(algorithm=hashes.SHA256(), length=KEY_LEN + SALT_LEN, salt=None, info=b"key " + ids).derive(secret)
    return EspSaParams(spi=derive_spi(vni, epoch, src, dst), key=okm[:KEY_LEN], salt=okm[KEY_LEN:])
