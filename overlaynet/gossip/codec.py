"""Wire format: msgpack arrays, versioned from day one.

A packet (UDP datagram or TCP frame, before encryption) is the msgpack array
    [VERSION, sender_name, [msg, msg, ...]]
and every msg is an array whose first element is its type (see MSG_* below and docs/gossip.md).
Receivers ignore extra trailing fields (room for additive changes within a version) and skip
message types they do not know; a different VERSION is dropped and counted.

Decoding never trusts input: every field is type-checked here, and any failure raises DecodeError,
which the core counts and drops.
"""

from __future__ import annotations

from typing import Any

import msgpack

VERSION = 1

MSG_PING = 1  # [1, seq, target_name, source_name]  (target_name guards against a reused address)
MSG_INDIRECT_PING = 2  # [2, seq, target_name, target_addr, target_port]  (ack/nack go back to the UDP source)
MSG_ACK = 3  # [3, seq]
MSG_NACK = 4  # [4, seq]
MSG_ALIVE = 5  # [5, name, incarnation, addr, port, meta]
MSG_SUSPECT = 6  # [6, name, incarnation, from_name]
MSG_DEAD = 7  # [7, name, incarnation, from_name]   (from == name: graceful leave)
MSG_TABLE = 8  # [8, table, key, value|nil, lamport, owner, ttl]  (ttl: tombstone residual life, s)
MSG_KEYOP = 9  # [9, op, key_bytes]   op: "install" | "use" | "remove"
MSG_PUSHPULL = 10  # [10, flags, lamport, members, digests, records]  (TCP only; flags: 1 join, 2 reply)

# Field specs: s=str, i=non-negative int, b=bool, m=dict, M=dict or nil, y=bytes, f=number, l=list
SCHEMAS: dict[int, str] = {
    MSG_PING: "iss",
    MSG_INDIRECT_PING: "issi",
    MSG_ACK: "i",
    MSG_NACK: "i",
    MSG_ALIVE: "sisim",
    MSG_SUSPECT: "sis",
    MSG_DEAD: "sis",
    MSG_TABLE: "ssMisf",
    MSG_KEYOP: "sy",
    MSG_PUSHPULL: "iilml",
}

MAX_NAME = 256
MAX_INT = 2**63 - 1


class DecodeError(ValueError):
    pass


class UnknownVersion(DecodeError):
    pass


def _check(value: Any, spec: str) -> bool:
    if spec == "s":
        return type(value) is str and len(value) <= MAX_NAME
    if spec == "i":
        return type(value) is int and 0 <= value <= MAX_INT
    if spec == "b":
        return type(value) is bool
    if spec == "m":
        return type(value) is dict
    if spec == "M":
        return value is None or type(value) is dict
    if spec == "y":
        return type(value) is bytes
    if spec == "f":
        return (type(value) is int or type(value) is float) and value == value  # rejects NaN
    if spec == "l":
        return type(value) is list
    return False


def _name(v: Any) -> bool:
    return type(v) is str and len(v) <= MAX_NAME


def _uint(v: Any) -> bool:
    return type(v) is int and 0 <= v <= MAX_INT


def _port(v: Any) -> bool:
    return type(v) is int and 0 <= v <= 65535


# Hand-written per type: this runs for every message of every packet, so it must be cheap.
VALIDATORS: dict[int, Any] = {
    MSG_PING: lambda m: _uint(m[1]) and _name(m[2]) and _name(m[3]),
    MSG_INDIRECT_PING: lambda m: _uint(m[1]) and _name(m[2]) and _name(m[3]) and _port(m[4]),
    MSG_ACK: lambda m: _uint(m[1]),
    MSG_NACK: lambda m: _uint(m[1]),
    MSG_ALIVE: lambda m: _name(m[1]) and _uint(m[2]) and _name(m[3]) and _port(m[4]) and type(m[5]) is dict,
    MSG_SUSPECT: lambda m: _name(m[1]) and _uint(m[2]) and _name(m[3]),
    MSG_DEAD: lambda m: _name(m[1]) and _uint(m[2]) and _name(m[3]),
    MSG_TABLE: lambda m: (_name(m[1]) and _name(m[2]) and (m[3] is None or type(m[3]) is dict)
                          and _uint(m[4]) and _name(m[5]) and _check(m[6], "f")),
    MSG_KEYOP: lambda m: _name(m[1]) and type(m[2]) is bytes,
    MSG_PUSHPULL: lambda m: (_uint(m[1]) and _uint(m[2]) and type(m[3]) is list and type(m[4]) is dict
                             and type(m[5]) is list),
}
LENGTHS = {t: len(s) + 1 for t, s in SCHEMAS.items()}


def validate(msg: Any) -> list[Any] | None:
    """Return msg if it is a well-formed message of a known type, None for an unknown type.
    Raises DecodeError if it is malformed."""
    if type(msg) is not list or not msg or type(msg[0]) is not int:
        raise DecodeError("message is not [type, ...]")
    check = VALIDATORS.get(msg[0])
    if check is None:
        return None
    if len(msg) < LENGTHS[msg[0]] or not check(msg):
        raise DecodeError(f"message type {msg[0]}: bad field")
    return msg


def pack(msg: Any) -> bytes:
    return msgpack.packb(msg, use_bin_type=True)


_HEADER_CACHE: dict[str, bytes] = {}


def packet_overhead(sender: str) -> int:
    """Bytes of a packet that are not its messages (the array header of up to 65535 messages)."""
    return len(_header(sender)) + 3


def _header(sender: str) -> bytes:
    h = _HEADER_CACHE.get(sender)
    if h is None:
        h = b"\x93" + msgpack.packb(VERSION) + msgpack.packb(sender, use_bin_type=True)
        _HEADER_CACHE[sender] = h
    return h


def build_packet(sender: str, msgs: list[bytes]) -> bytes:
    """Concatenate already-packed messages into one packet without re-encoding them."""
    n = len(msgs)
    if n < 16:
        count = bytes([0x90 | n])
    else:
        count = b"\xdc" + n.to_bytes(2, "big")
    return _header(sender) + count + b"".join(msgs)


def parse_packet(data: bytes) -> tuple[str, list[Any]]:
    """Return (sender, raw messages). Messages still need validate()."""
    try:
        obj = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as e:  # msgpack raises a zoo of ValueError/TypeError/ExtraData/StackError
        raise DecodeError(f"not msgpack: {type(e).__name__}") from None
    if type(obj) is not list or len(obj) < 3:
        raise DecodeError("packet is not [version, sender, msgs]")
    if obj[0] != VERSION or type(obj[0]) is not int:
        raise UnknownVersion(f"version {obj[0]!r}")
    if not _check(obj[1], "s") or type(obj[2]) is not list:
        raise DecodeError("bad packet header")
    return obj[1], obj[2]
