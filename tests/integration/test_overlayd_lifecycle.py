"""overlayd's lifecycle: refusals at start, restart recovery after kill -9, adoption of stale objects."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from overlaynet import kernel as knames
from overlaynet.lab import wait_until
from tests.support.as_nobody import run_as_nobody
from tests.support.lab import finish_ping, pair_on_one_host, start_pinging

pytestmark = pytest.mark.integration


def start_failure(lab, host, *args):
    proc = lab.run(host.netns, [sys.executable, "-m", "overlaynet.daemon", "--config", os.devnull,
                                "--name", host.label, "--state-dir", host.state_dir, "--socket", host.socket,
                                *args], timeout=30)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.startswith("overlayd:")]
    assert lines, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[-1]


def test_refuses_to_start_with_clear_reasons(lab):
    host = lab.add_host("h1")
    assert "not configured on this host" in start_failure(lab, host, "--advertise", "198.18.99.99")
    assert "--advertise must be an IPv4 address" in start_failure(lab, host, "--advertise", "banana")
    lab.start_daemon(host)
    assert "already running" in start_failure(lab, host, "--advertise", host.address)
    from overlaynet.daemon import main

    code, err = run_as_nobody(lambda: main(["--config", os.devnull, "--advertise", host.address]))
    assert code == 1 and "overlayd: must run as root" in err, err


def test_sigterm_keeps_containers_connected_and_restart_restores(lab):
    host = lab.add_host("h1")
    lab.start_daemon(host)
    lab.overlayctl(host, "network", "create", "keep", "--subnet", "198.19.40.0/24")
    a, b = lab.add_container("a"), lab.add_container("b")
    ep_a = lab.overlayctl_json(host, "attach", a, "--network", "keep")
    ep_b = lab.overlayctl_json(host, "attach", b, "--network", "keep")
    assert lab.stop_daemon(host, signal.SIGTERM) == 0
    assert not os.path.exists(host.socket)
    assert lab.ping(a, ep_b["ip"]), "SIGTERM must not tear down attached containers' networking"
    lab.start_daemon(host)
    eps = lab.overlayctl_json(host, "endpoint", "ls")
    assert sorted(e["ip"] for e in eps) == sorted([ep_a["ip"], ep_b["ip"]])


def test_kill_9_during_ping_loses_nothing_and_state_comes_back(lab):
    pair = pair_on_one_host(lab, "crash", "198.19.41.0/24", 4141)
    host, a, ep_a, ep_b = pair.host, pair.a, pair.ep_a, pair.ep_b
    ping = start_pinging(lab, a, ep_b["ip"])
    try:
        time.sleep(1.0)
        lab.stop_daemon(host, signal.SIGKILL)
        time.sleep(1.0)
        assert os.path.exists(host.socket)  # a crash leaves the socket file behind...
        lab.start_daemon(host)  # ...and the next start removes it and carries on
        out, _ = ping.communicate(timeout=60)
    finally:
        if ping.poll() is None:
            ping.kill()
    assert ping.returncode == 0, out
    assert " 0% packet loss" in out, out
    eps = {e["id"]: e for e in lab.overlayctl_json(host, "endpoint", "ls")}
    assert set(eps) == {ep_a["id"], ep_b["id"]}
    net = lab.overlayctl_json(host, "network", "inspect", "crash")
    assert net["vni"] == 4141
    # The restored state keeps handing out fresh addresses, never a used one.
    c = lab.add_container("c")
    assert lab.overlayctl_json(host, "attach", c, "--network", "crash")["ip"] not in (ep_a["ip"], ep_b["ip"])
    log = lab.daemon_log(host)
    assert "event=state-loaded networks=1 endpoints=2" in log


@pytest.mark.parametrize("dataplane", ["userspace", "kernel"])
def test_kill_9_of_an_overlayd_in_a_private_mount_namespace_loses_nothing(lab, dataplane):
    """`ip netns exec` gives overlayd a private mount namespace: its sandbox mounts must outlive it."""
    host = lab.add_host("h1")
    lab.start_daemon(host, "--dataplane", dataplane, ip_netns_exec=True)
    assert "event=private-mount-namespace action=pin-sandbox-mounts" in lab.daemon_log(host)
    lab.overlayctl(host, "network", "create", "priv", "--subnet", "198.19.46.0/24", "--vni", "4646")
    a, b = lab.add_container("a"), lab.add_container("b")
    ep_a = lab.overlayctl_json(host, "attach", a, "--network", "priv")
    ep_b = lab.overlayctl_json(host, "attach", b, "--network", "priv")
    ping = start_pinging(lab, a, ep_b["ip"], count=160)
    try:
        time.sleep(1.0)
        lab.stop_daemon(host, signal.SIGKILL)
        time.sleep(1.0)
        lab.start_daemon(host, ip_netns_exec=True)
    finally:
        out = finish_ping(ping)
    assert " 0% packet loss" in out, out
    assert {e["id"] for e in lab.overlayctl_json(host, "endpoint", "ls")} == {ep_a["id"], ep_b["id"]}
    assert lab.ping(b, ep_a["ip"])
    # Removing the network removes its sandbox everywhere it was mounted.
    lab.overlayctl(host, "network", "rm", "priv", "--force")
    assert knames.sandbox_path(host.state_dir, 4646) not in open("/proc/self/mountinfo").read()


def test_stale_objects_are_adopted_or_removed(lab):
    """A leftover same-VNI VXLAN device, a stray veth and a sandbox of a forgotten network."""
    from pyroute2 import IPRoute

    host = lab.add_host("h1")
    lab.start_daemon(host)
    lab.overlayctl(host, "network", "create", "stale", "--subnet", "198.19.43.0/24", "--vni", "4343")
    a, b = lab.add_container("a"), lab.add_container("b")
    lab.overlayctl(host, "attach", a, "--network", "stale")
    ep_b = lab.overlayctl_json(host, "attach", b, "--network", "stale")
    lab.overlayctl(host, "network", "create", "gone", "--subnet", "198.19.44.0/24", "--vni", "4444")
    g = lab.add_container("g")
    gone_ep = lab.overlayctl_json(host, "attach", g, "--network", "gone")
    lab.stop_daemon(host, signal.SIGKILL)

    # Behind the daemon's back: forget network "gone" (as if its state was lost), and leave a
    # VXLAN device for VNI 4545 in the host namespace, as a crash in the middle of creating it would.
    os.unlink(os.path.join(host.state_dir, "networks", "gone.json"))
    os.unlink(os.path.join(host.state_dir, "endpoints", f"{gone_ep['id']}.json"))
    with IPRoute(netns=host.netns) as ipr:
        ipr.link("add", ifname=knames.vxlan_name(4545), kind="vxlan", vxlan_id=4545, vxlan_port=4789,
                 vxlan_local=host.address)

    lab.start_daemon(host)
    assert lab.ping(a, ep_b["ip"])
    sandboxes = os.listdir(os.path.join(host.state_dir, "netns"))
    assert sandboxes == [os.path.basename(knames.sandbox_path(host.state_dir, 4343))]
    # A network on VNI 4545 works although a device with that VNI was left behind: no "file exists".
    lab.overlayctl(host, "network", "create", "again", "--subnet", "198.19.45.0/24", "--vni", "4545")
    c, d = lab.add_container("c"), lab.add_container("d")
    lab.overlayctl(host, "attach", c, "--network", "again")
    ep_d = lab.overlayctl_json(host, "attach", d, "--network", "again")
    assert lab.ping(c, ep_d["ip"])


def test_a_host_started_before_its_seed_joins_when_the_seed_comes_up(lab):
    """Hosts of a rack boot in any order: one whose --join seed is not up yet starts anyway (alone,
    retrying in the background) and is in the cluster once the seed answers, without a restart."""
    seed, early = lab.add_host("seed"), lab.add_host("early")
    lab.start_daemon(early, "--plaintext", "--join", seed.address)
    wait_until(lambda: "event=join-failed" in lab.daemon_log(early), timeout=30, what="the first join to fail")
    time.sleep(3)  # a few retries go unanswered first
    lab.start_daemon(seed, "--plaintext")
    for host in (seed, early):
        wait_until(lambda h=host: sorted(m["name"] for m in lab.overlayctl_json(h, "members")
                                         if m["state"] == "alive") == ["early", "seed"],
                   timeout=60, what=f"{host.label} to see both hosts alive")
    assert "event=joined" in lab.daemon_log(early)
