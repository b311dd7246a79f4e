"""Sandboxes and netns paths: creation, adoption, replacement of leftovers, clear errors."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from overlaynet import kernel
from tests.support.kernel import in_sandbox, open_fds

pytestmark = pytest.mark.integration


@pytest.fixture
def state_dir(prefix: str) -> Iterator[str]:
    path = f"/tmp/{prefix}-netns-state"
    try:
        yield path
    finally:
        for vni in (1, 2):
            kernel.remove_sandbox(kernel.sandbox_path(path, vni))
        shutil.rmtree(path, ignore_errors=True)


def test_sandbox_is_created_once_and_adopted(state_dir: str) -> None:
    path = kernel.sandbox_path(state_dir, 1)
    assert not kernel.sandbox_exists(path)
    assert kernel.ensure_sandbox(path) is True
    identity = kernel.netns_identity(path)
    in_sandbox(path, "ip", "link", "add", "kmark", "type", "bridge")
    assert kernel.ensure_sandbox(path) is False  # adopted, not recreated
    assert kernel.netns_identity(path) == identity
    assert "kmark" in in_sandbox(path, "ip", "link", "show")
    assert "UP" in in_sandbox(path, "ip", "link", "show", "lo")


def test_dangling_sandbox_file_is_replaced(state_dir: str) -> None:
    path = kernel.sandbox_path(state_dir, 2)
    os.makedirs(os.path.dirname(path))
    open(path, "w").close()  # what a reboot leaves behind: the file without its mount
    assert not kernel.sandbox_exists(path)
    assert kernel.ensure_sandbox(path) is True
    assert kernel.sandbox_exists(path)


def test_remove_sandbox_is_idempotent_and_leaves_no_mount(state_dir: str) -> None:
    path = kernel.sandbox_path(state_dir, 1)
    kernel.ensure_sandbox(path)
    kernel.remove_sandbox(path)
    kernel.remove_sandbox(path)
    assert not os.path.exists(path)
    with open("/proc/self/mountinfo") as f:
        assert path not in f.read()


def test_resolve_netns_names_paths_and_errors(netns, prefix: str) -> None:
    name = netns("r")
    assert kernel.resolve_netns(name) == f"/run/netns/{name}"
    assert kernel.resolve_netns(f"/run/netns/{name}") == f"/run/netns/{name}"
    with pytest.raises(kernel.KernelError, match=rf"network namespace '{prefix}-nope' not found"):
        kernel.resolve_netns(f"{prefix}-nope")
    with pytest.raises(kernel.KernelError, match="not a network namespace"):
        kernel.resolve_netns("/etc/hostname")


def test_netns_identity_sees_through_proc_paths(netns) -> None:
    name = netns("p")
    sleeper = subprocess.Popen(["ip", "netns", "exec", name, "sleep", "30"])
    try:
        proc_path = f"/proc/{sleeper.pid}/ns/net"
        # wait-until: the child is in the namespace once `ip netns exec` has switched
        for _ in range(100):
            if kernel.netns_identity(proc_path) == kernel.netns_identity(f"/run/netns/{name}"):
                break
            subprocess.run(["sleep", "0.05"])
        assert kernel.netns_identity(proc_path) == kernel.netns_identity(f"/run/netns/{name}")
        assert kernel.resolve_netns(proc_path) == proc_path
        assert kernel.netns_identity(proc_path) != kernel.current_netns_identity()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_verbs_do_not_leak_fds_or_move_the_caller(state_dir: str) -> None:
    path = kernel.sandbox_path(state_dir, 1)
    before_ns = kernel.current_netns_identity()
    kernel.ensure_sandbox(path)
    kernel.ensure_bridge(path, 1450)
    before = open_fds()
    for _ in range(20):
        kernel.ensure_bridge(path, 1450)
        kernel.list_endpoint_links(path)
    assert open_fds() == before
    assert kernel.current_netns_identity() == before_ns


def test_verbs_run_from_an_executor_and_refuse_the_event_loop(state_dir: str) -> None:
    path = kernel.sandbox_path(state_dir, 1)

    async def daemon() -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, kernel.ensure_sandbox, path)
        assert await loop.run_in_executor(None, kernel.ensure_bridge, path, 1450) is True
        with pytest.raises(RuntimeError, match="run_in_executor"):
            kernel.ensure_bridge(path, 1450)

    asyncio.run(daemon())


def test_bridge_with_anycast_gateway_mac_and_address_converges(state_dir: str) -> None:
    path = kernel.sandbox_path(state_dir, 1)
    kernel.ensure_sandbox(path)
    mac = "02:0d:00:00:10:01"
    assert kernel.ensure_bridge(path, 1450, mac=mac, address="198.19.1.1/24") is True
    for _ in range(2):  # idempotent: nothing to change the second time
        assert kernel.ensure_bridge(path, 1450, mac=mac, address="198.19.1.1/24") is False
    link = in_sandbox(path, "ip", "-o", "link", "show", kernel.BRIDGE_NAME)
    assert f"link/ether {mac}" in link and "mtu 1450" in link
    addrs = in_sandbox(path, "ip", "-o", "addr", "show", "dev", kernel.BRIDGE_NAME)
    assert addrs.count("inet ") == 1 and "inet 198.19.1.1/24" in addrs
    assert "inet6" not in addrs  # IPv6 off: no link-local from a MAC shared by every host
    # Drift is repaired: a foreign address goes, ours comes back.
    in_sandbox(path, "ip", "addr", "del", "198.19.1.1/24", "dev", kernel.BRIDGE_NAME)
    in_sandbox(path, "ip", "addr", "add", "198.19.1.77/24", "dev", kernel.BRIDGE_NAME)
    kernel.ensure_bridge(path, 1450, mac=mac, address="198.19.1.1/24")
    addrs = in_sandbox(path, "ip", "-o", "-4", "addr", "show", "dev", kernel.BRIDGE_NAME)
    assert "198.19.1.1/24" in addrs and "198.19.1.77" not in addrs
    # Without an address (a network without gateway) the bridge has none.
    kernel.ensure_bridge(path, 1450)
    assert "inet " not in in_sandbox(path, "ip", "-o", "-4", "addr", "show", "dev", kernel.BRIDGE_NAME)
