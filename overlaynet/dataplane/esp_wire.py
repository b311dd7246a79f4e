"""The ESP wire format of encrypted networks, as numbers the control side needs. No I/O.

RFC 4303 ESP with RFC 4106 AES-GCM-128 in transport mode around the VXLAN UDP datagram, in RFC 3948
UDP encapsulation (docs/encryption.md has the byte diagram). The fast path's C code
(dataplane/csrc/fp.h, FP_ESP_*) defines the same numbers; a unit test checks that both agree.

The MTU of an encrypted network must leave room for the encryption: use `inner_mtu(underlay_mtu)`
(1408 on a 1500-byte IPv4 underlay) instead of `underlay_mtu - VXLAN_OVERHEAD`.
"""

from __future__ import annotations

PORT = 4500  # RFC 3948 UDP encapsulation, fastpathd --esp-port
KEY_LEN = 16  # AES-128
SALT_LEN = 4  # RFC 4106 nonce salt
MIN_SPI = 256  # 0: RFC 3948 non-ESP marker; 1-255: reserved by IANA
REPLAY_WINDOW = 1024  # packets per inbound SA

ESP_HEADER = 8  # SPI + sequence number
IV_LEN = 8  # explicit IV = 64-bit sequence number
TRAILER = 2  # pad length + next header
ICV_LEN = 16  # GCM tag
UDP_HEADER = 8
IPV4_HEADER = 20
VXLAN_OVERHEAD = 50  # outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14
# On top of plain VXLAN: the outer UDP of RFC 3948 (8) + ESP header (8) + IV (8) + trailer (2) + ICV (16)
# = 42; plus 0-3 bytes of padding (the encrypted part ends on a 4-byte boundary).
ESP_OVERHEAD_FIXED = UDP_HEADER + ESP_HEADER + IV_LEN + TRAILER + ICV_LEN
ESP_OVERHEAD_MAX = ESP_OVERHEAD_FIXED + 3
ENCRYPTED_OVERHEAD_MAX = VXLAN_OVERHEAD + ESP_OVERHEAD_MAX  # 95: reserve this much, or use inner_mtu()


def pad_len(datagram_len: int) -> int:
    """Padding bytes after a `datagram_len`-byte datagram (RFC 4303 2.4: 4-byte alignment)."""
    return (4 - (datagram_len + TRAILER) % 4) % 4


def sealed_len(datagram_len: int) -> int:
    """Bytes of ESP (SPI .. ICV) that carry a UDP datagram of this length (inner UDP header included)."""
    return ESP_HEADER + IV_LEN + datagram_len + pad_len(datagram_len) + TRAILER + ICV_LEN


def outer_len(inner_mtu: int) -> int:
    """Size of the outer IPv4 packet that carries a full inner frame of an `inner_mtu` network."""
    datagram = UDP_HEADER + 8 + 14 + inner_mtu  # inner UDP + VXLAN + Ethernet + IP packet
    return IPV4_HEADER + UDP_HEADER + sealed_len(datagram)


def inner_mtu(underlay_mtu: int) -> int:
    """Largest MTU of an encrypted network whose packets fit an IPv4 underlay of `underlay_mtu` (0: none)."""
    mtu = underlay_mtu - VXLAN_OVERHEAD - ESP_OVERHEAD_FIXED
    while mtu > 0 and outer_len(mtu) > underlay_mtu:
        mtu -= 1
    return max(mtu, 0)
