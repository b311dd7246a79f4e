"""Gossip TCP stream framing: what is authenticated before anything is buffered."""

from __future__ import annotations

import pytest

from overlaynet.gossip.keyring import OVERHEAD, Keyring, generate_key
from overlaynet.gossip.stream import CHUNK, MAX_HEADER, Decoder, StreamAuthError, StreamError, encode

pytestmark = pytest.mark.unit


def decode(keyring, data: bytes, max_body: int = 1 << 20) -> bytes:
    decoder = Decoder(keyring, max_body)
    view = memoryview(data)
    while True:
        n = decoder.need()
        assert 0 < n <= max(MAX_HEADER, CHUNK + OVERHEAD)  # never asked to hold more than a chunk
        body = decoder.feed(bytes(view[:n]))
        view = view[n:]
        if body is not None:
            assert not view
            return body


@pytest.mark.parametrize("size", [1, CHUNK - 1, CHUNK, 3 * CHUNK + 5])
@pytest.mark.parametrize("sealed", [True, False])
def test_roundtrip(size, sealed):
    keyring = Keyring([generate_key()]) if sealed else None
    body = bytes(i % 251 for i in range(size))
    assert decode(keyring, encode(keyring, body)) == body


def test_wrong_key_is_refused_at_the_header():
    decoder = Decoder(Keyring([generate_key()]), 1 << 20)
    data = encode(Keyring([generate_key()]), b"x" * 100_000)
    decoder.feed(data[:2])
    with pytest.raises(StreamAuthError):
        decoder.feed(data[2:2 + decoder.need()])


def test_chunks_cannot_be_spliced_from_another_stream():
    keyring = Keyring([generate_key()])
    one, two = encode(keyring, b"a" * (2 * CHUNK)), encode(keyring, b"b" * (2 * CHUNK))
    head = 2 + int.from_bytes(one[:2], "big")
    spliced = one[:head] + two[head:]
    with pytest.raises(StreamAuthError):
        decode(keyring, spliced)


def test_announced_size_over_the_limit_is_refused_before_the_body():
    keyring = Keyring([generate_key()])
    with pytest.raises(StreamError, match="limit"):
        decode(keyring, encode(keyring, b"z" * 5000), max_body=4096)


def test_an_unsealed_length_header_is_refused():
    decoder = Decoder(Keyring([generate_key()]), 1 << 20)
    with pytest.raises(StreamError):
        decoder.feed((64 << 20).to_bytes(4, "big")[:2])  # v1's 64 MiB length prefix
