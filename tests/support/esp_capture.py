"""The underlay of a cluster lab as a wire tap sees it (tests/support/capture.py's tcpdump): cleartext
VXLAN of one VNI counted, ESP-in-UDP decrypted by scapy with the SAs `overlayctl network inspect
--show-keys` printed (scapy's own RFC 4303/4106/3948: the independent check that we speak the standard)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.ipsec import ESP, SecurityAssociation
from scapy.layers.vxlan import VXLAN
from scapy.packet import Packet

from overlaynet.dataplane import esp_wire
from overlaynet.lab import Host, Lab
from tests.support.capture import Capture, esp_packets


def inspect_network(lab: Lab, host: Host, network: str) -> dict[str, Any]:
    return lab.overlayctl_json(host, "network", "inspect", network)


def key_epoch(lab: Lab, host: Host, network: str) -> int | None:
    """The network's key epoch as `host` sees it; None while the network or its key has not reached it."""
    result = lab.overlayctl(host, "network", "inspect", network, "--json", check=False)
    return json.loads(result.stdout).get("key_epoch") if result.returncode == 0 else None


def show_keys(lab: Lab, host: Host, network: str) -> list[dict[str, Any]]:
    """This host's SAs of the network, as `overlayctl network inspect --show-keys` prints them."""
    return lab.overlayctl_json(host, "network", "inspect", network, "--show-keys")["keys"]["sas"]


def capture(lab: Lab, host: Host, name: str) -> Capture:
    """tcpdump of every UDP packet on a host's underlay interface, listening when this returns."""
    return Capture(host.netns, os.path.join(lab.workdir, f"{host.label}-{name}.pcap")).__enter__()


def cleartext_vxlan(packets: list[Packet], vni: int) -> list[Packet]:
    """Plain VXLAN of this VNI: must never appear for an encrypted network."""
    out = []
    for pkt in packets:
        if UDP in pkt and pkt[UDP].dport == 4789:
            vx = VXLAN(bytes(pkt[UDP].payload))
            if vx.vni == vni:
                out.append(pkt)
    return out


def esp_in_udp(packets: list[Packet], port: int = esp_wire.PORT) -> list[Packet]:
    """ESP-in-UDP packets, GSO trains cut into their packets."""
    return [p for p in esp_packets([p for p in packets if UDP in p and port in (p[UDP].dport, p[UDP].sport)])
            if len(p[UDP].payload) > 8]


def spi_of(pkt: Packet) -> int:
    return int.from_bytes(bytes(pkt[UDP].payload)[:4], "big")


@dataclass
class Decrypted:
    icmp: list[Packet] = field(default_factory=list)  # inner ICMP found
    spis: set[int] = field(default_factory=set)
    failed: int = 0  # ESP packets whose SPI we had a key for, that did not decrypt
    unknown_spi: int = 0


def decrypt(packets: list[Packet], sas: list[dict[str, Any]], vni: int) -> Decrypted:
    """Decrypt every ESP packet whose SPI is in `sas` (hex as --show-keys prints them) with scapy."""
    by_spi = {int(sa["spi"], 16): sa for sa in sas}
    result = Decrypted()
    for pkt in esp_in_udp(packets):
        spi = spi_of(pkt)
        sa = by_spi.get(spi)
        if sa is None:
            result.unknown_spi += 1
            continue
        scapy_sa = SecurityAssociation(ESP, spi=spi, crypt_algo="AES-GCM",
                                       crypt_key=bytes.fromhex(sa["key"]) + bytes.fromhex(sa["salt"]),
                                       nat_t_header=UDP(dport=4500))
        try:
            clear = scapy_sa.decrypt(IP(bytes(pkt[IP])))
        except Exception:
            result.failed += 1
            continue
        if VXLAN in clear and clear[VXLAN].vni == vni and ICMP in clear:
            result.icmp.append(clear)
            result.spis.add(spi)
    return result
