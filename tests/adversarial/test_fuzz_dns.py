"""Fuzzing overlayd's DNS server through its real sockets: overlayd's `Server` (dns/server.py) on
loopback UDP and TCP gets hypothesis-made queries (garbage, mangled real queries, odd names and
types, EDNS sizes, TCP length prefixes that lie). It must never crash, must count what it could
not parse, must keep every UDP answer within 512 bytes (1232 with EDNS), and must keep answering.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pytest
from dnslib import EDNS0, QTYPE, DNSHeader, DNSQuestion, DNSRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overlaynet.dns.answer import MAX_UDP_SIZE, UDP_SIZE, Zone
from overlaynet.dns.server import COUNTERS, Binding, Server
from tests.support.loop_thread import LoopThread
from tests.support.records import endpoint_record

pytestmark = pytest.mark.adversarial

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ZONE = Zone.build("fz", "198.19.73.0/24",
                  [endpoint_record("fz", f"198.19.73.{i}", ["many", f"host{i}"]) for i in range(2, 60)])


class Running(LoopThread):
    def __init__(self) -> None:
        super().__init__()
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        for s in (udp, tcp):
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
        tcp.listen(16)
        self.udp_addr, self.tcp_addr = udp.getsockname(), tcp.getsockname()
        self.server = Server(Binding("fz", "127.0.0.1", "/nonexistent", (0, 0)), lambda _: ZONE,
                             dict.fromkeys(COUNTERS, 0), limiter=None)
        self.call(self.server.start(udp, tcp))

    def close(self) -> None:
        self.sync(self.server.close)
        super().close()


@pytest.fixture(scope="module")
def dns() -> Iterator[Running]:
    running = Running()
    try:
        yield running
    finally:
        running.close()


def ask_udp(addr: tuple[str, int], data: bytes) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.1)  # loopback answers in well under a millisecond
        s.sendto(data, addr)
        try:
            return s.recv(65535)
        except TimeoutError:
            return None


def query(name: str, qtype: int, edns: int | None) -> bytes:
    q = DNSRecord(DNSHeader(id=4242, rd=1), q=DNSQuestion(name, qtype))  # dnslib's random id upsets hypothesis
    if edns is not None:
        q.add_ar(EDNS0(udp_len=edns))
    return q.pack()


names = st.one_of(st.sampled_from(["many", "host7", "many.fz", "7.73.19.198.in-addr.arpa", "fz", "x.y.z"]),
                  st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.", min_size=1, max_size=60)
                  .filter(lambda n: ".." not in n and not n.startswith(".")))
queries = st.builds(query, names, st.integers(0, 65535), st.one_of(st.none(), st.integers(0, 65535)))
mangled = st.tuples(queries, st.integers(0, 60), st.binary(min_size=1, max_size=4)).map(
    lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + len(t[2]):])
datagrams = st.one_of(queries, mangled, st.binary(max_size=600))


@FUZZ
@given(data=datagrams)
def test_udp_queries(dns: Running, data: bytes) -> None:
    reply = ask_udp(dns.udp_addr, data)
    if reply is None:
        return  # dropped (and counted) as malformed
    parsed = DNSRecord.parse(reply)
    assert parsed.header.qr == 1
    edns = [rr for rr in DNSRecord.parse(data).ar if rr.rtype == QTYPE.OPT]
    assert len(reply) <= (MAX_UDP_SIZE if edns else UDP_SIZE) and len(parsed.rr) <= 16


@FUZZ
@given(data=datagrams, lie=st.integers(-3, 3))
def test_tcp_queries(dns: Running, data: bytes, lie: int) -> None:
    length = max(0, min(65535, len(data) + lie))
    with socket.create_connection(dns.tcp_addr, timeout=2) as s:
        try:
            s.sendall(struct.pack("!H", length) + data)
            s.shutdown(socket.SHUT_WR)
            while s.recv(65535):
                pass
        except (ConnectionResetError, BrokenPipeError, TimeoutError):
            pass


def test_the_fuzzed_server_kept_answering_and_counted_the_garbage(dns: Running) -> None:
    # Runs after the fuzzers (same module-scoped server); the known inputs below make it stand alone.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for n in range(60):
            s.sendto(b"\x00" * (n % 11), dns.udp_addr)  # shorter than a DNS header: malformed
    for _ in range(11):
        assert ask_udp(dns.udp_addr, query("many", QTYPE.A, None)) is not None
    reply = ask_udp(dns.udp_addr, query("host7", QTYPE.A, None))
    assert reply is not None and [str(rr.rdata) for rr in DNSRecord.parse(reply).rr] == ["198.19.73.7"]
    counters = dns.sync(lambda: dict(dns.server.counters))
    assert counters["malformed"] > 50 and counters["answered"] > 10, counters
    assert counters["errors"] < counters["queries"], counters  # errors = FORMERR/NOTIMP answers, not crashes
