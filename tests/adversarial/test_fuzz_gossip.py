"""Fuzzing the gossip edges through the real transport: a GossipNode on loopback sockets gets
hypothesis-made UDP datagrams and TCP streams (garbage, well-framed garbage, msgpack shaped like
packets, truncations). Each node must not crash, must count what it refused, and must keep working
with its real peer afterwards. Bounded budget: a few hundred examples, well under a minute.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overlaynet.gossip import codec
from overlaynet.gossip.keyring import Keyring, generate_key
from overlaynet.gossip.stream import encode
from overlaynet.gossip.transport import GossipNode
from tests.support.loop_thread import LoopThread

pytestmark = pytest.mark.adversarial

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Running(LoopThread):
    """A real GossipNode and its real peer, on a loop in a thread of its own."""

    def __init__(self, keyring_for: Callable[[], Keyring | None]) -> None:
        super().__init__()
        self.target = GossipNode("target", "127.0.0.1", "127.0.0.1", 0, keyring_for())
        self.peer = GossipNode("peer", "127.0.0.1", "127.0.0.1", 0, keyring_for())
        self.call(self.target.start())
        self.call(self.peer.start())
        assert self.call(self.peer.join([("127.0.0.1", self.target.port)])) == 1

    def still_works(self, key: str) -> None:
        """The peer's table write reaches the target (and back): the node kept working."""
        self.sync(lambda: self.peer.set("fuzz", key, {"n": 1}))
        deadline = time.monotonic() + 15
        while key not in self.sync(lambda: self.target.table("fuzz")):
            assert time.monotonic() < deadline, "the fuzzed node stopped taking its peer's updates"
            time.sleep(0.05)

    def close(self) -> None:
        self.call(self.peer.stop())
        self.call(self.target.stop())
        super().close()


def _keyed() -> Callable[[], Keyring]:
    key = generate_key()
    return lambda: Keyring([key])


@pytest.fixture(scope="module", params=["plaintext", "encrypted"])
def node(request: pytest.FixtureRequest) -> Iterator[Running]:
    running = Running((lambda: None) if request.param == "plaintext" else _keyed())
    try:
        yield running
    finally:
        running.close()


# msgpack values shaped like gossip packets: [version, sender, [msg, ...]] with msg [type, fields...].
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1), st.floats(),
                    st.text(max_size=20), st.binary(max_size=20))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=6),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=20)
messages = st.lists(st.integers(0, 12), min_size=1, max_size=1).flatmap(
    lambda t: st.lists(values, max_size=7).map(lambda fields: [t[0], *fields]))
packets = st.tuples(st.sampled_from([codec.VERSION, 0, 2, "1"]), st.text(max_size=10),
                    st.lists(messages, max_size=5)).map(lambda p: msgpack.packb(list(p), use_bin_type=True))
payloads = st.one_of(st.binary(max_size=1500), packets)


def send_udp(port: int, data: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(data, ("127.0.0.1", port))


def send_tcp(port: int, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            while s.recv(65536):
                pass
        except (ConnectionResetError, BrokenPipeError, TimeoutError):
            pass  # the node hung up on garbage: what it should do


def refused(stats: dict[str, int]) -> int:
    return sum(stats.get(k, 0) for k in ("malformed", "auth_failed", "unknown_version", "oversize",
                                          "stream_failures", "unknown_type"))


@FUZZ
@given(data=payloads)
def test_datagrams(node: Running, data: bytes) -> None:
    sealed = data if node.target.keyring is None else node.target.keyring.encrypt(data, b"udp")
    send_udp(node.target.port, data)  # as is (fails authentication when encrypted)
    send_udp(node.target.port, sealed)  # and sealed with the right key: reaches the parser


@FUZZ
@given(body=payloads, how=st.sampled_from(["framed", "raw", "truncated", "wrong-key"]))
def test_streams(node: Running, body: bytes, how: str) -> None:
    keyring = node.target.keyring
    if how == "wrong-key":
        data = encode(Keyring([generate_key()]), body or b"x")
    elif how == "raw":
        data = body
    else:
        inner = body if keyring is None else keyring.encrypt(body, b"tcp")
        data = encode(keyring, inner or b"x")
        if how == "truncated":
            data = data[: len(data) // 2]
    send_tcp(node.target.port, data)


def test_the_fuzzed_node_kept_working_and_counted_what_it_refused(node: Running) -> None:
    # Runs after the fuzzers (same module-scoped node); the known garbage below makes it stand alone.
    for n in range(120):
        send_udp(node.target.port, bytes([0x93, n]) + b"\xff" * n)
    node.still_works(f"after-{time.monotonic_ns()}")
    stats = node.sync(node.target.stats)
    assert stats["internal_errors"] == 0 and stats["subscriber_errors"] == 0, stats
    assert refused(stats) > 100, stats
