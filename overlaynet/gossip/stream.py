"""TCP stream framing for gossip: authenticate before buffering (sans-IO).

A push-pull frame can be megabytes; an attacker without the key must not make us hold any of it.
So a stream is a small sealed header, then the body in sealed chunks, each opened as it arrives:

    u16 header length (<= MAX_HEADER) | seal("tcp-head", msgpack [STREAM_VERSION, body_length])
    chunk 0 | chunk 1 | ...   each = seal("tcp-chunk" + header nonce + u32 index, <= CHUNK body bytes)

A chunk's size follows from the authenticated body length, so chunks carry no length of their own.
Before the header is authenticated at most 2 + MAX_HEADER bytes are read; after it, at most one
sealed chunk is held unauthenticated. Binding every chunk to the header's nonce and its index means
chunks cannot be reordered, dropped or spliced from another stream. Without a keyring (plaintext
clusters) the same layout travels unsealed and only the size limits protect the receiver.
"""

from __future__ import annotations

import struct

import msgpack

from .keyring import KEY_ID_LEN, NONCE_LEN, OVERHEAD, AuthError, Keyring

STREAM_VERSION = 2  # 1 was a bare u32 length + one sealed frame (buffered before authentication)
MAX_HEADER = 256
CHUNK = 16 * 1024
HEADER_CHANNEL = b"tcp-head"
CHUNK_CHANNEL = b"tcp-chunk"
_HEADER_LEN = struct.Struct("!H")
_INDEX = struct.Struct("!I")


class StreamError(ValueError):
    """The stream is malformed or too large (counted as a failure)."""


class StreamAuthError(StreamError):
    """The header or a chunk is not sealed with an installed key (counted as an auth failure)."""


def _chunk_channel(header_nonce: bytes, index: int) -> bytes:
    return CHUNK_CHANNEL + header_nonce + _INDEX.pack(index)


def encode(keyring: Keyring | None, body: bytes) -> bytes:
    """The bytes to write for one frame."""
    header = msgpack.packb([STREAM_VERSION, len(body)])
    if keyring is not None:
        header = keyring.encrypt(header, HEADER_CHANNEL)
    nonce = _header_nonce(keyring, header)
    parts = [_HEADER_LEN.pack(len(header)), header]
    for index, start in enumerate(range(0, len(body), CHUNK)):
        chunk = body[start:start + CHUNK]
        parts.append(chunk if keyring is None else keyring.encrypt(chunk, _chunk_channel(nonce, index)))
    return b"".join(parts)


def _header_nonce(keyring: Keyring | None, sealed_header: bytes) -> bytes:
    if keyring is None:
        return b""
    start = 1 + KEY_ID_LEN  # after the format byte and the key id (see keyring.py)
    return sealed_header[start:start + NONCE_LEN]


class Decoder:
    """Feed it exactly `need()` bytes at a time; `feed` returns the body once it is complete.

    Holds at most one chunk that is not yet authenticated; the body grows only with opened chunks.
    """

    def __init__(self, keyring: Keyring | None, max_body: int) -> None:
        self.keyring = keyring
        self.max_body = max_body
        self.authenticated = False
        self._need = _HEADER_LEN.size
        self._stage = "length"
        self._nonce = b""
        self._left = 0
        self._index = 0
        self._body = bytearray()

    def need(self) -> int:
        return self._need

    def feed(self, data: bytes) -> bytes | None:
        if len(data) != self._need:
            raise StreamError("fed the wrong number of bytes")
        if self._stage == "length":
            (length,) = _HEADER_LEN.unpack(data)
            if not 0 < length <= MAX_HEADER:
                raise StreamError(f"stream header of {length} bytes (limit {MAX_HEADER})")
            self._stage, self._need = "header", length
            return None
        if self._stage == "header":
            self._open_header(data)
        else:
            chunk = self._open(data, _chunk_channel(self._nonce, self._index))
            self._body += chunk
            self._index += 1
            self._left -= len(chunk)
        if self._left == 0:
            return bytes(self._body)
        self._need = min(CHUNK, self._left) + (0 if self.keyring is None else OVERHEAD)
        return None

    def _open(self, sealed: bytes, channel: bytes) -> bytes:
        if self.keyring is None:
            return sealed
        try:
            return self.keyring.decrypt(sealed, channel)
        except AuthError as e:
            raise StreamAuthError(str(e)) from None

    def _open_header(self, data: bytes) -> None:
        plain = self._open(data, HEADER_CHANNEL)
        try:
            version, length = msgpack.unpackb(plain)
        except Exception:  # msgpack's zoo of errors, or not a 2-element array
            raise StreamError("stream header is not [version, length]") from None
        if version != STREAM_VERSION or type(version) is not int:
            raise StreamError(f"stream version {version!r} (this host speaks {STREAM_VERSION})")
        if type(length) is not int or not 0 < length <= self.max_body:
            raise StreamError(f"stream body of {length!r} bytes (limit {self.max_body})")
        self.authenticated = True
        self._nonce = _header_nonce(self.keyring, data)
        self._left = length
        self._stage = "chunks"
