"""Addresses that must never reach a container, refused through the real API and CLI with one line:
overlay subnets in 0/8, 127/8, 224/4, 240/4 or overlapping the underlay, and endpoint MACs that
are a gateway's anycast MAC, multicast or zero."""

from __future__ import annotations

import pytest

from overlaynet.lab import Lab
from overlaynet.model import gateway_mac

pytestmark = [pytest.mark.adversarial, pytest.mark.cluster]


def refused(lab: Lab, host, *args: str) -> str:
    result = lab.overlayctl(host, *args, check=False)
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_unusable_subnets_and_macs_are_refused_with_one_line(lab):
    host = lab.add_host("h1")  # underlay 198.18.0.1/16
    lab.start_daemon(host, "--plaintext", "--dataplane", "kernel")
    for subnet, meaning in [("127.0.0.0/24", "loopback"), ("224.1.0.0/24", "multicast"),
                            ("240.0.0.0/24", "reserved"), ("0.0.0.0/0", "'this network'")]:
        line = refused(lab, host, "network", "create", "bad", "--subnet", subnet)
        assert f"overlaps {meaning}" in line, line
    line = refused(lab, host, "network", "create", "bad", "--subnet", "198.18.0.0/24")
    assert "overlaps this host's underlay network 198.18.0.0/16" in line, line
    assert lab.overlayctl_json(host, "network", "ls") == []

    net = lab.overlayctl_json(host, "network", "create", "good", "--subnet", "198.19.73.0/24")
    box = lab.add_container("box")
    for mac, why in [(gateway_mac(net["vni"]), "reserved for overlaynet's anycast gateways"),
                     ("02:0d:00:00:00:01", "reserved for overlaynet's anycast gateways"),
                     ("01:00:5e:00:00:01", "multicast"), ("ff:ff:ff:ff:ff:ff", "multicast"),
                     ("00:00:00:00:00:00", "00:00:00:00:00:00")]:
        line = refused(lab, host, "attach", box, "--network", "good", "--mac", mac)
        assert why in line, line
    assert lab.overlayctl_json(host, "endpoint", "ls") == []
    ep = lab.overlayctl_json(host, "attach", box, "--network", "good", "--mac", "02:0d:01:00:00:01")
    assert ep["mac"] == "02:0d:01:00:00:01"
