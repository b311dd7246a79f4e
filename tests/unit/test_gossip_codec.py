"""Wire robustness: arbitrary bytes never crash the core, bad input is counted, packets fit 1400 B."""

from __future__ import annotations

import random

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overlaynet.gossip import GossipCore, Keyring, codec
from overlaynet.gossip.keyring import generate_key

pytestmark = pytest.mark.unit

SRC = ("198.18.0.99", 7946)


def make_core(keyring: Keyring | None = None) -> GossipCore:
    core = GossipCore("me", "198.18.0.1", 7946, rng=random.Random(1), keyring=keyring)
    core.start(0.0)
    return core


def assert_survived(core: GossipCore) -> None:
    assert core.stats["internal_errors"] == 0
    core.tick(3.0)  # timers still run afterwards
    assert core.stats["internal_errors"] == 0


PLAIN = make_core()
SEALED = make_core(Keyring([generate_key()]))

scalars = (st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats() | st.text(max_size=20)
           | st.binary(max_size=20))
msgpack_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=1500))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    for core in (PLAIN, SEALED):
        core.handle_datagram(data, SRC, 1.0)
        reply = core.handle_stream(data, SRC, 1.0)
        assert reply is None or isinstance(reply, bytes)
    assert PLAIN.stats["internal_errors"] == 0 and SEALED.stats["internal_errors"] == 0


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(
    msgpack_values,
    st.tuples(st.sampled_from(sorted(codec.MESSAGE_TYPES)), st.lists(scalars | msgpack_values, max_size=7))
      .map(lambda t: [t[0], *t[1]]),
), max_size=6))
def test_structured_garbage_never_raises(msgs: list) -> None:
    core = make_core()
    data = msgpack.packb([codec.VERSION, "peer", msgs], use_bin_type=True)
    core.handle_datagram(data[:1400], SRC, 2.0)
    core.handle_stream(data, SRC, 2.0)
    assert_survived(core)


def test_bad_input_is_counted_by_kind() -> None:
    core = make_core()
    core.handle_datagram(b"\xc1garbage", SRC, 1.0)
    assert core.stats["malformed"] == 1
    core.handle_datagram(msgpack.packb([99, "peer", []]), SRC, 1.0)
    assert core.stats["unknown_version"] == 1
    core.handle_datagram(b"\x00" * 1401, SRC, 1.0)
    assert core.stats["oversize"] == 1
    # An unknown message type is skipped; the known one next to it still counts.
    alive = codec.pack(codec.Alive("peer", 1, "198.18.0.2", 7946, {}))
    core.handle_datagram(codec.build_packet("peer", [codec.pack([77, "future"]), alive]), SRC, 1.0)
    assert core.stats["unknown_type"] == 1
    assert core.member("peer") is not None
    # Ill-typed fields are malformed, not crashes.
    core.handle_datagram(codec.build_packet("peer", [codec.pack([5, "x", -1, 3, "p", []])]), SRC, 1.0)
    assert core.stats["malformed"] == 2
    # Full state over UDP is refused.
    core.handle_datagram(codec.build_packet("peer", [codec.pack(codec.PushPull(0, 0, [], {}, []))]), SRC, 1.0)
    assert core.stats["malformed"] == 3
    assert_survived(core)


def test_plaintext_is_refused_by_an_encrypting_node() -> None:
    core = make_core(Keyring([generate_key()]))
    core.handle_datagram(codec.build_packet("peer", [codec.pack(codec.Ping(1, "me", "peer"))]), SRC, 1.0)
    assert core.stats["auth_failed"] == 1
    assert core.pop_datagrams() == [] or all(d.dest != SRC for d in core.pop_datagrams())


def test_piggybacked_packets_stay_within_1400_bytes() -> None:
    core = make_core(Keyring([generate_key()]))
    for i in range(300):
        alive = codec.pack(codec.Alive(f"host-{i:04d}", 1, f"198.18.{i // 250}.{i % 250}", 7946,
                                       {"vtep": "198.18.0.1", "mac": "02:00:00:00:00:01"}))
        core.handle_datagram(core.keyring.encrypt(codec.build_packet("peer", [alive]), b"udp"), SRC, 1.0)
    for i in range(200):
        core.set("endpoints", f"ep-{i}", {"ip": f"198.19.0.{i}", "mac": "02:00:00:00:01:00"}, 1.0)
    core.set("networks", "huge", {"blob": "y" * 3000}, 1.0)  # goes over TCP instead
    for t in range(1, 200):
        core.tick(1.0 + t * 0.05)
    sizes = [len(d.data) for d in core.pop_datagrams()]
    assert sizes and max(sizes) <= 1400
    assert sum(1 for s in sizes if s > 1200) > 10  # packets are actually filled, not one update each
    assert any(s.tag == "gossip" for s in core.pop_streams())


# One example of every message, with the array it must be on the wire (docs/gossip.md's table).
WIRE_EXAMPLES = [
    (codec.Ping(7, "b", "a"), [1, 7, "b", "a"]),
    (codec.IndirectPing(7, "c", "198.18.0.3", 7946), [2, 7, "c", "198.18.0.3", 7946]),
    (codec.Ack(7), [3, 7]),
    (codec.Nack(7), [4, 7]),
    (codec.Alive("a", 2, "198.18.0.1", 7946, {"vtep": "x"}), [5, "a", 2, "198.18.0.1", 7946, {"vtep": "x"}]),
    (codec.Suspect("a", 2, "b"), [6, "a", 2, "b"]),
    (codec.Dead("a", 2, "a"), [7, "a", 2, "a"]),
    (codec.Table("endpoints", "e1", None, 9, "a", 1.5), [8, "endpoints", "e1", None, 9, "a", 1.5]),
    (codec.KeyOp("use", b"k" * 16), [9, "use", b"k" * 16]),
    (codec.PushPull(3, 9, [codec.WireMember("a", "198.18.0.1", 7946, 2, 1, {})], {"t": [1, 5]},
                    [codec.WireRecord("t", "k", {"v": 1}, 9, "a", 0.0)]),
     [10, 3, 9, [["a", "198.18.0.1", 7946, 2, 1, {}]], {"t": [1, 5]}, [["t", "k", {"v": 1}, 9, "a", 0.0]]]),
]


@pytest.mark.parametrize(("msg", "array"), WIRE_EXAMPLES, ids=lambda v: type(v).__name__)
def test_every_message_has_its_documented_wire_layout(msg, array) -> None:
    data = codec.pack(msg)
    assert msgpack.unpackb(data) == array  # version 1 layout, unchanged
    assert codec.decode_message(msgpack.packb(array, use_bin_type=True)) == msg
    # Extra trailing fields are ignored (room for additive changes within a version).
    assert codec.decode_message(msgpack.packb([*array, "future"], use_bin_type=True)) == msg


def test_every_type_has_one_handler() -> None:
    core = make_core()
    assert set(core._handlers) == set(codec.MESSAGE_TYPES.values())


def test_a_bad_entry_rejects_the_whole_push_pull() -> None:
    core = make_core()
    good = ["peer", "198.18.0.2", 7946, 1, 0, {}]
    for bad in (["peer", "198.18.0.2", 7946, 1, 9, {}], ["peer", "198.18.0.2", 70000, 1, 0, {}],
                ["peer", "198.18.0.2", 7946, -1, 0, {}], ["peer"]):
        frame = codec.build_packet("peer", [msgpack.packb([10, 0, 0, [good, bad], {}, []])])
        assert core.handle_stream(frame, SRC, 1.0) is None
    assert core.stats["malformed"] == 4 and core.member("peer") is None
    frame = codec.build_packet("peer", [msgpack.packb([10, 0, 0, [good], {}, []])])
    assert core.handle_stream(frame, SRC, 1.0) is not None  # the reply
    assert core.member("peer") is not None


def test_record_wire_roundtrip_clamps_a_tombstone_lifetime() -> None:
    from overlaynet.gossip.tables import Record

    rec = Record("t", "k", None, 4, "a", expires=130.0)
    w = codec.record_to_wire(rec, now=100.0)
    assert (w.ttl, type(w)) == (30.0, codec.WireRecord)
    assert type(codec.record_to_wire(rec, 100.0, codec.Table)) is codec.Table
    back = codec.record_from_wire(w, now=1000.0, max_ttl=600.0)
    assert back.as_tuple() == ("t", "k", None, 4, "a", 1030.0)
    forever = codec.WireRecord("t", "k", None, 4, "a", float("inf"))
    assert codec.record_from_wire(forever, now=0.0, max_ttl=600.0).expires == 600.0
    assert codec.record_from_wire(codec.WireRecord("t", "k", None, 4, "a", float("nan")), 0.0, 600.0).expires == 0.0
    assert codec.record_from_wire(codec.WireRecord("t", "k", {"v": 1}, 4, "a", 5.0), 0.0, 600.0).expires is None
