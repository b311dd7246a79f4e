"""`--egress` networks: a container attached with overlayctl reaches beyond the overlay through its
own host (masqueraded to the host's underlay address), replies come back by the host route to it,
and everything egress made is gone once the network has no container on the host."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from overlaynet.lab import Lab

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]


def run(lab: Lab, netns: str, *argv: str) -> str:
    return lab.run(netns, list(argv)).stdout


def egress_tables(lab: Lab, netns: str) -> list[str]:
    out = json.loads(run(lab, netns, "nft", "-j", "list", "tables") or '{"nftables": []}')
    return [o["table"]["name"] for o in out["nftables"] if "table" in o and "egress" in o["table"]["name"]]


def test_egress_reaches_another_hosts_underlay_address_masqueraded(lab: Lab) -> None:
    a, b = lab.add_host("a"), lab.add_host("b")
    lab.start_daemon(a, "--plaintext")
    lab.start_daemon(b, "--plaintext", "--join", a.address)
    net = lab.overlayctl_json(a, "network", "create", "out", "--subnet", "198.19.60.0/24", "--egress")
    assert net["egress"] is True and net["gateway"] == "198.19.60.1"
    private = lab.overlayctl_json(a, "network", "create", "private", "--subnet", "198.19.61.0/24")
    assert private["egress"] is False
    c1, c2 = lab.add_container("c1"), lab.add_container("c2")
    ep = lab.overlayctl_json(a, "attach", c1, "--network", "out")
    lab.overlayctl_json(a, "attach", c2, "--network", "private")

    assert "default via 198.19.60.1 dev eth0" in run(lab, c1, "ip", "route")
    assert "default" not in run(lab, c2, "ip", "route")  # without --egress: the overlay only
    # Host b is outside the overlay: reached, and it sees host a's address, not the container's.
    capture = lab.popen(b.netns, ["tcpdump", "-ni", "eth0", "-c", "1", "-l", "icmp and icmp[icmptype] == 8"],
                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        time.sleep(1)  # tcpdump listening
        lab.wait_ping(c1, b.address, timeout=20)
        lab.ping(c1, b.address)
        seen, _ = capture.communicate(timeout=10)
    finally:
        capture.kill()
        capture.wait()
    assert f"{a.address} > {b.address}" in seen, seen
    assert not lab.ping(c2, b.address, wait=1.0)
    # The host routes to its container (replies, published ports), and NATs only this subnet.
    assert f"{ep['ip']} via 169.254.77.2 dev ovh{net['vni']}" in run(lab, a.netns, "ip", "route")
    assert egress_tables(lab, a.netns) == [f"overlaynet_egress_{net['vni']}"]
    assert lab.ping(a.netns, ep["ip"])

    # overlayd killed and started again: it adopts what egress made, duplicates nothing, and the
    # container keeps its way out throughout.
    lab.stop_daemon(a, signal.SIGKILL)
    assert lab.ping(c1, b.address)
    lab.start_daemon(a)
    lab.wait_ping(c1, b.address, timeout=20)
    links = run(lab, a.netns, "ip", "-o", "link")
    assert links.count(f"ovh{net['vni']}") == 1, links
    assert egress_tables(lab, a.netns) == [f"overlaynet_egress_{net['vni']}"]

    lab.overlayctl(a, "detach", c1, "--network", "out")
    assert f"ovh{net['vni']}" not in run(lab, a.netns, "ip", "-o", "link")
    assert egress_tables(lab, a.netns) == []


def test_egress_needs_a_gateway(lab: Lab) -> None:
    a = lab.add_host("a")
    lab.start_daemon(a, "--plaintext")
    out = lab.overlayctl(a, "network", "create", "x", "--subnet", "198.19.62.0/24", "--egress", "--no-gateway",
                         check=False)
    assert out.returncode != 0 and "--egress needs the gateway" in out.stderr, out.stderr
