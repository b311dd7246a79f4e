"""Small building blocks for tests on a Lab (overlaynet/lab.py)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from overlaynet.lab import Host, Lab


@dataclass
class Pair:
    """One overlayd host with one network and two containers attached to it."""

    host: Host
    a: str
    b: str
    ep_a: dict[str, Any]
    ep_b: dict[str, Any]


def named_lab(prefix: str, tier: str, test_name: str) -> Iterator[Lab]:
    """A lab named after the run, the test tier and the test (so parallel runs and tests never
    collide), closed whatever the test did."""
    lab = Lab(prefix=f"{prefix}{tier}{abs(hash(test_name)) % 100}")
    try:
        yield lab
    finally:
        lab.close()


def pair_on_one_host(lab: Lab, network: str, subnet: str, vni: int, *daemon_args: str) -> Pair:
    host = lab.add_host("h1")
    lab.start_daemon(host, *daemon_args)
    lab.overlayctl(host, "network", "create", network, "--subnet", subnet, "--vni", str(vni))
    a, b = lab.add_container("a"), lab.add_container("b")
    ep_a = lab.overlayctl_json(host, "attach", a, "--network", network)
    ep_b = lab.overlayctl_json(host, "attach", b, "--network", network)
    return Pair(host, a, b, ep_a, ep_b)


def start_pinging(lab: Lab, netns: str, address: str, count: int = 120) -> subprocess.Popen[str]:
    """A ping every 50 ms in the background; finish_ping() collects its summary."""
    return lab.popen(netns, ["ping", "-n", "-i", "0.05", "-c", str(count), "-W", "1", address],
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish_ping(ping: subprocess.Popen[str], timeout: float = 60) -> str:
    try:
        out, _ = ping.communicate(timeout=timeout)
    finally:
        if ping.poll() is None:
            ping.kill()
            ping.wait()
    return out
