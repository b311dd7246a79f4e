"""Hostile containers: a container may only speak as itself (its MAC, its IP, its ARP), may never
claim the anycast gateway, and may not flood the network with broadcasts.

Each test attacks a real two-host lab (real overlayd processes, both dataplanes) from a container on
one host and checks, on a victim container on the OTHER host, what the attacker did not get; then it
checks that the first-hop guard counted the drops under the right reason.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from overlaynet.agent.config import DEFAULT_METRICS_ADDRESS
from overlaynet.lab import Lab, wait_until
from overlaynet.model import gateway_mac
from tests.adversarial.frames import Counter, arp, send, udp
from tests.support.cluster import FAST, alive_count

pytestmark = [pytest.mark.adversarial, pytest.mark.cluster]

MODES = ["kernel", "userspace"]


def two_hosts(lab: Lab, mode: str, subnet: str, *extra: str):
    h1, h2 = lab.add_host("h1"), lab.add_host("h2")
    lab.start_daemon(h1, "--plaintext", "--dataplane", mode, *FAST, *extra)
    lab.start_daemon(h2, "--plaintext", "--dataplane", mode, "--join", h1.address, *FAST, *extra)
    wait_until(lambda: alive_count(lab, h1) == 2 and alive_count(lab, h2) == 2, what="2 members alive")
    net = lab.overlayctl_json(h1, "network", "create", "prey", "--subnet", subnet)
    wait_until(lambda: any(n["name"] == "prey" for n in lab.overlayctl_json(h2, "network", "ls")))
    return h1, h2, net


def port_drops(lab: Lab, host, vni: int) -> dict[str, int]:
    drops: dict[str, int] = lab.overlayctl_json(host, "stats")["port_drops"].get(str(vni), {})
    return drops


def neighbour_mac(lab: Lab, netns: str, ip: str) -> str:
    fields = lab.run(netns, ["ip", "neigh", "show", ip, "dev", "eth0"]).stdout.split()
    return fields[fields.index("lladdr") + 1] if "lladdr" in fields else ""


@pytest.mark.parametrize("mode", MODES)
def test_a_container_cannot_hijack_the_anycast_gateway(lab, mode):
    """Victims on the attacker's host and on another host keep the real gateway and its DNS.

    (Kernel mode's VXLAN device, with ARP suppression, never carries ARP across hosts; the victim
    on the attacker's own host is the one exposed there.)"""
    h1, h2, net = two_hosts(lab, mode, "198.19.70.0/24")
    gw, gw_mac, vni = net["gateway"], gateway_mac(net["vni"]), net["vni"]
    attacker, far, near = lab.add_container("evil"), lab.add_container("far"), lab.add_container("near")
    ep_evil = lab.overlayctl_json(h1, "attach", attacker, "--network", "prey")
    victims = {far: lab.overlayctl_json(h2, "attach", far, "--network", "prey", "--name", "far"),
               near: lab.overlayctl_json(h1, "attach", near, "--network", "prey", "--name", "near")}
    for victim in victims:
        lab.wait_ping(victim, ep_evil["ip"])
        lab.wait_ping(victim, gw)
        assert neighbour_mac(lab, victim, gw) == gw_mac
        assert lab.resolve(victim, gw, "far")["answers"] == [victims[far]["ip"]]

    # The attacker takes the gateway's address and announces it: gratuitous ARP requests and
    # replies to everyone, and unsolicited replies straight to each victim, for a few seconds
    # (Linux ignores a new MAC for an entry updated less than a second ago: locktime).
    lab.run(attacker, ["ip", "addr", "add", f"{gw}/32", "dev", "eth0"], check=True)
    mine = ep_evil["mac"]
    hijack = [arp(mine, mine, gw, gw, marker="HIJACK"), arp(mine, mine, gw, gw, op=2, marker="HIJACK")]
    hijack += [arp(mine, mine, gw, ep["ip"], dst_mac=ep["mac"], op=2, marker="HIJACK") for ep in victims.values()]
    counters = {victim: Counter(lab, victim, 6.0, "HIJACK") for victim in victims}
    try:
        sent = send(lab, attacker, hijack, count=300)
        seen = {victim: counter.result()["HIJACK"] for victim, counter in counters.items()}
    finally:
        for counter in counters.values():
            counter.kill()
    assert sent == 300
    assert seen == {far: 0, near: 0}, f"the attacker's ARP frames reached the victims: {seen}"
    for victim in victims:
        assert neighbour_mac(lab, victim, gw) == gw_mac, victim
        # DNS still goes to the victim's own host and is answered by overlaynet there.
        assert lab.resolve(victim, gw, "far")["answers"] == [victims[far]["ip"]], victim
    assert port_drops(lab, h1, vni).get("arp_spoof", 0) >= 270  # of 300


@pytest.mark.parametrize("mode", MODES)
def test_a_container_cannot_speak_with_another_containers_mac_or_ip(lab, mode):
    h1, h2, net = two_hosts(lab, mode, "198.19.71.0/24")
    vni = net["vni"]
    attacker, other, victim = lab.add_container("evil"), lab.add_container("other"), lab.add_container("victim")
    ep_evil = lab.overlayctl_json(h1, "attach", attacker, "--network", "prey")
    ep_other = lab.overlayctl_json(h1, "attach", other, "--network", "prey")
    ep_victim = lab.overlayctl_json(h2, "attach", victim, "--network", "prey")
    lab.wait_ping(attacker, ep_victim["ip"])

    to_victim = (ep_victim["mac"], ep_evil["ip"], ep_victim["ip"])
    honest = udp(ep_evil["mac"], to_victim[0], to_victim[1], to_victim[2], "HONEST")
    stolen_mac = udp(ep_other["mac"], ep_victim["mac"], ep_evil["ip"], ep_victim["ip"], "STOLENMAC")
    stolen_ip = udp(ep_evil["mac"], ep_victim["mac"], ep_other["ip"], ep_victim["ip"], "STOLENIP")
    stolen_both = udp(ep_other["mac"], ep_victim["mac"], ep_other["ip"], ep_victim["ip"], "STOLENBOTH")
    counter = Counter(lab, victim, 6.0, "HONEST", "STOLENMAC", "STOLENIP", "STOLENBOTH")
    try:
        send(lab, attacker, [honest, stolen_mac, stolen_ip, stolen_both], count=200)
        seen = counter.result()
    finally:
        counter.kill()
    assert seen["HONEST"] >= 40, seen  # the path works and the counter counts
    assert seen["STOLENMAC"] == seen["STOLENIP"] == seen["STOLENBOTH"] == 0, seen
    drops = port_drops(lab, h1, vni)
    assert drops.get("mac_spoof", 0) >= 90 and drops.get("ip_spoof", 0) >= 45, drops  # 100 and 50 sent
    assert f"port drops prey (vni {vni}): " in lab.overlayctl(h1, "stats").stdout
    metrics = lab.http_get(h1.netns, f"http://{DEFAULT_METRICS_ADDRESS}/metrics")[1]
    assert f'overlaynet_dataplane_drops_total{{network="prey",reason="guard_mac_spoof",vni="{vni}"}} ' \
        f'{drops["mac_spoof"]}' in metrics, metrics
    # Reprogramming the guard (a new endpoint on the attacker's host) keeps the counts.
    lab.overlayctl_json(h1, "attach", lab.add_container("late"), "--network", "prey")
    assert port_drops(lab, h1, vni)["mac_spoof"] >= drops["mac_spoof"]
    # A guard removed behind overlayd's back comes back with the next reconciliation (every 5 s here).
    nft = ["nsenter", f"--net={h1.state_dir}/netns/vni-{vni}", "nft"]
    subprocess.run([*nft, "delete", "table", "bridge", "overlaynet_ports"], check=True)
    wait_until(lambda: "port_ove" in subprocess.run([*nft, "list", "table", "bridge", "overlaynet_ports"],
                                                    capture_output=True, text=True).stdout,
               what="the guard programmed again")
    # The impersonated container itself still works.
    lab.wait_ping(other, ep_victim["ip"])


@pytest.mark.parametrize("mode", MODES)
def test_a_broadcast_flood_is_limited_at_the_first_hop(lab, mode):
    rate, burst, seconds = 200, 400, 3.0
    h1, h2, net = two_hosts(lab, mode, "198.19.72.0/24", "--bum-rate", str(rate), "--bum-burst", str(burst))
    attacker, victim = lab.add_container("evil"), lab.add_container("victim")
    ep_evil = lab.overlayctl_json(h1, "attach", attacker, "--network", "prey")
    ep_victim = lab.overlayctl_json(h2, "attach", victim, "--network", "prey")
    lab.wait_ping(attacker, ep_victim["ip"])

    flood = udp(ep_evil["mac"], "ff:ff:ff:ff:ff:ff", ep_evil["ip"], "198.19.72.255", "FLOOD")
    counter = Counter(lab, victim, seconds + 2.0, "FLOOD")
    try:
        sent = send(lab, attacker, [flood], seconds=seconds)
        seen = counter.result()
    finally:
        counter.kill()
    allowed = rate * (seconds + 2.0) + burst  # over the counter's whole window
    assert sent > 4 * allowed, f"the flood was too slow to test anything: {sent} frames"
    assert 0 < seen["FLOOD"] <= 1.5 * allowed, (seen, sent)
    assert port_drops(lab, h1, net["vni"]).get("bum_limit", 0) >= sent - 1.5 * allowed
    lab.wait_ping(victim, ep_evil["ip"])  # the attacker's ordinary traffic still flows


# A hostile peer host: VXLAN straight from h1's host namespace (a member's address, so both
# dataplanes take it), broadcast from `sources` inner source MACs in turn, as fast as Python sends.
_PEER_FLOOD = """
import socket, sys, time
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
vni, dst, seconds, sources = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), int(sys.argv[6])
packets = [bytes([0x08, 0, 0, 0]) + vni.to_bytes(3, "big") + b"\\x00"
           + bytes(Ether(src=f"02:aa:00:00:{i >> 8:02x}:{i & 255:02x}", dst="ff:ff:ff:ff:ff:ff")
                   / IP(src=sys.argv[4], dst=sys.argv[5]) / UDP(sport=40000, dport=9) / b"PEERFLOOD")
           for i in range(sources)]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sent, end = 0, time.time() + seconds
while time.time() < end:
    try:
        s.sendto(packets[sent % sources], (dst, 4789)); sent += 1
    except OSError:
        time.sleep(0.0005)
print(sent)
"""


def peer_flood(lab: Lab, flooder, victim_host, victim: str, vni: int, seconds: float, sources: int) -> tuple[int, int]:
    """(frames sent, frames the victim container received) for a flood from another host."""
    counter = Counter(lab, victim, seconds + 2.0, "PEERFLOOD")
    try:
        flood = lab.run(flooder.netns, [sys.executable, "-c", _PEER_FLOOD, str(vni), victim_host.address,
                                        str(seconds), "198.19.74.200", "198.19.74.255", str(sources)],
                        timeout=seconds + 30)
        seen = counter.result()
    finally:
        counter.kill()
    assert flood.returncode == 0, flood.stderr
    return int(flood.stdout), seen["PEERFLOOD"]


@pytest.mark.parametrize("mode", MODES)
def test_a_broadcast_flood_from_another_host_is_limited_per_source(lab, mode):
    rate, burst, seconds = 200, 400, 3.0
    h1, h2, net = two_hosts(lab, mode, "198.19.74.0/24", "--bum-rate", str(rate), "--bum-burst", str(burst))
    near, victim = lab.add_container("near"), lab.add_container("victim")
    lab.overlayctl_json(h1, "attach", near, "--network", "prey")  # h2 floods to h1 only if h1 has endpoints
    ep_victim = lab.overlayctl_json(h2, "attach", victim, "--network", "prey")
    lab.wait_ping(near, ep_victim["ip"])

    sent, seen = peer_flood(lab, h1, h2, victim, net["vni"], seconds, sources=1)
    allowed = rate * (seconds + 2.0) + burst
    assert sent > 4 * allowed, f"the flood was too slow to test anything: {sent} packets"
    assert 0 < seen <= 1.5 * allowed, (seen, sent)
    assert port_drops(lab, h2, net["vni"]).get("overlay_bum_limit", 0) >= allowed


@pytest.mark.parametrize("mode", MODES)
def test_a_peer_host_rotating_source_macs_is_limited_in_total(lab, mode):
    """All broadcasts from one peer host are capped, whatever their inner source MACs (a host that
    does not guard its ports gets a fresh per-source bucket per MAC): the fast path's per-peer
    window in userspace mode, an nftables meter per peer address in kernel mode."""
    peer_rate, seconds = 300, 3.0
    h1, h2, net = two_hosts(lab, mode, "198.19.74.0/24", "--peer-bum-rate", str(peer_rate))
    near, victim = lab.add_container("near"), lab.add_container("victim")
    lab.overlayctl_json(h1, "attach", near, "--network", "prey")
    ep_victim = lab.overlayctl_json(h2, "attach", victim, "--network", "prey")
    lab.wait_ping(near, ep_victim["ip"])

    sent, seen = peer_flood(lab, h1, h2, victim, net["vni"], seconds, sources=1000)
    allowed = peer_rate * (seconds + 2.0 + 1)  # the counter's window, plus one second's edge
    assert sent > 4 * allowed, f"the flood was too slow to test anything: {sent} packets"
    assert 0 < seen <= 1.5 * allowed, (seen, sent)
    stats = lab.overlayctl_json(h2, "stats")
    dropped = (stats["networks"][str(net["vni"])]["rx_drop_peer_bum"] if mode == "userspace"
               else stats["vxlan_peer_bum_drops"])
    assert dropped >= allowed, stats
    lab.wait_ping(near, ep_victim["ip"])  # the peer's unicast still flows
