"""What overlayd's DNS answers for one network: pure, bytes in, bytes out (dnslib does the wire format).

A `Zone` is one network's view: every endpoint name in the cluster with its addresses. Answers:
- `NAME` and `NAME.<network>` → A records of every endpoint with that name (several when names are
  shared, e.g. Compose scale), sorted, TTL `TTL`;
- `d.c.b.a.in-addr.arpa` inside the subnet → PTR `NAME.<network>` for each name of that address;
- a name inside the network's scope that nobody has → NXDOMAIN (an existing name asked for another
  type, e.g. AAAA → NOERROR without answers, so resolvers keep its A records);
- anything else → REFUSED: there is no upstream here, this server answers only for the overlay.
The scope is: single-label names, names under `<network>`, every suffix of a known name, and the
subnet's reverse names. Malformed packets give None (the caller counts and drops them).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

from dnslib import PTR, QTYPE, RCODE, RR, A, DNSError, DNSRecord

from overlaynet.model import EndpointRecord

TTL = 5  # seconds: names follow containers coming and going quickly
# Records per UDP answer: with more, the first ones come back with TC set and resolvers that can
# retry over TCP get them all (up to MAX_TCP_ANSWERS). Keeps a ~30-byte query from buying a large
# answer aimed at a spoofed source (amplification); 16 A records are ~280 bytes.
MAX_UDP_ANSWERS = 16
MAX_TCP_ANSWERS = 64
UDP_SIZE = 512  # without EDNS; with it, the size the client advertises, clamped to MAX_UDP_SIZE
# The EDNS size DNS Flag Day 2020 settled on: never IP-fragmented on common paths, and a bound on
# what one spoofed query can make us send.
MAX_UDP_SIZE = 1232


@dataclass
class Zone:
    network: str  # the network's name, lower-cased: the domain names may be qualified with
    subnet: ipaddress.IPv4Network
    names: dict[str, list[str]] = field(default_factory=dict)  # name -> sorted IPs
    reverse: dict[str, list[str]] = field(default_factory=dict)  # IP -> sorted names

    @classmethod
    def build(cls, network: str, subnet: str, endpoints: Iterable[EndpointRecord]) -> Zone:
        """From the replicated endpoint records of the whole cluster."""
        zone = cls(network.lower(), ipaddress.IPv4Network(subnet))
        for ep in endpoints:
            if ep.network != network:
                continue
            ip = ep.ip
            for name in ep.names:
                if name:
                    key = name.lower()
                    zone.names.setdefault(key, [])
                    if ip not in zone.names[key]:
                        zone.names[key].append(ip)
                    zone.reverse.setdefault(ip, [])
                    if key not in zone.reverse[ip]:
                        zone.reverse[ip].append(key)
        for ips in zone.names.values():
            ips.sort(key=ipaddress.IPv4Address)
        for names in zone.reverse.values():
            names.sort()
        return zone

    def lookup(self, qname: str) -> list[str] | None:
        """IPs for a (lower-case, dot-less at the end) name; None if it is not ours."""
        if qname in self.names:
            return self.names[qname]
        suffix = "." + self.network
        if qname.endswith(suffix):
            return self.names.get(qname[: -len(suffix)])
        return None

    def in_scope(self, qname: str) -> bool:
        if "." not in qname or qname == self.network or qname.endswith("." + self.network):
            return True
        return any(name == qname or name.endswith("." + qname) for name in self.names)

    def reverse_ip(self, qname: str) -> str | None:
        """The IP of a reverse name inside the subnet (`4.3.19.198.in-addr.arpa` → 198.19.3.4)."""
        if not qname.endswith(".in-addr.arpa"):
            return None
        parts = qname[: -len(".in-addr.arpa")].split(".")
        if len(parts) != 4 or not all(p.isdigit() and len(p) <= 3 for p in parts):
            return None
        try:
            ip = ipaddress.IPv4Address(".".join(reversed(parts)))
        except ValueError:
            return None
        return str(ip) if ip in self.subnet else None


def _qname(record: DNSRecord) -> str | None:
    """The question's name, lower-case, without the final dot; None if it cannot be one of ours."""
    try:
        labels = [label.decode("ascii") for label in record.q.qname.label]
    except UnicodeDecodeError:
        return None
    if any("." in label or not label for label in labels):
        return None
    return ".".join(labels).lower()


def answer(zone: Zone, query: bytes, counters: dict[str, int] | None = None, tcp: bool = False) -> bytes | None:
    """The reply to one DNS message, or None when it is not a query we can parse (drop it).

    Over UDP (tcp=False) an answer with more than MAX_UDP_ANSWERS records, or larger than the client
    can take, comes back truncated: TC set, only the records that fit, so the client asks again
    over TCP.
    """
    counts = counters if counters is not None else {}

    def count(what: str) -> None:
        counts[what] = counts.get(what, 0) + 1

    try:
        request = DNSRecord.parse(query)
    except (DNSError, ValueError, IndexError, UnicodeDecodeError, AttributeError, KeyError, TypeError):
        count("malformed")
        return None
    count("queries")
    if request.header.qr or len(request.questions) != 1:
        if request.header.qr:  # an answer, not a question: never reply to it (no loops)
            count("malformed")
            return None
        reply = request.reply()
        reply.header.rcode = RCODE.FORMERR
        count("errors")
        return _pack(reply, request, tcp)
    reply = request.reply()
    reply.header.ra = 0
    if request.header.opcode != 0:  # only standard queries
        reply.header.aa = 0
        reply.header.rcode = RCODE.NOTIMP
        count("errors")
        return _pack(reply, request, tcp)
    qname = _qname(request)
    qtype = request.q.qtype
    if qname is None:
        return _refuse(reply, request, counts, tcp)
    ips = zone.lookup(qname)
    if ips:
        if qtype in (QTYPE.A, QTYPE.ANY):
            for ip in ips[:MAX_TCP_ANSWERS]:
                reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(ip), ttl=TTL))
        count("answered")
        return _pack(reply, request, tcp)
    reverse = zone.reverse_ip(qname)
    if reverse is not None:
        names = zone.reverse.get(reverse)
        if not names:
            reply.header.rcode = RCODE.NXDOMAIN
            count("nxdomain")
            return _pack(reply, request, tcp)
        if qtype in (QTYPE.PTR, QTYPE.ANY):
            for name in names[:MAX_TCP_ANSWERS]:
                reply.add_answer(RR(request.q.qname, QTYPE.PTR, rdata=PTR(f"{name}.{zone.network}."), ttl=TTL))
        count("answered")
        return _pack(reply, request, tcp)
    if zone.in_scope(qname):
        reply.header.rcode = RCODE.NXDOMAIN
        count("nxdomain")
        return _pack(reply, request, tcp)
    return _refuse(reply, request, counts, tcp)


def _refuse(reply: DNSRecord, request: DNSRecord, counts: dict[str, int], tcp: bool) -> bytes:
    reply.header.aa = 0
    reply.header.rcode = RCODE.REFUSED
    counts["refused"] = counts.get("refused", 0) + 1
    return _pack(reply, request, tcp)


def _pack(reply: DNSRecord, request: DNSRecord, tcp: bool) -> bytes:
    if tcp:
        return bytes(reply.pack())
    limit = UDP_SIZE
    for opt in request.ar:
        if opt.rtype == QTYPE.OPT:
            limit = min(max(UDP_SIZE, int(opt.rclass)), MAX_UDP_SIZE)
    if len(reply.rr) > MAX_UDP_ANSWERS:
        reply.rr = reply.rr[:MAX_UDP_ANSWERS]
        reply.header.tc = 1
    data = bytes(reply.pack())
    while len(data) > limit and reply.rr:
        reply.rr = reply.rr[: len(reply.rr) // 2]  # halving: a handful of re-packs at most
        reply.header.tc = 1
        data = bytes(reply.pack())
    return data
