"""Hole 4: VXLAN from a host that is not a member. In kernel mode the Linux VXLAN device accepted
a packet from any sender that knew the VNI, so a host on the underlay could put frames straight
into a container's network.

Now an nftables filter in the host namespace (table overlaynet_vxlan) admits UDP to the VXLAN port
only from current members' VTEP addresses. A non-member on the underlay sends crafted VXLAN (scapy)
with the right VNI and a frame addressed to a container on a kernel-mode host: the container gets
nothing and the drop is counted; traffic between members still flows. Userspace mode (fastpathd
checks the sender itself) is held to the same. A spoofed *member* address is the residual risk
in both modes, see docs/security.md.
"""

from __future__ import annotations

import sys
import time

import pytest

from overlaynet.lab import wait_until
from tests.support.cluster import FAST, alive_count, host_key_file, write_key

pytestmark = pytest.mark.adversarial

PORT = 9999

# A UDP sink in a container: prints every payload it got within the time given.
_SINK = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", int(sys.argv[1])))
s.settimeout(0.2); deadline = time.time() + float(sys.argv[2])
print("ready", flush=True)
while time.time() < deadline:
    try:
        print(s.recv(2048).decode(errors="replace"), flush=True)
    except socket.timeout:
        pass
"""

# The attacker: VXLAN (right VNI) carrying an Ethernet/IP/UDP frame for the container, built with
# scapy and sent from the attacker's own underlay address (not a member).
_CRAFT = """
import socket, sys
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN
vtep, vni, mac, ip, port, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
inner = Ether(src="02:66:66:66:66:66", dst=mac) / IP(src="198.19.72.66", dst=ip) / UDP(sport=4444, dport=port) / b"INJECTED"
data = bytes(VXLAN(vni=vni, flags=0x08) / inner)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(count):
    s.sendto(data, (vtep, 4789))
"""

_SEND = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(int(sys.argv[3])):
    s.sendto(b"FROM-MEMBER", (sys.argv[1], int(sys.argv[2])))
"""


@pytest.mark.parametrize("mode", ["kernel", "userspace"])
def test_vxlan_from_a_non_member_never_reaches_a_container(lab, mode):
    key = write_key(lab)
    h1, h2 = lab.add_host("h1"), lab.add_host("h2")
    evil = lab.add_host("evil")  # on the underlay, not a member
    for host, extra in ((h1, []), (h2, ["--join", h1.address])):
        lab.start_daemon(host, "--key-file", host_key_file(lab, host, key), "--dataplane", mode, *extra, *FAST)
    wait_until(lambda: alive_count(lab, h1) == 2 and alive_count(lab, h2) == 2, what="2 members alive")
    lab.overlayctl(h1, "network", "create", "spoof", "--subnet", "198.19.72.0/24")
    vni = lab.overlayctl_json(h1, "network", "inspect", "spoof")["vni"]
    a, b = lab.add_container("a"), lab.add_container("b")
    ep_a = lab.overlayctl_json(h1, "attach", a, "--network", "spoof")
    lab.overlayctl_json(h2, "attach", b, "--network", "spoof")
    lab.wait_ping(b, ep_a["ip"])

    sink = lab.popen(a, [sys.executable, "-u", "-c", _SINK, str(PORT), "8"], stdout=-1, text=True)
    try:
        assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
        crafted = lab.run(evil.netns, [sys.executable, "-c", _CRAFT, h1.address, str(vni), ep_a["mac"],
                                       ep_a["ip"], str(PORT), "50"])
        assert crafted.returncode == 0, crafted.stderr
        time.sleep(0.5)
        sent = lab.run(b, [sys.executable, "-c", _SEND, ep_a["ip"], str(PORT), "5"])  # a member's traffic
        assert sent.returncode == 0, sent.stderr
        received, _ = sink.communicate(timeout=30)
    finally:
        if sink.poll() is None:
            sink.kill()
            sink.wait()
    assert "FROM-MEMBER" in received  # members still reach the container
    assert "INJECTED" not in received, "a non-member's VXLAN frame reached the container"
    stats = lab.overlayctl_json(h1, "stats")
    drops = (stats["vxlan_non_member_drops"] if mode == "kernel"  # the nftables filter
             else stats["networks"][str(vni)]["rx_drop_bad_sender"])  # fastpathd's own check
    assert drops >= 50, stats
