"""A full state dir (a small tmpfs) and a missing fast-path device: nothing half-made, a clear 507.

Persist before you acknowledge: an attach that cannot be saved is undone in the kernel and refused
with "state dir full: N bytes free at PATH"; once space is back everything works, with no `.tmp`
left behind. A TAP that went missing is noticed and re-made by reconcile, not reported as fine.
"""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from overlaynet import kernel
from overlaynet.api.client import Client
from overlaynet.dataplane.control import FastpathClient
from tests.support.lab import pair_on_one_host

pytestmark = pytest.mark.integration


@pytest.fixture
def small_state_dir(lab):
    """Mount a 2 MiB tmpfs as h1's state dir (before the daemon starts); unmounted at the end."""
    state_dir = os.path.join(lab.workdir, "h1", "state")
    os.makedirs(state_dir, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", f"{lab.prefix}-state", state_dir],
                   check=True)
    try:
        yield state_dir
    finally:
        lab.close()  # daemons and sandbox mounts first: they live inside the tmpfs
        subprocess.run(["umount", "-l", state_dir], check=False)


def fill(directory: str) -> str:
    """Fill the file system of `directory` to the last byte; return the filler's path."""
    path = os.path.join(directory, "filler")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for chunk in (65536, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError:
                pass
    finally:
        os.close(fd)
    return path


def leftovers(state_dir: str) -> list[str]:
    found = []
    for dirpath, dirs, files in os.walk(state_dir):
        dirs[:] = [d for d in dirs if d != "netns"]
        found += [os.path.join(dirpath, f) for f in files if f.endswith(".tmp")]
    return found


def sandbox_links(host, vni: int) -> set[str]:
    out = subprocess.run(["nsenter", f"--net={kernel.sandbox_path(host.state_dir, vni)}", "ip", "-o", "link"],
                         capture_output=True, text=True, check=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


@pytest.mark.parametrize("dataplane", ["userspace", "kernel"])
def test_attach_on_a_full_state_dir_is_refused_with_507_and_undone(lab, small_state_dir, dataplane):
    pair = pair_on_one_host(lab, "full", "198.19.70.0/24", 7070, "--dataplane", dataplane)
    host = pair.host
    assert host.state_dir == small_state_dir
    filler = fill(host.state_dir)
    c = lab.add_container("c")
    result = lab.overlayctl(host, "attach", c, "--network", "full", check=False)
    assert result.returncode == 1, result
    line = result.stderr.strip()
    assert line.startswith("overlayctl: state dir full: ") and f"bytes free at {host.state_dir}" in line, line
    assert "internal error" not in line and len(line.splitlines()) == 1
    # Nothing half-made: not listed, no veth, no temp file, the others still talk.
    eps = lab.overlayctl_json(host, "endpoint", "ls")
    assert {e["id"] for e in eps} == {pair.ep_a["id"], pair.ep_b["id"]}
    assert sum(1 for name in sandbox_links(host, 7070) if name.startswith("ove")) == 2
    assert leftovers(host.state_dir) == []
    assert lab.ping(pair.a, pair.ep_b["ip"])
    with pytest.raises(Exception) as refused:
        Client(host.socket).create_endpoint("full", netns=c)
    assert getattr(refused.value, "status", None) == 507
    # Space comes back: the same attach works and survives a restart.
    os.unlink(filler)
    ep_c = lab.overlayctl_json(host, "attach", c, "--network", "full")
    assert lab.ping(c, pair.ep_a["ip"])
    lab.stop_daemon(host, signal.SIGKILL)
    lab.start_daemon(host)
    assert {e["id"] for e in lab.overlayctl_json(host, "endpoint", "ls")} == \
        {pair.ep_a["id"], pair.ep_b["id"], ep_c["id"]}
    assert lab.ping(c, pair.ep_b["ip"])


def test_first_attach_of_a_network_on_a_full_state_dir_leaves_no_sandbox_and_recovers(lab, small_state_dir):
    pair = pair_on_one_host(lab, "keep", "198.19.71.0/24", 7171)
    host = pair.host
    lab.overlayctl(host, "network", "create", "later", "--subnet", "198.19.72.0/24", "--vni", "7272")
    filler = fill(host.state_dir)
    c, d = lab.add_container("c"), lab.add_container("d")
    result = lab.overlayctl(host, "attach", c, "--network", "later", check=False)
    assert result.returncode == 1 and "state dir full" in result.stderr, result
    assert not os.path.exists(kernel.sandbox_path(host.state_dir, 7272)), "the new sandbox must be undone"
    os.unlink(filler)
    # fastpathd could not save its state while the disk was full; nothing may be lost for it.
    ep_c = lab.overlayctl_json(host, "attach", c, "--network", "later")
    lab.overlayctl_json(host, "attach", d, "--network", "later")
    assert lab.ping(d, ep_c["ip"])
    assert lab.ping(pair.a, pair.ep_b["ip"])
    assert Client(host.socket).reconcile()["errors"] == []


def fastpathd_pid(lab, host) -> int:
    return int(lab.overlayctl_json(host, "status")["dataplane_status"]["fastpathd_pid"])


def test_fastpathd_keeps_working_when_its_state_cannot_be_saved(lab, small_state_dir):
    pair = pair_on_one_host(lab, "fp", "198.19.73.0/24", 7373)
    host = pair.host
    pid_before = fastpathd_pid(lab, host)
    fill(host.state_dir)
    # fastpathd's own clients' view: every change makes it save its state file, which cannot grow now.
    client = FastpathClient(os.path.join(host.state_dir, "fastpath.sock"))
    try:
        client.add_network(7399, kernel.sandbox_path(host.state_dir, 7373), "ovt7399", 1400)
        assert 7399 in client.networks()["networks"]
        client.sync_fdb(7399, {"02:00:00:00:00:09": "198.18.0.9"})
        client.remove_network(7399)
        assert 7399 not in client.networks()["networks"]
    finally:
        client.close()
    assert lab.ping(pair.a, pair.ep_b["ip"])
    assert fastpathd_pid(lab, host) == pid_before, "fastpathd must not have died or been replaced"


def test_reconcile_repairs_a_missing_fast_path_device_and_reports_it(lab):
    h1, h2 = lab.add_host("h1"), lab.add_host("h2")
    lab.start_daemon(h1, "--resync-interval", "600")
    lab.start_daemon(h2, "--join", h1.address, "--key-file", os.path.join(h1.state_dir, "gossip.key"))
    lab.overlayctl(h1, "network", "create", "tap", "--subnet", "198.19.75.0/24", "--vni", "7575")
    a, b = lab.add_container("a"), lab.add_container("b")
    ep_a = lab.overlayctl_json(h1, "attach", a, "--network", "tap")
    lab.overlayctl_json(h2, "attach", b, "--network", "tap")
    lab.wait_ping(b, ep_a["ip"])
    tap = kernel.tap_name(7575)
    subprocess.run(["nsenter", f"--net={kernel.sandbox_path(h1.state_dir, 7575)}", "ip", "link", "del", tap],
                   check=True)
    assert not lab.ping(b, ep_a["ip"], count=2), "without its TAP, h1's containers are cut off"
    summary = Client(h1.socket).reconcile()
    assert summary["devices_repaired"] == [f"tap: {tap}"], summary
    assert summary["errors"] == []
    lab.wait_ping(b, ep_a["ip"])
    # New endpoints work too (before: "device ovt… not found in sandbox").
    c = lab.add_container("c")
    ep_c = lab.overlayctl_json(h1, "attach", c, "--network", "tap")
    lab.wait_ping(b, ep_c["ip"])
