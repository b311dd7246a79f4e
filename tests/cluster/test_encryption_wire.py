"""Encrypted networks on the wire, real overlayd processes (userspace dataplane) in host namespaces:
every packet of the network on the underlay is ESP (scapy decrypts it with the keys `inspect
--show-keys` prints, and finds the ICMP inside), through pings in both directions on two and three
hosts, a key rotation under a running ping, kill -9 of overlayd and of fastpathd, and a second host
joining a one-host network. A capture that finds one cleartext VXLAN packet of the VNI fails."""

from __future__ import annotations

import os
import re
import signal
import sys
import time

import pytest
from scapy.layers.inet import IP, UDP

from overlaynet.dataplane import esp_keys
from overlaynet.lab import Lab, wait_until
from tests.support.cluster import FAST, host_key_file, start_cluster, write_key
from tests.support.esp_capture import (
    capture,
    cleartext_vxlan,
    decrypt,
    esp_in_udp,
    key_epoch,
    show_keys,
    spi_of,
)
from tests.support.lab import finish_ping, start_pinging

pytestmark = pytest.mark.cluster

# Short key timers so that a rotation's switch and overlap happen within a test.
KEY_TIMERS = ["--key-switch-delay", "2", "--key-overlap", "4"]
# The most pings (of 20 a second) a rotation may cost: docs/encryption.md, "Rotation".
ROTATION_LOSS_MAX = 5




def attach(lab: Lab, host, container: str, network: str) -> dict:
    return lab.overlayctl_json(host, "attach", container, "--network", network)


def assert_only_esp(packets, vni: int, what: str) -> None:
    clear = cleartext_vxlan(packets, vni)
    assert not clear, f"{len(clear)} cleartext VXLAN packets of VNI {vni} on the wire {what}"


@pytest.mark.parametrize("count", [2, 3])
def test_ping_both_ways_shows_only_esp_and_scapy_decrypts_it(lab, count):
    hosts = start_cluster(lab, count, write_key(lab))
    net = lab.overlayctl_json(hosts[0], "network", "create", "blue", "--subnet", "198.19.66.0/24", "--encrypted")
    wait_until(lambda: all(key_epoch(lab, h, "blue") == 1 for h in hosts), timeout=60, what="key everywhere")
    containers = [lab.add_container(f"c{i}") for i in range(count)]
    eps = [attach(lab, h, c, "blue") for h, c in zip(hosts, containers, strict=True)]
    cap = capture(lab, hosts[0], "ping")
    try:
        for i in range(count):
            for j in range(count):
                if i != j:
                    lab.wait_ping(containers[i], eps[j]["ip"], timeout=30)
    finally:
        packets = cap.packets()
    assert_only_esp(packets, net["vni"], "while pinging")
    sas = show_keys(lab, hosts[0], "blue")
    peers = {h.address for h in hosts[1:]}
    assert {sa["peer"] for sa in sas if sa["dir"] == "out"} == peers
    found = decrypt(packets, sas, net["vni"])
    assert found.failed == 0 and found.icmp, found
    senders = {p[IP].src for p in found.icmp}  # outer source of each decrypted packet
    assert senders == {hosts[0].address, *peers}, senders  # both directions decrypted


def two_hosts_talking(lab: Lab, subnet: str, extra=()) -> tuple:
    """h1 and h2 with an encrypted network `blue`, container a on h1 pinging b on h2."""
    h1, h2 = start_cluster(lab, 2, write_key(lab), extra=extra)
    net = lab.overlayctl_json(h1, "network", "create", "blue", "--subnet", subnet, "--encrypted")
    wait_until(lambda: key_epoch(lab, h2, "blue") == 1, timeout=60, what="key on h2")
    a, b = lab.add_container("a"), lab.add_container("b")
    attach(lab, h1, a, "blue")
    ep_b = attach(lab, h2, b, "blue")
    lab.wait_ping(a, ep_b["ip"], timeout=30)
    return h1, h2, net, a, ep_b


def test_rotation_under_a_running_ping_loses_at_most_a_handful(lab):
    h1, h2, net, a, ep_b = two_hosts_talking(lab, "198.19.67.0/24", extra=[KEY_TIMERS, KEY_TIMERS])
    old_spis = {int(sa["spi"], 16) for sa in show_keys(lab, h1, "blue")}
    before = capture(lab, h1, "before-rotation")
    try:
        lab.wait_ping(a, ep_b["ip"], timeout=10)
    finally:
        recorded = [bytes(p[UDP].payload) for p in esp_in_udp(before.packets()) if p[IP].src == h1.address]
    assert recorded, "no epoch-1 ESP from h1 recorded"
    ping = start_pinging(lab, a, ep_b["ip"], count=300)  # 15 s at 20/s
    time.sleep(2)
    lab.overlayctl(h2, "network", "rotate-key", "blue")
    time.sleep(2 + 4 + 3)  # switch delay + overlap + margin: the old epoch is gone by now
    cap = capture(lab, h1, "after-rotation")
    summary = finish_ping(ping)
    try:
        lab.wait_ping(a, ep_b["ip"], timeout=10)
    finally:
        packets = cap.packets()
    sent, received = map(int, re.search(r"(\d+) packets transmitted, (\d+) received", summary).groups())
    assert sent - received <= ROTATION_LOSS_MAX, summary
    assert_only_esp(packets, net["vni"], "after the rotation")
    sas = show_keys(lab, h1, "blue")
    assert {sa["epoch"] for sa in sas} == {2}, sas  # epoch 1 no longer sent nor accepted
    on_wire = {spi_of(p) for p in esp_in_udp(packets)}
    assert on_wire and not on_wire & old_spis, (on_wire, old_spis)
    assert decrypt(packets, sas, net["vni"]).icmp
    # An epoch older than the overlap is rejected: h1's recorded epoch-1 packets, sent again from
    # h1's own address, are dropped by h2 as having no SA.
    def no_sa_drops() -> int:
        return int(lab.overlayctl_json(h2, "stats")["global"]["rx_drop_no_sa"])
    dropped = no_sa_drops()
    send_from = ("import socket, sys\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                 f"s.bind(('{h1.address}', 0))\n"
                 f"for p in sys.argv[1:]: s.sendto(bytes.fromhex(p), ('{h2.address}', 4500))\n")
    lab.run(h1.netns, [sys.executable, "-c", send_from, *(p.hex() for p in recorded[:5])], check=True)
    wait_until(lambda: no_sa_drops() >= dropped + min(len(recorded), 5), timeout=60, what="old-epoch packets dropped at h2")


@pytest.mark.parametrize("victim", ["overlayd", "fastpathd"])
def test_kill_9_during_a_ping_never_lets_cleartext_out(lab, victim):
    h1, h2, net, a, ep_b = two_hosts_talking(lab, "198.19.68.0/24")
    caps = [capture(lab, h, f"kill-{victim}") for h in (h1, h2)]
    try:
        ping = start_pinging(lab, a, ep_b["ip"], count=200)
        time.sleep(2)
        if victim == "overlayd":
            lab.stop_daemon(h1, signal.SIGKILL)
            time.sleep(2)
            lab.start_daemon(h1)
        else:
            with open(os.path.join(h1.state_dir, "fastpath.pid")) as f:
                os.kill(int(f.read()), signal.SIGKILL)
        finish_ping(ping)
        lab.wait_ping(a, ep_b["ip"], timeout=40)  # and it comes back, encrypted
    finally:
        packets = [p for cap in caps for p in cap.packets()]
    assert_only_esp(packets, net["vni"], f"around kill -9 of {victim}")
    assert esp_in_udp(packets)


def test_one_host_encrypted_network_then_a_second_host_joins(lab):
    key = write_key(lab)
    h1 = lab.add_host("h1")
    lab.start_daemon(h1, "--key-file", host_key_file(lab, h1, key), *FAST)
    net = lab.overlayctl_json(h1, "network", "create", "blue", "--subnet", "198.19.69.0/24", "--encrypted")
    a, b = lab.add_container("a"), lab.add_container("b")
    cap1 = capture(lab, h1, "alone")
    try:
        attach(lab, h1, a, "blue")
        ep_b = attach(lab, h1, b, "blue")
        lab.wait_ping(a, ep_b["ip"], timeout=20)  # on one host: through the bridge
    finally:
        alone = cap1.packets()
    assert_only_esp(alone, net["vni"], "on a one-host network")  # CVE-2023-28842

    h2 = lab.add_host("h2")
    lab.start_daemon(h2, "--key-file", host_key_file(lab, h2, key), *FAST, "--join", h1.address)
    wait_until(lambda: key_epoch(lab, h2, "blue") == 1, timeout=60, what="key reached the new host")
    c = lab.add_container("c")
    cap = capture(lab, h2, "joined")
    try:
        ep_c = attach(lab, h2, c, "blue")
        lab.wait_ping(c, ep_b["ip"], timeout=30)
        lab.wait_ping(a, ep_c["ip"], timeout=30)
    finally:
        packets = cap.packets()
    assert_only_esp(packets, net["vni"], "after a host joined")
    found = decrypt(packets, show_keys(lab, h2, "blue"), net["vni"])
    assert found.failed == 0 and found.icmp, found


# Two VNIs whose epoch-1 SAs from 198.18.0.2 to 198.18.0.1 share one SPI (a birthday search over
# esp_keys.derive_spi): h1 cannot install both inbound SAs.
COLLIDING_VNIS = (40514, 111342)


def test_an_spi_collision_rotates_the_network_and_traffic_flows(lab):
    h1, h2 = start_cluster(lab, 2, write_key(lab))
    assert len({esp_keys.derive_spi(vni, 1, h2.address, h1.address) for vni in COLLIDING_VNIS}) == 1
    pairs = []
    for i, (name, vni) in enumerate(zip(("blue", "green"), COLLIDING_VNIS, strict=True)):
        lab.overlayctl(h1, "network", "create", name, "--subnet", f"198.19.{70 + i}.0/24", "--vni", str(vni),
                       "--encrypted")
        wait_until(lambda name=name: key_epoch(lab, h2, name) == 1, timeout=60, what=f"{name}'s key on h2")
        a, b = lab.add_container(f"a{i}"), lab.add_container(f"b{i}")
        attach(lab, h1, a, name)
        pairs.append((a, attach(lab, h2, b, name)["ip"]))
    for a, ip in pairs:
        # At once, not after the overlap (35 s by default): the epoch that could not be installed
        # is dropped everywhere as soon as its replacement arrives.
        lab.wait_ping(a, ip, timeout=20)
    epochs = {name: key_epoch(lab, h1, name) for name in ("blue", "green")}
    assert sorted(epochs.values()) == [1, 2], epochs  # the second network programmed got a new epoch
    assert "event=spi-collision" in lab.daemon_log(h1)
    # The refusal was reported while it lasted, and is gone with the new epoch's SAs in place.
    wait_until(lambda: lab.overlayctl_json(h1, "status")["program_failures"] == {}, timeout=60, what="no program failure left")
