"""Unreadable state files never cut a container off: endpoints are rebuilt or kept and reported."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from overlaynet import kernel
from overlaynet.api.client import Client
from overlaynet.lab import wait_until
from tests.support.cluster import FAST
from tests.support.lab import finish_ping, pair_on_one_host, start_pinging

pytestmark = pytest.mark.integration


def truncate(path: str) -> None:
    with open(path, "r+") as f:
        size = len(f.read())
        f.truncate(size // 2)


def endpoint_file(host, endpoint_id: str) -> str:
    return os.path.join(host.state_dir, "endpoints", f"{endpoint_id}.json")


def sandbox_links(lab, host, vni: int) -> set[str]:
    out = subprocess.run(["nsenter", f"--net={kernel.sandbox_path(host.state_dir, vni)}", "ip", "-o", "link"],
                         capture_output=True, text=True, check=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def mangle_network_file(host, network: str, change) -> str:
    """Rewrite a cached network record as valid JSON that is no longer a network; returns its path."""
    path = os.path.join(host.state_dir, "networks", f"{network}.json")
    with open(path) as f:
        record = json.load(f)
    change(record)
    with open(path, "w") as f:
        json.dump(record, f)
    return path


def reconcile(host) -> None:
    assert Client(host.socket).reconcile()["errors"] == []


def test_truncated_endpoint_file_is_rebuilt_from_the_kernel_without_losing_a_ping(lab):
    pair = pair_on_one_host(lab, "trunc", "198.19.60.0/24", 6060)
    host, b, ep_a, ep_b = pair.host, pair.b, pair.ep_a, pair.ep_b
    ping = start_pinging(lab, b, ep_a["ip"], count=160)
    try:
        lab.stop_daemon(host, signal.SIGKILL)
        truncate(endpoint_file(host, ep_a["id"]))
        lab.start_daemon(host)
        reconcile(host)  # a full pass must not remove the rebuilt endpoint's veth
    finally:
        out = finish_ping(ping)
    assert " 0% packet loss" in out, out
    eps = {e["id"]: e for e in lab.overlayctl_json(host, "endpoint", "ls")}
    assert set(eps) == {ep_a["id"], ep_b["id"]}
    rebuilt = eps[ep_a["id"]]
    for key in ("ip", "mac", "network", "ifname", "netns", "mtu"):
        assert rebuilt[key] == ep_a[key], (key, rebuilt, ep_a)
    with open(endpoint_file(host, ep_a["id"])) as f:
        assert json.load(f)["ip"] == ep_a["ip"], "the rebuilt endpoint is persisted again"
    assert "event=endpoint-rebuilt" in lab.daemon_log(host)
    assert lab.ping(b, ep_a["ip"])


def test_rebuild_takes_names_from_the_clusters_record(lab):
    h1, h2 = lab.add_host("h1"), lab.add_host("h2")
    lab.start_daemon(h1)
    lab.start_daemon(h2, "--join", h1.address, "--key-file", os.path.join(h1.state_dir, "gossip.key"))
    lab.overlayctl(h1, "network", "create", "rec", "--subnet", "198.19.61.0/24", "--vni", "6161")
    wait_until(lambda: lab.overlayctl_json(h2, "network", "ls"), what="the network on h2")
    a, b = lab.add_container("a"), lab.add_container("b")
    ep_a = lab.overlayctl_json(h1, "attach", a, "--network", "rec", "--name", "alpha")
    lab.overlayctl_json(h2, "attach", b, "--network", "rec")
    lab.wait_ping(b, ep_a["ip"])
    lab.stop_daemon(h1, signal.SIGKILL)
    truncate(endpoint_file(h1, ep_a["id"]))
    lab.start_daemon(h1)
    ep = next(e for e in lab.overlayctl_json(h1, "endpoint", "ls") if e["id"] == ep_a["id"])
    assert ep["names"] == ["alpha"] and ep["ip"] == ep_a["ip"], ep
    assert "source=cluster+kernel" in lab.daemon_log(h1)
    lab.wait_ping(b, ep_a["ip"])
    wait_until(lambda: any(e["id"] == ep_a["id"] for e in lab.overlayctl_json(h2, "endpoint", "ls", "--all")),
               what="h2 still sees the endpoint")


def test_endpoint_of_a_namespace_held_only_by_its_process_is_rebuilt(lab):
    pair = pair_on_one_host(lab, "proc", "198.19.63.0/24", 6363)
    holder = lab.popen(pair.a, ["sleep", "600"])
    try:
        subprocess.run(["umount", f"/run/netns/{pair.a}"], check=True)
        lab.stop_daemon(pair.host, signal.SIGKILL)
        truncate(endpoint_file(pair.host, pair.ep_a["id"]))
        lab.start_daemon(pair.host)
        reconcile(pair.host)
        ep = next(e for e in lab.overlayctl_json(pair.host, "endpoint", "ls") if e["id"] == pair.ep_a["id"])
        assert ep["netns"] == f"/proc/{holder.pid}/ns/net" and ep["ip"] == pair.ep_a["ip"], ep
        assert lab.ping(pair.b, pair.ep_a["ip"], count=3)
    finally:
        holder.kill()
        holder.wait()


def test_endpoint_that_cannot_be_rebuilt_is_kept_and_reported_unknown(lab):
    pair = pair_on_one_host(lab, "lost", "198.19.62.0/24", 6262)
    host, a, ep_a, ep_b = pair.host, pair.a, pair.ep_a, pair.ep_b
    # The container's namespace is held only by a bind mount in another mount namespace: nothing
    # overlayd can see leads to it.
    hidden = os.path.join(lab.workdir, "hidden-netns")
    open(hidden, "w").close()
    holder = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c",
                               f"mount --bind /run/netns/{a} {hidden} && echo ready && exec sleep 600"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        subprocess.run(["umount", f"/run/netns/{a}"], check=True)
        lab.stop_daemon(host, signal.SIGKILL)
        truncate(endpoint_file(host, ep_a["id"]))
        lab.start_daemon(host)
        reconcile(host)
        veth = kernel.host_veth_name(ep_a["id"])
        assert veth in sandbox_links(lab, host, 6262), "an unreadable file must never remove a veth"
        status = lab.overlayctl_json(host, "status")
        [unknown] = status["endpoints_unknown"]
        assert unknown["id"] == ep_a["id"] and unknown["network"] == "lost", unknown
        text = lab.overlayctl(host, "endpoint", "ls").stdout
        assert f"UNKNOWN endpoint {ep_a['id'][:12]}" in text and f"overlayctl endpoint rm {ep_a['id']}" in text, text
        assert ep_b["id"][:12] in text
        assert lab.ping(pair.b, ep_b["ip"])
        # The operator decides: remove it, veth and all.
        lab.overlayctl(host, "endpoint", "rm", ep_a["id"])
        assert veth not in sandbox_links(lab, host, 6262)
        assert lab.overlayctl_json(host, "status")["endpoints_unknown"] == []
        assert not os.path.exists(endpoint_file(host, ep_a["id"]) + ".corrupt")
    finally:
        holder.kill()
        holder.wait()


def test_corrupt_node_identity_refuses_to_start_unless_reset(lab):
    host = lab.add_host("h1")
    lab.start_daemon(host)
    old_id = lab.overlayctl_json(host, "status")["node_id"]
    lab.stop_daemon(host)
    with open(os.path.join(host.state_dir, "node.json"), "w") as f:
        f.write('{"id": "12')
    args = [sys.executable, "-m", "overlaynet.daemon", "--config", os.devnull, "--name", "h1",
            "--advertise", host.address, "--state-dir", host.state_dir, "--socket", host.socket]
    for _attempt in range(2):  # the second start (file already moved aside) must refuse too
        proc = lab.run(host.netns, args, timeout=30)
        assert proc.returncode == 1, proc.stderr
        line = proc.stderr.strip().splitlines()[-1]
        assert line.startswith("overlayd: node identity") and "--reset-identity" in line, proc.stderr
        assert "Traceback" not in proc.stderr
    lab.start_daemon(host, "--reset-identity")
    status = lab.overlayctl_json(host, "status")
    assert status["name"] == "h1" and status["node_id"] != old_id


def test_network_file_with_bad_fields_is_quarantined_and_the_network_comes_back_from_a_peer(lab):
    """A cached network record that parses as JSON but is not a network (a field lost or mangled)
    must not stop overlayd: the file is moved aside and the record comes back from the cluster."""
    h1, h2 = lab.add_host("h1"), lab.add_host("h2")
    lab.start_daemon(h1, *FAST, "--plaintext")
    lab.start_daemon(h2, *FAST, "--plaintext", "--join", h1.address)
    lab.overlayctl(h1, "network", "create", "mangled", "--subnet", "198.19.63.0/24", "--vni", "6363")
    a, b = lab.add_container("a"), lab.add_container("b")
    ep_a = lab.overlayctl_json(h1, "attach", a, "--network", "mangled")
    lab.overlayctl_json(h2, "attach", b, "--network", "mangled")
    wait_until(lambda: lab.ping(b, ep_a["ip"]), what="b reaches a across hosts")
    ping = start_pinging(lab, b, ep_a["ip"], count=200)
    try:
        lab.stop_daemon(h1, signal.SIGKILL)
        path = mangle_network_file(h1, "mangled", lambda record: record.pop("subnet"))
        lab.start_daemon(h1, *FAST, "--plaintext")
        wait_until(lambda: any(n["name"] == "mangled" for n in lab.overlayctl_json(h1, "network", "ls")),
                   what="the network learnt again from h2")
        reconcile(h1)
    finally:
        out = finish_ping(ping)
    assert " 0% packet loss" in out, out
    assert os.path.exists(path + ".corrupt"), "the bad file is kept as evidence"
    assert "event=state-file-corrupt" in lab.daemon_log(h1)
    with open(path) as f:
        assert json.load(f)["subnet"] == "198.19.63.0/24", "the network is cached again, whole"


def test_lone_host_with_a_bad_network_file_keeps_its_containers_connected(lab):
    """With no peer to learn the network from, a lost network record must not cut its containers off:
    reconcile keeps them and says why, and only a tombstone (a real removal) unplugs them."""
    pair = pair_on_one_host(lab, "alone", "198.19.64.0/24", 6464)
    host, b, ep_a = pair.host, pair.b, pair.ep_a
    ping = start_pinging(lab, b, ep_a["ip"], count=160)
    try:
        lab.stop_daemon(host, signal.SIGKILL)
        path = mangle_network_file(host, "alone", lambda record: record.update(vni="not a number"))
        lab.start_daemon(host)
        errors = Client(host.socket).reconcile()["errors"]
    finally:
        out = finish_ping(ping)
    assert " 0% packet loss" in out, out
    assert any("network 'alone' is unknown here" in e and "overlayctl endpoint rm" in e for e in errors), errors
    assert {e["id"] for e in lab.overlayctl_json(host, "endpoint", "ls")} == {ep_a["id"], pair.ep_b["id"]}
    assert kernel.host_veth_name(ep_a["id"]) in sandbox_links(lab, host, 6464)
    assert os.path.exists(path + ".corrupt")
