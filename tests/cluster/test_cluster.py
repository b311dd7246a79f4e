"""Several real overlayd processes, each in its own host namespace, joined by gossip.

The network is created once, containers attach on different hosts and ping across; a host is
killed, restarted, partitioned and put behind 10% loss (nftables), and must converge by itself.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from overlaynet.lab import Lab, wait_until
from overlaynet.model import gateway_mac
from tests.support.cluster import FAST, alive_count, host_key_file, start_cluster, write_key

pytestmark = pytest.mark.cluster

def member_state(lab: Lab, host, name: str) -> str | None:
    return next((m["state"] for m in lab.overlayctl_json(host, "members") if m["name"] == name), None)


def endpoint_ips(lab: Lab, host, network: str) -> set[str]:
    return {e["ip"] for e in lab.overlayctl_json(host, "endpoint", "ls", "--all", "--network", network)}


def nft(lab: Lab, host, script: str) -> None:
    result = lab.run(host.netns, ["nft", "-f", "-"], input=script)
    assert result.returncode == 0, result.stderr


def test_three_hosts_one_network(lab):
    hosts = start_cluster(lab, 3, write_key(lab))
    h1, h2, h3 = hosts
    lab.overlayctl(h1, "network", "create", "blue", "--subnet", "198.19.50.0/24")
    wait_until(lambda: all(any(n["name"] == "blue" for n in lab.overlayctl_json(h, "network", "ls")) for h in hosts),
               what="network visible on every host")
    a, b, c = lab.add_container("a"), lab.add_container("b"), lab.add_container("c")
    ep_a = lab.overlayctl_json(h2, "attach", a, "--network", "blue")
    ep_b = lab.overlayctl_json(h3, "attach", b, "--network", "blue")
    ep_c = lab.overlayctl_json(h3, "attach", c, "--network", "blue")
    assert len({ep_a["ip"], ep_b["ip"], ep_c["ip"]}) == 3
    lab.wait_ping(a, ep_b["ip"])
    lab.wait_ping(b, ep_a["ip"])
    transfer = lab.tcp_transfer(a, b, ep_b["ip"], 8 * 1024 * 1024)
    assert transfer.intact, transfer
    # What h2 programmed: the two remote MACs behind h3's VTEP (and the anycast gateway's MAC as
    # local to the bridge), h3 in the flood list.
    fdb = lab.overlayctl_json(h2, "fdb", "blue")["programmed"]
    vni = lab.overlayctl_json(h2, "network", "inspect", "blue")["vni"]
    assert {e["mac"]: e["vtep"] for e in fdb["fdb"]} == {ep_b["mac"]: h3.address, ep_c["mac"]: h3.address,
                                                         gateway_mac(vni): "0.0.0.0"}
    assert fdb["flood"] == [h3.address]
    # ARP suppression: the remote endpoints, and the network's anycast gateway (answered on this host).
    assert {e["ip"] for e in fdb["neigh"]} == {ep_b["ip"], ep_c["ip"], "198.19.50.1"}
    # A name or VNI taken anywhere is taken everywhere.
    dup = lab.overlayctl(h3, "network", "create", "blue", "--subnet", "198.19.51.0/24", check=False)
    assert dup.returncode == 1 and "already exists" in dup.stderr

    # Detach: the entry disappears from the other host's kernel.
    lab.overlayctl(h3, "detach", c, "--network", "blue")
    wait_until(lambda: ep_c["mac"] not in {e["mac"] for e in lab.overlayctl_json(h2, "fdb", "blue")["programmed"]["fdb"]},
               what="detached endpoint's FDB entry removed on h2")


def test_concurrent_attaches_never_share_an_address(lab):
    hosts = start_cluster(lab, 3, write_key(lab))
    lab.overlayctl(hosts[0], "network", "create", "many", "--subnet", "198.19.52.0/24")
    wait_until(lambda: all(any(n["name"] == "many" for n in lab.overlayctl_json(h, "network", "ls")) for h in hosts))
    containers = [(h, lab.add_container(f"{h.label}c{i}")) for h in hosts for i in range(3)]
    procs = []
    for host, ns in containers:
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "overlaynet.cli.main", "--socket", host.socket, "attach", ns,
             "--network", "many", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [r[1] for r in results]
    ips = [json.loads(out)["ip"] for out, _ in results]
    assert len(set(ips)) == len(ips), ips
    wait_until(lambda: all(len(endpoint_ips(lab, h, "many")) == len(ips) for h in hosts),
               what="every host sees every endpoint")


def test_kill_9_withdraws_and_restart_restores(lab):
    hosts = start_cluster(lab, 3, write_key(lab))
    h1, h2, h3 = hosts
    lab.overlayctl(h1, "network", "create", "red", "--subnet", "198.19.53.0/24")
    wait_until(lambda: any(n["name"] == "red" for n in lab.overlayctl_json(h3, "network", "ls")))
    a, b = lab.add_container("a"), lab.add_container("b")
    lab.overlayctl_json(h2, "attach", a, "--network", "red")
    ep_b = lab.overlayctl_json(h3, "attach", b, "--network", "red")
    lab.wait_ping(a, ep_b["ip"])
    node_id = lab.overlayctl_json(h3, "status")["node_id"]

    lab.stop_daemon(h3, signal.SIGKILL)
    wait_until(lambda: member_state(lab, h1, "h3") == "dead" and member_state(lab, h2, "h3") == "dead",
               timeout=30, what="h3 declared dead by h1 and h2")
    wait_until(lambda: ep_b["ip"] not in endpoint_ips(lab, h2, "red"), what="h3's endpoint withdrawn on h2")
    # Its forwarding entries stay for --withdraw-delay (a restart must not cut traffic), then go.
    def remote_fdb() -> list[dict]:  # entries behind other hosts' VTEPs (not the local gateway MAC)
        return [e for e in lab.overlayctl_json(h2, "fdb", "red")["programmed"]["fdb"] if e["vtep"] != "0.0.0.0"]

    assert remote_fdb()
    wait_until(lambda: not remote_fdb(), timeout=30,
               what="h3's FDB entries removed from h2's kernel")

    lab.start_daemon(h3)
    assert lab.overlayctl_json(h3, "status")["node_id"] == node_id
    wait_until(lambda: member_state(lab, h1, "h3") == "alive", timeout=30, what="h3 alive again")
    wait_until(lambda: ep_b["ip"] in endpoint_ips(lab, h2, "red"), what="h3's endpoint back on h2")
    lab.wait_ping(a, ep_b["ip"])


def test_partition_heals_and_converges(lab):
    hosts = start_cluster(lab, 3, write_key(lab))
    h1, h2, h3 = hosts
    lab.overlayctl(h1, "network", "create", "green", "--subnet", "198.19.54.0/24")
    wait_until(lambda: any(n["name"] == "green" for n in lab.overlayctl_json(h3, "network", "ls")))
    a = lab.add_container("a")
    ep_a = lab.overlayctl_json(h1, "attach", a, "--network", "green")
    # Cut h3 off from h1 and h2, both ways.
    peers = f"{{ {h1.address}, {h2.address} }}"
    rule = (f"table inet part {{\n chain in {{ type filter hook input priority 0; ip saddr {peers} drop; }}\n"
            f" chain out {{ type filter hook output priority 0; ip daddr {peers} drop; }}\n}}\n")
    nft(lab, h3, rule)
    wait_until(lambda: member_state(lab, h1, "h3") == "dead", timeout=30, what="h1 sees h3 dead")
    # While partitioned, h3 attaches a container: h1 cannot know yet.
    b = lab.add_container("b")
    ep_b = lab.overlayctl_json(h3, "attach", b, "--network", "green")
    assert ep_b["ip"] not in endpoint_ips(lab, h1, "green")
    nft(lab, h3, "delete table inet part")
    wait_until(lambda: member_state(lab, h1, "h3") == "alive", timeout=60, what="partition healed")
    wait_until(lambda: ep_b["ip"] in endpoint_ips(lab, h1, "green"), timeout=60, what="h3's endpoint reaches h1")
    assert ep_a["ip"] != ep_b["ip"]
    lab.wait_ping(a, ep_b["ip"], timeout=30)


def test_converges_under_ten_percent_loss(lab):
    key = write_key(lab)
    hosts = [lab.add_host(f"h{i + 1}") for i in range(3)]
    for host in hosts:
        nft(lab, host, "table inet loss {\n chain out { type filter hook output priority 0; "
                       "oifname \"eth0\" numgen random mod 100 < 10 drop; }\n}\n")
    for i, host in enumerate(hosts):
        lab.start_daemon(host, "--key-file", key, *FAST, *(["--join", hosts[0].address] if i else []))
    wait_until(lambda: all(alive_count(lab, h) == 3 for h in hosts), timeout=60, what="membership under loss")
    lab.overlayctl(hosts[0], "network", "create", "lossy", "--subnet", "198.19.55.0/24")
    wait_until(lambda: all(any(n["name"] == "lossy" for n in lab.overlayctl_json(h, "network", "ls"))
                           for h in hosts), timeout=30)
    eps = []
    for host in hosts:
        ns = lab.add_container(f"c{host.label}")
        eps.append((ns, lab.overlayctl_json(host, "attach", ns, "--network", "lossy")))
    wait_until(lambda: all(len(endpoint_ips(lab, h, "lossy")) == 3 for h in hosts), timeout=30,
               what="every endpoint everywhere under 10% loss")
    # Nobody was wrongly declared dead.
    assert all(alive_count(lab, h) == 3 for h in hosts)
    lab.wait_ping(eps[0][0], eps[2][1]["ip"], timeout=30)


def test_wrong_key_stays_out(lab):
    good, bad = write_key(lab, "good.key"), write_key(lab, "bad.key")
    hosts = start_cluster(lab, 2, good)
    intruder = lab.add_host("evil")
    lab.start_daemon(intruder, "--key-file", bad, "--join", hosts[0].address, *FAST)
    time.sleep(3)
    names = {m["name"] for m in lab.overlayctl_json(hosts[0], "members")}
    assert "evil" not in names
    assert {m["name"] for m in lab.overlayctl_json(intruder, "members")} == {"evil"}
    stats = lab.overlayctl_json(hosts[0], "status")["gossip"]
    assert stats["auth_failed"] > 0, stats
    lab.overlayctl(intruder, "network", "create", "evilnet", "--subnet", "198.19.56.0/24")
    time.sleep(1)
    assert all(n["name"] != "evilnet" for n in lab.overlayctl_json(hosts[1], "network", "ls"))


def test_key_rotation_without_restart(lab):
    key_file = write_key(lab)
    with open(key_file) as f:
        old_key = f.read().strip()
    hosts = start_cluster(lab, 3, key_file)
    new_key = base64.b64encode(os.urandom(32)).decode()
    lab.overlayctl(hosts[0], "keys", "install", new_key)
    wait_until(lambda: all(len(lab.overlayctl_json(h, "keys", "ls")["keys"]) == 2 for h in hosts),
               what="new key installed everywhere")
    lab.overlayctl(hosts[0], "keys", "use", new_key)
    wait_until(lambda: len({lab.overlayctl_json(h, "keys", "ls")["primary"] for h in hosts}) == 1,
               what="same primary everywhere")
    old_ids = [k["id"] for k in lab.overlayctl_json(hosts[0], "keys", "ls")["keys"] if not k["primary"]]
    assert old_ids
    # Still one cluster after the switch; then the old key can go.
    lab.overlayctl(hosts[1], "network", "create", "rot", "--subnet", "198.19.57.0/24")
    wait_until(lambda: all(any(n["name"] == "rot" for n in lab.overlayctl_json(h, "network", "ls")) for h in hosts))
    refused = lab.overlayctl(hosts[0], "keys", "remove", new_key, check=False)
    assert refused.returncode == 1 and "primary" in refused.stderr
    lab.overlayctl(hosts[2], "keys", "remove", old_key)
    wait_until(lambda: all(len(lab.overlayctl_json(h, "keys", "ls")["keys"]) == 1 for h in hosts),
               what="old key removed everywhere")
    lab.overlayctl(hosts[1], "network", "rm", "rot")
    wait_until(lambda: all(all(n["name"] != "rot" for n in lab.overlayctl_json(h, "network", "ls")) for h in hosts))
    assert all(alive_count(lab, h) == 3 for h in hosts)
    # The rotation is on disk too: a restart keeps the new key only.
    with open(os.path.join(lab.workdir, f"{hosts[1].label}.key")) as f:
        assert f.read().split() == [new_key]


def test_concurrent_create_of_one_name_ends_with_one_network(lab):
    hosts = start_cluster(lab, 3, write_key(lab))
    subnets = ["198.19.58.0/24", "198.19.59.0/24"]
    procs = [subprocess.Popen([sys.executable, "-m", "overlaynet.cli.main", "--socket", h.socket, "network", "create",
                               "same", "--subnet", subnet], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for h, subnet in zip(hosts[:2], subnets, strict=True)]
    outcomes = [(p.wait(timeout=60), p.stderr.read().strip()) for p in procs]
    winners = [i for i, (code, _) in enumerate(outcomes) if code == 0]
    assert len(winners) == 1, outcomes
    loser_message = outcomes[1 - winners[0]][1]
    assert "same time" in loser_message or "already exists" in loser_message, loser_message
    assert len(loser_message.splitlines()) == 1
    wait_until(lambda: {next(n["subnet"] for n in lab.overlayctl_json(h, "network", "ls") if n["name"] == "same")
                        for h in hosts} == {subnets[winners[0]]}, what="every host agrees on the winner")


def test_dead_hosts_address_blocks_are_reclaimed_after_the_delay(lab):
    key = write_key(lab)
    h1, h2 = lab.add_host("h1"), lab.add_host("h2")
    args = ["--ipam-reclaim-after", "4", *FAST]
    lab.start_daemon(h1, "--key-file", host_key_file(lab, h1, key), *args)
    lab.start_daemon(h2, "--key-file", host_key_file(lab, h2, key), "--join", h1.address, *args)
    wait_until(lambda: alive_count(lab, h1) == 2)
    # A /29 is four blocks of two addresses; .0 and .7 are reserved: six usable.
    lab.overlayctl(h1, "network", "create", "tiny", "--subnet", "198.19.60.0/29", "--no-gateway")
    wait_until(lambda: any(n["name"] == "tiny" for n in lab.overlayctl_json(h2, "network", "ls")))
    held_by_h2 = lab.overlayctl_json(h2, "attach", lab.add_container("x"), "--network", "tiny")["ip"]
    mine = []
    while True:
        result = lab.overlayctl(h1, "attach", lab.add_container(f"y{len(mine)}"), "--network", "tiny", "--json",
                                check=False)
        if result.returncode:
            assert "no free address" in result.stderr, result.stderr
            break
        mine.append(json.loads(result.stdout)["ip"])
    assert held_by_h2 not in mine and len(mine) == 4  # h2's block (2 addresses) stays out of reach
    lab.stop_daemon(h2, signal.SIGKILL)
    wait_until(lambda: member_state(lab, h1, "h2") == "dead", timeout=30)
    started = time.monotonic()
    got = wait_until(lambda: lab.overlayctl(h1, "attach", lab.add_container(f"z{int(time.monotonic() * 1000)}"),
                                            "--network", "tiny", "--json", check=False).returncode == 0,
                     timeout=30, interval=1.0, what="the dead host's block reclaimed")
    assert got and time.monotonic() - started >= 2.0  # not before the delay


@pytest.mark.parametrize("modes", [("userspace", "userspace"), ("userspace", "kernel")],
                         ids=["userspace-userspace", "userspace-kernel"])
def test_userspace_dataplane_across_hosts(lab, modes):
    """Containers behind the userspace fast path reach each other and kernel-mode hosts."""
    key = write_key(lab)
    h1, h2 = lab.add_host("h1"), lab.add_host("h2")
    lab.start_daemon(h1, "--key-file", host_key_file(lab, h1, key), "--dataplane", modes[0], *FAST)
    lab.start_daemon(h2, "--key-file", host_key_file(lab, h2, key), "--dataplane", modes[1], "--join", h1.address,
                     "--fastpath-spin-us", "20", *FAST)
    wait_until(lambda: alive_count(lab, h1) == 2 and alive_count(lab, h2) == 2)
    if modes[1] == "userspace":  # the setting reaches the fastpathd that overlayd starts
        assert lab.overlayctl_json(h2, "status")["dataplane_status"]["offloads"]["busy_poll_us"] == 20
    lab.overlayctl(h1, "network", "create", "fast", "--subnet", "198.19.61.0/24")
    wait_until(lambda: any(n["name"] == "fast" for n in lab.overlayctl_json(h2, "network", "ls")))
    a, b = lab.add_container("a"), lab.add_container("b")
    ep_a = lab.overlayctl_json(h1, "attach", a, "--network", "fast")
    ep_b = lab.overlayctl_json(h2, "attach", b, "--network", "fast")
    lab.wait_ping(a, ep_b["ip"])
    lab.wait_ping(b, ep_a["ip"])
    for src, dst, ip in ((a, b, ep_b["ip"]), (b, a, ep_a["ip"])):
        transfer = lab.tcp_transfer(src, dst, ip, 16 * 1024 * 1024)
        assert transfer.intact, transfer
    status = lab.overlayctl_json(h1, "status")
    assert status["dataplane"] == "userspace" and status["dataplane_status"]["offloads"]
    stats = lab.overlayctl_json(h1, "stats")
    vni = lab.overlayctl_json(h1, "network", "inspect", "fast")["vni"]
    counters = stats["networks"][str(vni)]
    assert counters["tx_packets"] > 0 and counters["rx_packets"] > 0
    view = lab.overlayctl_json(h1, "fdb", "fast")
    fdb = view["programmed"]
    # the remote endpoint, and the anycast gateway's MAC as local to this host's bridge
    assert sorted(fdb["fdb"], key=lambda e: e["vtep"]) == [
        {"mac": gateway_mac(vni), "vtep": "0.0.0.0"}, {"mac": ep_b["mac"], "vtep": h2.address}]
    assert view["desired"] == fdb, "in step, so `overlayctl fdb` must not claim a difference"
    assert fdb["flood"] == [h2.address]

    # overlayd restarts (even kill -9) do not stop the fast path: a ping running across keeps answering.
    ping = lab.popen(a, ["ping", "-n", "-i", "0.05", "-c", "80", "-W", "1", ep_b["ip"]],
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(0.5)
        lab.stop_daemon(h1, signal.SIGKILL)
        time.sleep(0.5)
        lab.start_daemon(h1, *h1.extra_args, "--fastpath-spin-us", "25")
        out, _ = ping.communicate(timeout=60)
    finally:
        if ping.poll() is None:
            ping.kill()
    assert " 0% packet loss" in out, out
    assert "fastpathd-adopted" in lab.daemon_log(h1)
    # the adopted fastpathd keeps forwarding with its own setting; the difference is logged
    assert "fastpathd-settings-differ busy_poll_us=0 configured=25" in lab.daemon_log(h1)
