"""Probe: can this kernel do ESP with AES-GCM (rfc4106(gcm(aes))) through xfrm?

Asked, not assumed: a throwaway transport-mode SA (loopback addresses, a fixed SPI from the reserved
range no one else uses) is added with XFRM_MSG_NEWSA over NETLINK_XFRM and removed at once. A kernel
without the ESP xfrm type (or without the GCM transform) refuses the add; that refusal is the answer.
pyroute2 has no xfrm message classes, so the two fixed structs are packed here.
"""

from __future__ import annotations

import os
import socket
import struct

from pyroute2.netlink import NETLINK_XFRM, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, nla, nlmsg
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.nlsocket import NetlinkSocket

XFRM_MSG_NEWSA = 0x10
XFRM_MSG_DELSA = 0x11
XFRMA_ALG_AEAD = 18
IPPROTO_ESP = 50
XFRM_MODE_TRANSPORT = 0
XFRM_INF = 2**64 - 1
PROBE_SPI = 0xFF  # reserved (1-255): never one of ours, nor one any IKE daemon hands out
PROBE_SRC, PROBE_DST = "127.0.0.1", "127.0.0.2"


def _addr(ip: str) -> bytes:
    return socket.inet_aton(ip) + bytes(12)  # xfrm_address_t: 16 bytes, IPv4 first


class _UsersaInfo(nlmsg):
    """struct xfrm_usersa_info (224 bytes) + attributes."""

    fields = (("raw", "224s"),)
    nla_map = ((XFRMA_ALG_AEAD, "XFRMA_ALG_AEAD", "aead"),)

    class aead(nla):
        """struct xfrm_algo_aead with a 20-byte key (16 key + 4 salt)."""

        fields = (("name", "64s"), ("key_len", "I"), ("icv_len", "I"), ("key", "20s"))


class _UsersaId(nlmsg):
    """struct xfrm_usersa_id (24 bytes)."""

    fields = (("raw", "24s"),)


def _usersa_info() -> bytes:
    selector = bytes(56)  # any traffic: the SA is never used, only accepted or refused
    xfrm_id = _addr(PROBE_DST) + struct.pack(">I", PROBE_SPI) + bytes([IPPROTO_ESP]) + bytes(3)
    lifetime_cfg = struct.pack("=4Q", XFRM_INF, XFRM_INF, XFRM_INF, XFRM_INF) + bytes(32)
    tail = bytes(32 + 12) + struct.pack("=IIHBBB", 0, 0, socket.AF_INET, XFRM_MODE_TRANSPORT, 0, 0)
    body = selector + xfrm_id + _addr(PROBE_SRC) + lifetime_cfg + tail
    return body + bytes(224 - len(body))


def esp_gcm_missing() -> str | None:
    """None if the kernel accepts an ESP rfc4106(gcm(aes)) SA; else why not (one phrase)."""
    try:
        sock = NetlinkSocket(family=NETLINK_XFRM)
    except OSError as e:
        return f"no xfrm netlink: {e.strerror or e}"
    try:
        sock.bind()
        msg = _UsersaInfo()
        msg["raw"] = _usersa_info()
        msg["attrs"] = [("XFRMA_ALG_AEAD", {"name": b"rfc4106(gcm(aes))", "key_len": 160, "icv_len": 128,
                                             "key": os.urandom(20)})]
        try:
            tuple(sock.nlm_request(msg, XFRM_MSG_NEWSA, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL))
        except NetlinkError as e:
            return f"xfrm refused an ESP SA: {os.strerror(e.code)}"
        delete = _UsersaId()
        delete["raw"] = _addr(PROBE_DST) + struct.pack(">IHB", PROBE_SPI, socket.AF_INET, IPPROTO_ESP) + bytes(1)
        try:
            tuple(sock.nlm_request(delete, XFRM_MSG_DELSA, NLM_F_REQUEST | NLM_F_ACK))
        except NetlinkError:
            pass
        return None
    finally:
        sock.close()
