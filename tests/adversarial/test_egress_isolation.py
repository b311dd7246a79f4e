"""Egress must not turn a host into a router into its overlays: with `--egress`, the host forwards
and holds routes to its containers, so a neighbour on the underlay that routes the overlay subnet via
that host, or a container on another `--egress` network of the same host, would reach containers
directly. Only replies to the containers' own connections and published ports (DNAT) may pass."""

from __future__ import annotations

import pytest

from overlaynet.lab import Lab

pytestmark = [pytest.mark.adversarial, pytest.mark.timeout(300)]


@pytest.mark.parametrize("dataplane", ["kernel", "userspace"])
def test_egress_hosts_route_nothing_new_into_their_overlays(lab: Lab, dataplane: str) -> None:
    a, b = lab.add_host("a"), lab.add_host("b")
    lab.start_daemon(a, "--plaintext", "--dataplane", dataplane)
    lab.start_daemon(b, "--plaintext", "--dataplane", dataplane, "--join", a.address)
    lab.overlayctl_json(a, "network", "create", "red", "--subnet", "198.19.64.0/24", "--egress")
    lab.overlayctl_json(a, "network", "create", "blue", "--subnet", "198.19.65.0/24", "--egress")
    red, blue = lab.add_container("red"), lab.add_container("blue")
    red_ep = lab.overlayctl_json(a, "attach", red, "--network", "red")
    lab.overlayctl_json(a, "attach", blue, "--network", "blue")
    # What egress is for works: both reach host b, the outside.
    lab.wait_ping(red, b.address, timeout=20)
    lab.wait_ping(blue, b.address, timeout=20)

    # Attack 1: a neighbour on the underlay routes the overlay subnet via host a.
    lab.run(b.netns, ["ip", "route", "add", "198.19.64.0/24", "via", a.address], check=True)
    assert not lab.ping(b.netns, red_ep["ip"], count=2, wait=1.0), "the underlay reached a container directly"
    # Attack 2: a container on another --egress network of the same host.
    assert not lab.ping(blue, red_ep["ip"], count=2, wait=1.0), "egress routed between two overlay networks"
    # Still fine: the host itself reaches its containers (e.g. to check them).
    assert lab.ping(a.netns, red_ep["ip"])
