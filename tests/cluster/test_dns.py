"""Cluster-wide DNS: every overlayd answers, on its network's anycast gateway address inside the
sandbox, for the names of every endpoint of that network in the cluster.

Checked in both dataplane modes: names resolve across hosts (UDP and TCP), shared names give
several addresses, PTR, NXDOMAIN vs REFUSED, a detached name disappears, a restarted overlayd
answers again, and ARP for the gateway is answered on the host (never across the underlay).
"""

from __future__ import annotations

import signal

import pytest

from overlaynet.lab import Lab, wait_until
from overlaynet.model import gateway_mac
from tests.support.cluster import FAST, alive_count, host_key_file, write_key

pytestmark = pytest.mark.cluster

def resolve(lab: Lab, ns: str, server: str, name: str, qtype: str = "A", tcp: bool = False) -> dict | None:
    return lab.resolve(ns, server, name, qtype, tcp)


def addresses(lab: Lab, ns: str, server: str, name: str) -> list[str]:
    answer = resolve(lab, ns, server, name)
    return answer["answers"] if answer and answer["rcode"] == "NOERROR" else []


@pytest.mark.parametrize("mode", ["kernel", "userspace"])
def test_names_resolve_across_hosts(lab, mode):
    key = write_key(lab)
    h1, h2 = lab.add_host("h1"), lab.add_host("h2")
    lab.start_daemon(h1, "--key-file", host_key_file(lab, h1, key), "--dataplane", mode, *FAST)
    lab.start_daemon(h2, "--key-file", host_key_file(lab, h2, key), "--dataplane", mode, "--join", h1.address,
                     *FAST)
    wait_until(lambda: alive_count(lab, h1) == 2 and alive_count(lab, h2) == 2, what="2 members alive")
    net = lab.overlayctl_json(h1, "network", "create", "names", "--subnet", "198.19.62.0/24")
    gw = net["gateway"]
    assert gw == "198.19.62.1"  # the default: the first usable address
    wait_until(lambda: any(n["name"] == "names" for n in lab.overlayctl_json(h2, "network", "ls")))

    web, db, web2 = lab.add_container("web"), lab.add_container("db"), lab.add_container("web2")
    ep_web = lab.overlayctl_json(h1, "attach", web, "--network", "names", "--name", "web", "--name", "Front")
    ep_db = lab.overlayctl_json(h2, "attach", db, "--network", "names")  # default name: the netns name
    ep_web2 = lab.overlayctl_json(h2, "attach", web2, "--network", "names", "--name", "web")
    assert ep_web["names"] == ["web", "front"] and ep_db["names"] == [db] and ep_web2["names"] == ["web"]
    listed = lab.overlayctl(h2, "endpoint", "ls", "--all").stdout
    assert "web,front" in listed

    # From host 2 (db): its own host's server answers for both hosts' endpoints.
    both = sorted([ep_web["ip"], ep_web2["ip"]])
    wait_until(lambda: addresses(lab, db, gw, "web") == both, what="web -> both addresses, seen from h2")
    assert addresses(lab, db, gw, "WEB.names") == both  # case-insensitive, qualified by the network
    assert addresses(lab, db, gw, "front") == [ep_web["ip"]]
    assert resolve(lab, db, gw, "front", tcp=True) == {"rcode": "NOERROR", "aa": 1, "answers": [ep_web["ip"]]}
    assert resolve(lab, db, gw, "front", "AAAA")["rcode"] == "NOERROR"  # the name exists, no IPv6 record
    assert resolve(lab, db, gw, "nobody")["rcode"] == "NXDOMAIN"
    assert resolve(lab, db, gw, "nobody.names")["rcode"] == "NXDOMAIN"
    assert resolve(lab, db, gw, "example.com")["rcode"] == "REFUSED"  # no upstream
    reverse = ".".join(reversed(ep_web["ip"].split("."))) + ".in-addr.arpa"
    assert resolve(lab, db, gw, reverse, "PTR")["answers"] == ["front.names.", "web.names."]
    # From host 1 (web): the other host's name, and ping by the resolved address.
    wait_until(lambda: addresses(lab, web, gw, db) == [ep_db["ip"]], what="db's name seen from h1")
    lab.wait_ping(web, addresses(lab, web, gw, db)[0])
    lab.wait_ping(db, ep_web["ip"])  # the anycast MAC on every bridge broke nothing

    # ARP for the gateway is answered on the host, by the bridge that owns the address; the entry
    # is programmed where the dataplane would otherwise answer or flood it (kernel: the VXLAN
    # device's neighbour table; userspace: the fast path, with the gateway's MAC marked local).
    fdb = lab.overlayctl_json(h1, "fdb", "names")["programmed"]
    assert {"ip": gw, "mac": gateway_mac(net["vni"])} in fdb["neigh"]
    neigh = lab.run(web, ["ip", "neigh", "show", gw]).stdout
    assert gateway_mac(net["vni"]) in neigh, neigh
    if mode == "userspace":
        # Forget the gateway's MAC in the container and ask again: the bridge answers; the fast
        # path sees the broadcast too and keeps it on this host (no second answer, no flood).
        assert {"mac": gateway_mac(net["vni"]), "vtep": "0.0.0.0"} in fdb["fdb"]
        vni = str(net["vni"])
        before = lab.overlayctl_json(h1, "stats")["networks"][vni]["tx_local"]
        lab.run(web, ["ip", "neigh", "flush", "dev", "eth0"])
        assert addresses(lab, web, gw, "front") == [ep_web["ip"]]
        after = lab.overlayctl_json(h1, "stats")["networks"][vni]["tx_local"]
        assert after > before

    status = lab.overlayctl_json(h2, "status")["dns"]
    assert status["servers"] == [{"network": "names", "address": gw, "port": 53}]
    assert status["queries"] >= 8 and status["answered"] >= 4 and status["nxdomain"] >= 2
    assert status["refused"] >= 1

    # A detached endpoint's name disappears everywhere.
    lab.overlayctl(h2, "detach", web2, "--network", "names")
    wait_until(lambda: addresses(lab, web, gw, "web") == [ep_web["ip"]], what="web2's address gone on h1")

    # A restarted overlayd serves again (kill -9: no goodbye, sockets gone with the process).
    lab.stop_daemon(h2, signal.SIGKILL)
    assert resolve(lab, db, gw, "front") is None
    lab.start_daemon(h2)
    wait_until(lambda: addresses(lab, db, gw, "front") == [ep_web["ip"]], timeout=30,
               what="h2's DNS answering again after a restart")

    # Names can be changed on a live endpoint (what the Docker plugin does after Join).
    lab.overlayctl(h1, "endpoint", "name", ep_web["id"][:12], "api")
    wait_until(lambda: addresses(lab, db, gw, "api") == [ep_web["ip"]], what="renamed endpoint seen from h2")
    assert resolve(lab, db, gw, "front")["rcode"] == "NXDOMAIN"
