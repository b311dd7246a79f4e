"""The installed overlaynet-cni executable, driven the way libcni drives it (env + stdin, JSON on
stdout), against a real overlayd and real namespaces."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from typing import Any

import pytest
from pyroute2 import netns as pyroute2_netns

from overlaynet.api.client import Client
from overlaynet.lab import enter_netns
from tests.cni.conftest import PodmanCluster, PodmanHost
from tests.support.engines import run_in

# Generous: the first test also pays for installing (apt) and preparing two podman hosts.
pytestmark = [pytest.mark.cni, pytest.mark.timeout(900)]
NET = "cniproto"
SUBNET = "198.19.41.0/24"


def conf(h: PodmanHost, **extra: Any) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": NET, "type": "overlaynet-cni", "socket": h.host.socket,
            "subnet": SUBNET, **extra}


def cni(h: PodmanHost, command: str, config: dict[str, Any], netns: str = "", cid: str = "",
        ifname: str = "eth0", args: str = "") -> tuple[int, Any]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CNI_COMMAND": command, "CNI_CONTAINERID": cid,
           "CNI_NETNS": netns, "CNI_IFNAME": ifname, "CNI_ARGS": args,
           "CNI_PATH": os.path.dirname(h.plugin)}
    result = subprocess.run([h.plugin], input=json.dumps(config), env=env, capture_output=True, text=True,
                            timeout=60, preexec_fn=enter_netns(h.host.netns))
    assert "Traceback" not in result.stderr, result.stderr
    out = json.loads(result.stdout) if result.stdout.strip() else None
    return result.returncode, out


@pytest.fixture
def host_a(podman_cluster: PodmanCluster):
    yield podman_cluster.a
    api = Client(podman_cluster.a.host.socket)
    if any(n["name"] == NET for n in api.list_networks()):
        api.delete_network(NET, force=True)


def _has_eth0(ns: str) -> bool:
    return " eth0@" in run_in(os.path.basename(ns), ["ip", "-o", "link"]).stdout


def test_add_check_del_lifecycle(podman_cluster: PodmanCluster, host_a: PodmanHost) -> None:
    ns = "/run/netns/" + podman_cluster.lab.add_container("c1")
    code, result = cni(host_a, "ADD", conf(host_a), ns, "cid1")
    assert code == 0, result
    assert result["cniVersion"] == "1.0.0"
    (endpoint,) = Client(host_a.host.socket).list_endpoints(NET)
    assert endpoint["labels"] == {"owner": "cni", "cni.network": NET, "cni.containerID": "cid1", "cni.ifname": "eth0"}
    container_if = result["interfaces"][1]
    assert container_if["name"] == "eth0" and container_if["sandbox"] == ns
    ip = result["ips"][0]
    assert ip["address"].startswith("198.19.41.") and ip["address"].endswith("/24")
    assert result["interfaces"][ip["interface"]] == container_if
    shown = run_in(os.path.basename(ns), ["ip", "-o", "addr", "show", "eth0"]).stdout
    assert ip["address"] in shown, shown
    assert container_if["mac"] in run_in(os.path.basename(ns), ["ip", "-o", "link", "show", "eth0"]).stdout

    again, err = cni(host_a, "ADD", conf(host_a), ns, "cid1")
    assert again != 0 and err["code"] >= 100 and "already" in err["msg"], err

    assert cni(host_a, "CHECK", conf(host_a, prevResult=result), ns, "cid1") == (0, None)
    wrong = dict(result, ips=[{"address": "198.19.41.250/24", "interface": 1}])
    code, err = cni(host_a, "CHECK", conf(host_a, prevResult=wrong), ns, "cid1")
    assert code != 0 and "198.19.41.250" in err["msg"], err
    # The record is not enough: CHECK asks overlayd whether the veth really exists. The lab's
    # periodic resync may put eth0 back between the delete and the CHECK (a correct repair, seen on
    # a loaded CI machine); then the CHECK rightly passes, and the delete is tried again.
    for _attempt in range(5):
        run_in(os.path.basename(ns), ["ip", "link", "del", "eth0"])
        code, err = cni(host_a, "CHECK", conf(host_a, prevResult=result), ns, "cid1")
        if code != 0 or not _has_eth0(ns):
            break
    assert code != 0 and "missing" in err["msg"], err
    Client(host_a.host.socket).reconcile()  # overlayd puts it back
    assert cni(host_a, "CHECK", conf(host_a, prevResult=result), ns, "cid1") == (0, None)

    assert cni(host_a, "DEL", conf(host_a, prevResult=result), ns, "cid1") == (0, None)
    assert "eth0" not in run_in(os.path.basename(ns), ["ip", "-o", "link"]).stdout
    assert cni(host_a, "DEL", conf(host_a), ns, "cid1") == (0, None)  # idempotent
    code, err = cni(host_a, "CHECK", conf(host_a, prevResult=result), ns, "cid1")
    assert code != 0 and "not attached" in err["msg"], err


def test_del_succeeds_when_the_netns_is_already_gone(podman_cluster: PodmanCluster, host_a: PodmanHost) -> None:
    name = podman_cluster.lab.add_container("c2")
    ns = "/run/netns/" + name
    code, result = cni(host_a, "ADD", conf(host_a), ns, "cid2")
    assert code == 0, result
    pyroute2_netns.remove(name)
    assert cni(host_a, "DEL", conf(host_a), ns, "cid2") == (0, None)
    assert Client(host_a.host.socket).list_endpoints(NET) == []
    address = result["ips"][0]["address"].split("/")[0]
    # The address is free again: a new attachment may take it.
    ns3 = "/run/netns/" + podman_cluster.lab.add_container("c3")
    code, result3 = cni(host_a, "ADD", conf(host_a), ns3, "cid3", args=f"IgnoreUnknown=1;IP={address}")
    assert code == 0 and result3["ips"][0]["address"].split("/")[0] == address, result3
    assert cni(host_a, "DEL", conf(host_a), ns3, "cid3") == (0, None)


def test_status_and_version(podman_cluster: PodmanCluster, host_a: PodmanHost, prefix: str) -> None:
    assert cni(host_a, "STATUS", conf(host_a)) == (0, None)
    code, err = cni(host_a, "STATUS", conf(host_a, socket=f"/tmp/{prefix}-nosuch.sock"))
    assert code == 50 and err["code"] == 50 and "not running" in err["msg"], err
    # A socket file nobody listens on (a crashed daemon) is "down" too.
    stale = os.path.join(podman_cluster.lab.workdir, "stale.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(stale)
    s.close()
    code, err = cni(host_a, "STATUS", conf(host_a, socket=stale))
    assert code == 50 and err["code"] == 50, err
    code, version = cni(host_a, "VERSION", {"cniVersion": "1.1.0"})
    assert code == 0 and "1.1.0" in version["supportedVersions"] and "1.0.0" in version["supportedVersions"]


def test_gc_removes_only_stale_cni_attachments(podman_cluster: PodmanCluster, host_a: PodmanHost) -> None:
    lab = podman_cluster.lab
    ns_keep, ns_stale, ns_other = (f"/run/netns/{lab.add_container(n)}" for n in ("g1", "g2", "g3"))
    assert cni(host_a, "ADD", conf(host_a), ns_keep, "keep")[0] == 0
    assert cni(host_a, "ADD", conf(host_a), ns_stale, "stale")[0] == 0
    api = Client(host_a.host.socket)
    other = api.create_endpoint(NET, netns=ns_other)  # not made by CNI: GC must leave it alone
    gc_conf = conf(host_a, **{"cniVersion": "1.1.0",
                              "cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "eth0"}]})
    assert cni(host_a, "GC", gc_conf) == (0, None)
    left = {ep["netns"] for ep in api.list_endpoints(NET)}
    assert left == {ns_keep, other["netns"]}, left
    api.delete_endpoint(other["id"])
    assert cni(host_a, "DEL", conf(host_a), ns_keep, "keep") == (0, None)


def test_bad_input_is_a_cni_error_on_stdout(host_a: PodmanHost) -> None:
    code, err = cni(host_a, "ADD", {"cniVersion": "9.9.9", "name": NET, "type": "overlaynet-cni"},
                    "/run/netns/none", "x")
    assert code != 0 and err["code"] == 1 and "9.9.9" in err["msg"], err
    code, err = cni(host_a, "ADD", conf(host_a), "", "x")
    assert code != 0 and err["code"] == 4 and "CNI_NETNS" in err["msg"], err
    code, err = cni(host_a, "ADD", conf(host_a, network="no-such-net", subnet=None), "/proc/self/ns/net", "x")
    assert code != 0 and err["code"] == 100 and "no-such-net" in err["msg"], err
