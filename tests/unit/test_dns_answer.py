"""The DNS answers of one network (overlaynet.dns.answer): pure, no sockets."""

from __future__ import annotations

import pytest
from dnslib import EDNS0, QTYPE, RCODE, DNSRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from overlaynet.dns.answer import MAX_UDP_ANSWERS, MAX_UDP_SIZE, TTL, Zone, answer
from overlaynet.errors import BadRequest
from overlaynet.model import gateway_mac, validate_dns_name, validate_dns_names
from tests.support.records import endpoint_record

pytestmark = pytest.mark.unit

ENDPOINTS = [
    endpoint_record("blue", "198.19.1.20", ["web", "front"]),
    endpoint_record("blue", "198.19.1.3", ["web"]),  # Compose scale: a shared name
    endpoint_record("blue", "198.19.1.7", ["db.backend"]),
    endpoint_record("blue", "198.19.1.9", []),
    endpoint_record("red", "198.19.2.5", ["other"]),  # another network: never answered
]
ZONE = Zone.build("blue", "198.19.1.0/24", ENDPOINTS)


def ask(name: str, qtype: str = "A", zone: Zone = ZONE, counters: dict | None = None) -> DNSRecord:
    data = answer(zone, DNSRecord.question(name, qtype).pack(), counters)
    assert data is not None
    return DNSRecord.parse(data)


def rrs(reply: DNSRecord) -> list[str]:
    return [str(rr.rdata) for rr in reply.rr]


def test_a_records_for_names_and_network_qualified_names() -> None:
    reply = ask("web")
    assert reply.header.rcode == RCODE.NOERROR and reply.header.aa == 1
    assert rrs(reply) == ["198.19.1.3", "198.19.1.20"]  # every address with the name, sorted
    assert all(rr.ttl == TTL for rr in reply.rr)
    assert rrs(ask("web.blue")) == rrs(ask("WEB.Blue.")) == rrs(reply)  # case-insensitive
    assert rrs(ask("front")) == ["198.19.1.20"]
    assert rrs(ask("db.backend")) == rrs(ask("db.backend.blue")) == ["198.19.1.7"]
    assert str(ask("Web").q.qname) == "Web."  # the question comes back as asked


def test_other_types_of_an_existing_name_are_nodata_not_nxdomain() -> None:
    reply = ask("web", "AAAA")
    assert reply.header.rcode == RCODE.NOERROR and rrs(reply) == []


def test_ptr_inside_the_subnet() -> None:
    assert rrs(ask("20.1.19.198.in-addr.arpa", "PTR")) == ["front.blue.", "web.blue."]
    assert ask("9.1.19.198.in-addr.arpa", "PTR").header.rcode == RCODE.NXDOMAIN  # no name
    assert ask("5.2.19.198.in-addr.arpa", "PTR").header.rcode == RCODE.REFUSED  # not our subnet


def test_nxdomain_inside_the_scope_refused_outside() -> None:
    for name in ("nobody", "nobody.blue", "backend", "other"):
        assert ask(name).header.rcode == RCODE.NXDOMAIN, name
    for name in ("example.com", "other.red", "blue.example.org"):
        reply = ask(name)
        assert reply.header.rcode == RCODE.REFUSED and reply.header.aa == 0, name


def test_counters() -> None:
    counters: dict[str, int] = {}
    ask("web", counters=counters)
    ask("nobody", counters=counters)
    ask("example.com", counters=counters)
    assert answer(ZONE, b"\x00", counters) is None
    assert counters == {"queries": 3, "answered": 1, "nxdomain": 1, "refused": 1, "malformed": 1}


def test_responses_and_odd_queries_are_never_answered_with_data() -> None:
    response = DNSRecord.question("web").reply().pack()
    assert answer(ZONE, response) is None  # a response: dropped, no reply loops
    notify = DNSRecord.question("web")
    notify.header.opcode = 4
    assert DNSRecord.parse(answer(ZONE, notify.pack())).header.rcode == RCODE.NOTIMP


def test_large_answers_are_truncated_over_udp_and_whole_over_tcp() -> None:
    many = [endpoint_record("blue", f"198.19.1.{i}", ["many"]) for i in range(1, 61)]
    zone = Zone.build("blue", "198.19.1.0/24", many)
    query = DNSRecord.question("many").pack()
    udp = DNSRecord.parse(answer(zone, query))
    assert udp.header.tc == 1 and len(udp.rr) == MAX_UDP_ANSWERS  # what fits, and "ask over TCP"
    tcp = DNSRecord.parse(answer(zone, query, tcp=True))
    assert tcp.header.tc == 0 and len(tcp.rr) == 60
    edns = DNSRecord.question("many")
    edns.add_ar(EDNS0(udp_len=4096))
    assert len(DNSRecord.parse(answer(zone, edns.pack())).rr) == MAX_UDP_ANSWERS
    few = Zone.build("blue", "198.19.1.0/24", many[:MAX_UDP_ANSWERS])
    whole = DNSRecord.parse(answer(few, query))
    assert whole.header.tc == 0 and len(whole.rr) == MAX_UDP_ANSWERS


def test_udp_answers_fit_the_size_the_client_can_take() -> None:
    """Long PTR names: 16 records would not fit 512 bytes; with EDNS the size is clamped to 1232."""
    name = "n" * 60
    zone = Zone.build("blue", "198.19.1.0/24",
                      [endpoint_record("blue", "198.19.1.5", [f"{name}{i:02d}"], ep_id=str(i)) for i in range(30)])
    query = DNSRecord.question("5.1.19.198.in-addr.arpa", "PTR")
    plain = answer(zone, query.pack())
    assert plain is not None and len(plain) <= 512 and DNSRecord.parse(plain).header.tc == 1
    query.add_ar(EDNS0(udp_len=65000))
    clamped = answer(zone, query.pack())
    assert clamped is not None and 512 < len(clamped) <= MAX_UDP_SIZE and DNSRecord.parse(clamped).header.tc == 1


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=600))
def test_garbage_never_crashes(data: bytes) -> None:
    reply = answer(ZONE, data)
    if reply is not None:
        assert DNSRecord.parse(reply).header.qr == 1


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20)
                .map(str.encode), min_size=1, max_size=4),
       st.sampled_from([QTYPE.A, QTYPE.PTR, QTYPE.AAAA, QTYPE.ANY, QTYPE.TXT]))
def test_any_question_name_gets_a_well_formed_answer(labels: list[bytes], qtype: int) -> None:
    """Any printable labels (dots and escapes inside labels included) get NOERROR/NXDOMAIN/REFUSED."""
    query = DNSRecord.question("x")
    query.q.qname.label = tuple(labels)
    query.q.qtype = qtype
    data = answer(ZONE, query.pack())
    assert data is not None
    reply = DNSRecord.parse(data)
    assert reply.header.rcode in (RCODE.NOERROR, RCODE.NXDOMAIN, RCODE.REFUSED)


def test_zone_ignores_other_networks() -> None:
    zone = Zone.build("Blue", "198.19.1.0/24", ENDPOINTS)
    assert zone.names == {}  # the network name must match exactly: "Blue" is not "blue"
    assert set(ZONE.names) == {"web", "front", "db.backend"}


def test_dns_name_validation() -> None:
    assert validate_dns_name("Web") == "web"
    assert validate_dns_name("db.backend.") == "db.backend"
    assert validate_dns_name("a" * 63) == "a" * 63
    for bad in ("", "-web", "web-", "we_b", "a" * 64, "a..b", ".", "web..", 7, None, "wéb", "a b"):
        with pytest.raises(BadRequest, match="invalid DNS name"):
            validate_dns_name(bad)
    assert validate_dns_names(["Web", "web", "db"]) == ["web", "db"]
    assert validate_dns_names(None) == []
    with pytest.raises(BadRequest, match="list"):
        validate_dns_names("web")
    with pytest.raises(BadRequest, match="too many"):
        validate_dns_names([f"n{i}" for i in range(33)])


def test_gateway_mac_is_locally_administered_unicast_and_per_vni() -> None:
    assert gateway_mac(4097) == "02:0d:00:00:10:01"
    assert gateway_mac(0xFFFFFF) == "02:0d:00:ff:ff:ff"
    assert int(gateway_mac(1)[:2], 16) & 0b11 == 0b10  # local, unicast
    assert gateway_mac(1) != gateway_mac(2)
