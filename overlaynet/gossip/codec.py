"""Wire format: msgpack arrays, versioned from day one. Each message is defined once, below.

A packet (UDP datagram or TCP frame, before encryption) is the msgpack array
    [VERSION, sender_name, [msg, msg, ...]]
and every msg is the array [type, field, field, ...]: a msgspec Struct with `array_like=True` whose
integer `tag` is the type, so the class *is* the wire layout (field order = array order) and its
annotations are the validation. Receivers ignore extra trailing fields (room for additive changes
within a version) and skip message types they do not know; a different VERSION is dropped and counted.

Decoding never trusts input: msgspec checks every field's msgpack type and range while it decodes,
and any failure raises DecodeError (or UnknownType), which the core counts and drops.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

import msgpack
import msgspec

from .tables import Record

VERSION = 1
MAX_NAME = 256
MAX_INT = 2**63 - 1

Name = Annotated[str, msgspec.Meta(max_length=MAX_NAME)]
UInt = Annotated[int, msgspec.Meta(ge=0, le=MAX_INT)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
StateCode = Annotated[int, msgspec.Meta(ge=0, le=3)]  # state.STATE_CODES
Map = dict[str, Any]

PP_JOIN, PP_REPLY = 1, 2  # PushPull.flags


class DecodeError(ValueError):
    pass


class UnknownVersion(DecodeError):
    pass


class UnknownType(DecodeError):
    """A well-formed [type, ...] array of a type this version does not know: skipped, not malformed."""


class _Wire(msgspec.Struct, array_like=True):
    """Base of everything on the wire: encoded as an array in field order."""


# ---- the messages (tag = type number on the wire; see docs/gossip.md) ----------------------------

class Ping(_Wire, tag=1):
    seq: UInt
    target: Name  # guards against an address that now belongs to someone else
    source: Name


class IndirectPing(_Wire, tag=2):
    seq: UInt  # ack/nack go back to the UDP source
    target: Name
    addr: Name
    port: Port


class Ack(_Wire, tag=3):
    seq: UInt


class Nack(_Wire, tag=4):
    seq: UInt


class Alive(_Wire, tag=5):
    name: Name
    incarnation: UInt
    addr: Name
    port: Port
    meta: Map


class Suspect(_Wire, tag=6):
    name: Name
    incarnation: UInt
    accuser: Name


class Dead(_Wire, tag=7):
    name: Name
    incarnation: UInt
    accuser: Name  # == name: a graceful leave


class WireRecord(_Wire):
    """A table record: a Table message's fields, and one entry of PushPull.records."""

    table: Name
    key: Name
    value: Map | None  # None = tombstone
    lamport: UInt
    owner: Name
    ttl: float  # tombstone residual lifetime, seconds


class Table(WireRecord, tag=8):
    pass


class KeyOp(_Wire, tag=9):
    op: Name  # "install" | "use" | "remove"
    key: bytes


class WireMember(_Wire):
    """One entry of PushPull.members."""

    name: Name
    addr: Name
    port: Port
    incarnation: UInt
    state: StateCode
    meta: Map


class PushPull(_Wire, tag=10):
    """Full state, TCP only."""

    flags: UInt  # PP_JOIN | PP_REPLY
    lamport: UInt
    members: list[WireMember]
    digests: dict[str, Any]  # table -> [record count, xor of 64-bit record hashes]
    records: list[WireRecord]


Message = Ping | IndirectPing | Ack | Nack | Alive | Suspect | Dead | Table | KeyOp | PushPull
MESSAGE_TYPES: dict[int, type[Message]] = {
    cls.__struct_config__.tag: cls  # type: ignore[misc]
    for cls in (Ping, IndirectPing, Ack, Nack, Alive, Suspect, Dead, Table, KeyOp, PushPull)
}


# ---- records ---------------------------------------------------------------------------------------

R = TypeVar("R", bound=WireRecord)


def record_to_wire(rec: Record, now: float, kind: type[R] = WireRecord) -> R:  # type: ignore[assignment]
    """kind: WireRecord (an entry of PushPull.records) or Table (the gossiped message)."""
    ttl = 0.0 if rec.expires is None else max(0.0, rec.expires - now)
    return kind(rec.table, rec.key, rec.value, rec.lamport, rec.owner, ttl)


def record_from_wire(w: WireRecord, now: float, max_ttl: float) -> Record:
    """A tombstone's residual lifetime is clamped to ours (NaN -> 0): a peer cannot make one immortal."""
    ttl = min(max(0.0, w.ttl), max_ttl)
    return Record(w.table, w.key, w.value, w.lamport, w.owner, now + ttl if w.value is None else None)


# ---- encoding --------------------------------------------------------------------------------------

_encoder = msgspec.msgpack.Encoder()


def pack(obj: Any) -> bytes:
    """A message (or any msgpack-able value, e.g. a table value to size-check) as msgpack bytes."""
    return _encoder.encode(obj)


_map = msgspec.msgpack.Decoder(Map)


def check_value(value: Any, what: str) -> None:
    """A table value must be a map every receiver decodes to the same thing (no sets, str keys)."""
    try:
        _map.decode(msgpack.packb(value, use_bin_type=True))
    except (TypeError, ValueError, OverflowError, msgspec.DecodeError) as e:
        raise ValueError(f"table value for {what} is not msgpack-able: {e}") from None


_HEADER_CACHE: dict[str, bytes] = {}


def packet_overhead(sender: str) -> int:
    """Bytes of a packet that are not its messages (the array header of up to 65535 messages)."""
    return len(_header(sender)) + 3


def _header(sender: str) -> bytes:
    h = _HEADER_CACHE.get(sender)
    if h is None:
        h = b"\x93" + pack(VERSION) + pack(sender)
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


# ---- decoding --------------------------------------------------------------------------------------

class _Packet(msgspec.Struct, array_like=True):
    version: int
    sender: Name
    msgs: list[msgspec.Raw]


_packet = msgspec.msgpack.Decoder(_Packet)
_raw_list = msgspec.msgpack.Decoder(list[msgspec.Raw])
_name = msgspec.msgpack.Decoder(Name)
_message = msgspec.msgpack.Decoder(Message)  # type: ignore[arg-type]
_any = msgspec.msgpack.Decoder()


def parse_packet(data: bytes) -> tuple[str, list[msgspec.Raw]]:
    """Return (sender, still-encoded messages) for decode_message()."""
    try:
        p = _packet.decode(data)
        if p.version == VERSION:
            return p.sender, p.msgs
    except msgspec.DecodeError:
        pass
    # Not a well-formed packet of our version: tell an unknown version from garbage.
    try:
        parts = _raw_list.decode(data)
        if len(parts) < 3:
            raise DecodeError("packet is not [version, sender, msgs]")
        version = _any.decode(parts[0])
        if type(version) is not int or version != VERSION:
            raise UnknownVersion(f"version {version!r}")
        return _name.decode(parts[1]), _raw_list.decode(parts[2])
    except msgspec.DecodeError as e:  # ValidationError is a DecodeError too
        raise DecodeError(f"bad packet: {e}") from None


def decode_message(raw: msgspec.Raw | bytes) -> Message:
    try:
        return _message.decode(raw)
    except msgspec.DecodeError as e:
        try:
            obj = _any.decode(raw)
        except msgspec.DecodeError:
            obj = None
        if type(obj) is list and obj and type(obj[0]) is int and obj[0] not in MESSAGE_TYPES:
            raise UnknownType(f"message type {obj[0]}") from None
        raise DecodeError(f"bad message: {e}") from None
