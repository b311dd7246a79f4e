"""Underlay captures for the encryption tests: tcpdump in a lab namespace, and scapy's own ESP
(SecurityAssociation, RFC 4303/4106/3948) to open what was captured - the independent check that the
fast path speaks the standard."""

from __future__ import annotations

import signal
import subprocess
from dataclasses import dataclass
from typing import Any

from scapy.layers.inet import IP, UDP
from scapy.layers.ipsec import ESP, SecurityAssociation
from scapy.packet import Packet, Raw, raw
from scapy.utils import rdpcap

from overlaynet.dataplane import esp_keys, esp_wire
from overlaynet.lab import stop_process


class Capture:
    """`with Capture(ns, path) as cap: ...; pkts = cap.packets()`: tcpdump -U on `iface` of `ns`."""

    def __init__(self, ns: str, path: str, bpf: str = "udp", iface: str = "eth0") -> None:
        self.ns, self.path, self.bpf, self.iface = ns, path, bpf, iface
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Capture:
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns, "tcpdump", "-U", "--immediate-mode", "-n", "-i", self.iface,
                                      "-w", self.path, self.bpf], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline()  # "listening on eth0 ...": from here on nothing is missed
        assert b"listening on" in line, line
        return self

    def stop(self) -> None:
        if self.proc:
            stop_process(self.proc, signal.SIGINT, 10)  # tcpdump flushes its file on SIGINT
        if self.proc and self.proc.stderr:
            self.proc.stderr.close()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def packets(self) -> list[Packet]:
        self.stop()
        return list(rdpcap(self.path))


def udp_packets(pkts: list[Packet]) -> list[Packet]:
    return [p for p in pkts if IP in p and UDP in p]


def split_gso(p: Packet) -> list[Packet]:
    """The ESP packets of a captured UDP GSO train. Over veth a GSO send reaches the capture as one
    super-packet (the segments are cut only where a real NIC would cut them); its payload is ESP packets
    of one size back to back, the same SPI with sequence numbers counting up, the last maybe shorter."""
    data = raw(p[UDP].payload)
    if len(data) < 8:
        return [p]
    spi, seq = data[:4], int.from_bytes(data[4:8], "big")
    size = next((s for s in range(32, len(data) - 8) if data[s:s + 4] == spi
                 and int.from_bytes(data[s + 4:s + 8], "big") == (seq + 1) & 0xFFFFFFFF
                 and all(data[k:k + 4] == spi for k in range(s, len(data), s))), 0)
    if not size:
        return [p]
    return [IP(src=p[IP].src, dst=p[IP].dst) / UDP(sport=p[UDP].sport, dport=p[UDP].dport) / Raw(data[k:k + size])
            for k in range(0, len(data), size)]


def esp_packets(pkts: list[Packet]) -> list[Packet]:
    """Every ESP packet on the wire, GSO trains cut into their packets."""
    return [seg for p in udp_packets(pkts) for seg in split_gso(p)]


def esp_payload(p: Packet) -> bytes:
    """The ESP bytes (SPI .. ICV) of a captured ESP-in-UDP packet."""
    return raw(p[UDP].payload)


def spi_seq(p: Packet) -> tuple[int, int]:
    b = esp_payload(p)
    return int.from_bytes(b[0:4], "big"), int.from_bytes(b[4:8], "big")


@dataclass
class Opener:
    """scapy SAs for the SAs a lab derives; opens captured ESP packets."""

    sas: dict[int, esp_keys.EspSaParams]

    def open(self, p: Packet) -> Any:
        """The decrypted IP packet (outer IP / inner UDP / VXLAN / frame) of a captured ESP packet."""
        spi, _ = spi_seq(p)
        params = self.sas[spi]
        sa = SecurityAssociation(ESP, spi=params.spi, crypt_algo="AES-GCM", crypt_key=params.key + params.salt,
                                 nat_t_header=UDP(dport=esp_wire.PORT))
        wire = IP(raw(IP(src=p[IP].src, dst=p[IP].dst) / UDP(sport=p[UDP].sport, dport=p[UDP].dport)
                      / Raw(esp_payload(p))))
        return sa.decrypt(wire)  # raises if the ICV does not verify
