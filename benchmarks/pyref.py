"""Pure-Python reference for VXLAN encapsulation/decapsulation of one frame (RFC 7348), the yardstick
for the Cython fast path's per-frame cost. Same rules as overlaynet.dataplane.fastpath: the I flag set,
every reserved bit zero on send; on receive, anything but exactly the I flag is rejected."""

from __future__ import annotations

import struct

from overlaynet.model import MAX_VNI

HEADER = struct.Struct("!B3xI")  # flags, 3 reserved bytes, VNI << 8 | reserved byte
FLAG_I = 0x08


def encode_header(vni: int) -> bytes:
    if not 0 <= vni <= MAX_VNI:
        raise ValueError(f"VNI {vni} out of range 0..{MAX_VNI}")
    return HEADER.pack(FLAG_I, vni << 8)


def decode_header(packet: bytes) -> int | None:
    if len(packet) < 8:
        return None
    flags, word = HEADER.unpack_from(packet)
    if flags != FLAG_I or packet[1:4] != b"\x00\x00\x00" or word & 0xFF:
        return None
    return word >> 8


def encapsulate(vni: int, frame: bytes) -> bytes:
    """The UDP payload that carries `frame` in network `vni`."""
    return encode_header(vni) + frame


def decapsulate(payload: bytes) -> tuple[int, bytes] | None:
    """(VNI, inner frame) of a UDP payload, or None when it is not a valid VXLAN packet. Same checks
    as the fast path's receive side: a whole Ethernet header, and a unicast, non-zero source MAC."""
    if len(payload) < 8 + 14:
        return None
    vni = decode_header(payload)
    if vni is None:
        return None
    src = payload[14:20]
    if src[0] & 1 or src == b"\x00" * 6:
        return None
    return vni, payload[8:]
