"""Helpers for kernel/ integration tests: run verbs "as a daemon" inside a host netns, build a
two-host underlay, and check reachability with real pings.

The daemon runs inside a host netns; tests imitate that with kernel.call_in_netns, which runs a
function in a private thread switched into that netns (the test's own threads never move).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from overlaynet import kernel

T = TypeVar("T")

OVERLAY_MTU = 1450
VNI = 4242


def as_daemon(host_ns: str, fn: Callable[..., T], *args: object) -> T:
    """Call fn(*args) as overlayd would: from a thread whose netns is the host netns."""
    return kernel.call_in_netns(kernel.resolve_netns(host_ns), fn, *args)


def ip(*args: str, ns: str | None = None, check: bool = True) -> str:
    """Run `ip` (tests only: an independent view of the kernel)."""
    cmd = (["ip", "netns", "exec", ns] if ns else []) + ["ip", *args]
    return subprocess.run(cmd, check=check, capture_output=True, text=True).stdout


def in_sandbox(sandbox: str, *cmd: str) -> str:
    """Run a command inside a sandbox netns (a bind mount, not under /run/netns)."""
    return subprocess.run(
        ["nsenter", f"--net={sandbox}", *cmd], check=True, capture_output=True, text=True
    ).stdout


def ping(ns: str, address: str, count: int = 1) -> bool:
    result = subprocess.run(
        ["ip", "netns", "exec", ns, "ping", "-c", str(count), "-W", "1", address],
        capture_output=True,
        text=True,
    )
    return result.returncode == 0


def ping_until(ns: str, address: str, ok: bool = True, attempts: int = 10) -> bool:
    """Wait-until: True once ping's success equals ok (at most `attempts` one-second tries)."""
    return any(ping(ns, address) == ok for _ in range(attempts))


@dataclass
class Host:
    ns: str
    """Host netns name under /run/netns (where "its daemon" runs)."""
    underlay_ip: str
    state_dir: str
    sandbox: str


@dataclass
class Container:
    ns: str
    endpoint_id: str
    ip: str
    mac: str


@dataclass
class Topology:
    hosts: list[Host] = field(default_factory=list)
    containers: list[Container] = field(default_factory=list)

    def cleanup(self) -> None:
        for host in self.hosts:
            kernel.remove_sandbox(host.sandbox)
            shutil.rmtree(host.state_dir, ignore_errors=True)


def make_hosts(netns: Callable[[str], str], prefix: str, topo: Topology) -> list[Host]:
    """Two host namespaces joined by a veth link ("u" in each) on 198.18.0.0/16."""
    hosts = []
    for i in (1, 2):
        name = netns("h")
        state_dir = f"/tmp/{prefix}-state-{name}"
        host = Host(name, f"198.18.0.{i}", state_dir, kernel.sandbox_path(state_dir, VNI))
        hosts.append(host)
        topo.hosts.append(host)
    ip("link", "add", "u", "netns", hosts[0].ns, "type", "veth", "peer", "name", "u", "netns", hosts[1].ns)
    for host in hosts:
        ip("addr", "add", f"{host.underlay_ip}/16", "dev", "u", ns=host.ns)
        ip("link", "set", "u", "up", ns=host.ns)
    return hosts


def setup_network(host: Host) -> bool:
    """What a daemon does for a kernel-mode network (called inside the host netns)."""
    kernel.ensure_sandbox(host.sandbox)
    kernel.ensure_bridge(host.sandbox, OVERLAY_MTU)
    return kernel.ensure_vxlan(host.sandbox, kernel.VxlanSpec(VNI, host.underlay_ip, mtu=OVERLAY_MTU))


def attach(host: Host, container: Container) -> kernel.VethInfo:
    spec = kernel.VethSpec(
        container.endpoint_id, container.ns, "eth0", container.mac, f"{container.ip}/24", OVERLAY_MTU
    )
    return kernel.ensure_veth(host.sandbox, spec)


def program_remote(host: Host, remote: Host, container: Container) -> None:
    """What the reconciler does when it learns about a remote endpoint."""
    kernel.sync_fdb(host.sandbox, VNI, {container.mac: remote.underlay_ip})
    kernel.sync_neigh(host.sandbox, VNI, {container.ip: container.mac})
    kernel.set_flood_list(host.sandbox, VNI, {remote.underlay_ip})


def two_host_overlay(
    netns: Callable[[str], str], prefix: str, topo: Topology
) -> tuple[list[Host], list[Container]]:
    """Two hosts, one container each on 198.19.1.0/24, fully programmed."""
    hosts = make_hosts(netns, prefix, topo)
    containers = [
        Container(
            netns("c"), f"{prefix}ep{i}aaaaaaaaaaaa", f"198.19.1.{10 + i}", f"02:42:c6:13:01:{10 + i:02x}"
        )
        for i in (1, 2)
    ]
    topo.containers.extend(containers)
    for host, container in zip(hosts, containers, strict=True):
        as_daemon(host.ns, setup_network, host)
        as_daemon(host.ns, attach, host, container)
    as_daemon(hosts[0].ns, program_remote, hosts[0], hosts[1], containers[1])
    as_daemon(hosts[1].ns, program_remote, hosts[1], hosts[0], containers[0])
    return hosts, containers


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))
