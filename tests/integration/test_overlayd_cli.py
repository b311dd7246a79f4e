"""overlayd + overlayctl on one host, through the real CLI, real daemon and real kernel objects."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from overlaynet.lab import Lab
from tests.support.as_nobody import run_as_nobody

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def lab(prefix):
    lab = Lab(prefix=f"{prefix}c")
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture(scope="module")
def host(lab):
    host = lab.add_host("h1")
    lab.start_daemon(host)
    return host


def ctl(lab, host, *args):
    return lab.overlayctl(host, *args, check=False)


def fails_with(result, text):
    assert result.returncode != 0, result.stdout
    err = result.stderr.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert text in err, err
    return err


def test_network_lifecycle(lab, host):
    out = ctl(lab, host, "network", "create", "life", "--subnet", "198.19.10.0/24", "--vni", "310")
    assert out.returncode == 0, out.stderr
    assert "vni 310" in out.stdout
    nets = lab.overlayctl_json(host, "network", "ls")
    life = next(n for n in nets if n["name"] == "life")
    assert life["vni"] == 310 and life["subnet"] == "198.19.10.0/24"
    assert life["mtu"] == 1500 - 50
    assert "life" in ctl(lab, host, "network", "ls").stdout
    inspected = lab.overlayctl_json(host, "network", "inspect", "life")
    assert inspected["vni"] == 310
    assert ctl(lab, host, "network", "rm", "life").returncode == 0
    assert all(n["name"] != "life" for n in lab.overlayctl_json(host, "network", "ls"))


def test_network_create_errors(lab, host):
    fails_with(ctl(lab, host, "network", "create", "bad", "--subnet", "198.19.11.0/33"), "invalid subnet")
    fails_with(ctl(lab, host, "network", "create", "bad", "--subnet", "198.19.11.5/24"), "did you mean")
    fails_with(ctl(lab, host, "network", "create", "bad", "--subnet", "198.19.11.0/24", "--vni", "16777216"),
               "VNI 16777216 out of range")
    fails_with(ctl(lab, host, "network", "create", "bad", "--subnet", "198.19.11.0/24", "--vni", "x"),
               "--vni must be a whole number")
    fails_with(ctl(lab, host, "network", "create", "bad", "--subnet", "198.19.11.0/24", "--mtu", "9000"),
               "MTU")
    assert ctl(lab, host, "network", "create", "dup", "--subnet", "198.19.12.0/24", "--vni", "312").returncode == 0
    fails_with(ctl(lab, host, "network", "create", "dup", "--subnet", "198.19.13.0/24"), "already exists")
    fails_with(ctl(lab, host, "network", "create", "dup2", "--subnet", "198.19.13.0/24", "--vni", "312"),
               "VNI 312 is already used")
    fails_with(ctl(lab, host, "network", "create", "dup3", "--subnet", "198.19.12.128/25"), "overlaps")
    fails_with(ctl(lab, host, "network", "inspect", "nope"), "no network named 'nope'")
    fails_with(ctl(lab, host, "network", "rm", "nope"), "no network named 'nope'")
    assert ctl(lab, host, "network", "rm", "dup").returncode == 0


def test_attach_ping_detach(lab, host):
    assert ctl(lab, host, "network", "create", "blue", "--subnet", "198.19.20.0/24").returncode == 0
    a, b = lab.add_container("a"), lab.add_container("b")
    out = ctl(lab, host, "attach", a, "--network", "blue")
    assert out.returncode == 0, out.stderr
    ip_a = out.stdout.split(" ip ")[1].split("/")[0]
    assert ip_a.startswith("198.19.20.") and ip_a not in ("198.19.20.0", "198.19.20.255")
    ep_b = lab.overlayctl_json(host, "attach", f"/run/netns/{b}", "--network", "blue", "--ip", "198.19.20.77",
                               "--mac", "02:aa:bb:cc:dd:ee", "--ifname", "ov0")
    assert ep_b["ip"] == "198.19.20.77" and ep_b["mac"] == "02:aa:bb:cc:dd:ee"
    # The namespace really has the interface, address and MAC we were told about.
    link = json.loads(lab.run(b, ["ip", "-j", "addr", "show", "dev", "ov0"], check=True).stdout)[0]
    assert link["address"] == "02:aa:bb:cc:dd:ee"
    assert link["mtu"] == 1450
    assert any(a["local"] == "198.19.20.77" and a["prefixlen"] == 24 for a in link["addr_info"])
    assert lab.ping(a, "198.19.20.77")
    result = lab.tcp_transfer(a, b, "198.19.20.77", 4 * 1024 * 1024)
    assert result.intact, result
    eps = lab.overlayctl_json(host, "endpoint", "ls", "--network", "blue")
    assert sorted(e["ip"] for e in eps) == sorted([ip_a, "198.19.20.77"])
    table = ctl(lab, host, "endpoint", "ls").stdout
    assert "198.19.20.77/24" in table and "ID" in table.splitlines()[0]

    fails_with(ctl(lab, host, "network", "rm", "blue"), "attached endpoint")
    assert ctl(lab, host, "detach", b, "--network", "blue").returncode == 0
    assert lab.run(b, ["ip", "link", "show", "ov0"]).returncode != 0  # the interface is gone
    assert not lab.ping(a, "198.19.20.77")
    # The released address is handed out again.
    again = lab.overlayctl_json(host, "attach", b, "--network", "blue", "--ip", "198.19.20.77")
    assert again["ip"] == "198.19.20.77"
    assert ctl(lab, host, "network", "rm", "blue", "--force").returncode == 0
    assert lab.run(a, ["ip", "link", "show", "eth0"]).returncode != 0
    assert lab.overlayctl_json(host, "endpoint", "ls") == []


def test_attach_errors(lab, host):
    # No gateway: all six host addresses of the /29 are usable (a gateway would take the first).
    assert ctl(lab, host, "network", "create", "red", "--subnet", "198.19.30.0/29", "--no-gateway").returncode == 0
    c = lab.add_container("c")
    fails_with(ctl(lab, host, "attach", f"{lab.prefix}-missing", "--network", "red"), "not found")
    fails_with(ctl(lab, host, "attach", c, "--network", "nope"), "no network named 'nope'")
    fails_with(ctl(lab, host, "attach", c, "--network", "red", "--ip", "198.19.31.1"), "outside")
    fails_with(ctl(lab, host, "attach", c, "--network", "red", "--mac", "01:00:00:00:00:01"), "multicast")
    assert ctl(lab, host, "attach", c, "--network", "red", "--ip", "198.19.30.2").returncode == 0
    fails_with(ctl(lab, host, "attach", c, "--network", "red"), "already attached")
    d = lab.add_container("d")
    fails_with(ctl(lab, host, "attach", d, "--network", "red", "--ip", "198.19.30.2"), "already in use")
    fails_with(ctl(lab, host, "detach", d, "--network", "red"), "not attached")
    # A /29 has six usable addresses; fill it and see a clear "full".
    for i in range(5):
        ns = lab.add_container(f"f{i}")
        assert ctl(lab, host, "attach", ns, "--network", "red").returncode == 0
    full = lab.add_container("g")
    fails_with(ctl(lab, host, "attach", full, "--network", "red"), "full")
    assert ctl(lab, host, "network", "rm", "red", "--force").returncode == 0


def test_status_and_openapi(lab, host):
    status = lab.overlayctl_json(host, "status")
    assert status["name"] == "h1" and status["advertise"] == host.address
    assert status["dataplane"] == "userspace"  # the default
    doc = json.loads(lab.run(host.netns, ["curl", "-s", "--unix-socket", host.socket,
                                          "http://x/openapi.json"]).stdout or "{}") if _has_curl() else None
    if doc is not None:
        assert doc["openapi"].startswith("3.") and "/v1/networks" in doc["paths"]
    assert oct(os.stat(host.socket).st_mode & 0o777) == "0o600"


def test_connect_and_disconnect_in_docker_network_order(lab, host):
    assert ctl(lab, host, "network", "create", "dock", "--subnet", "198.19.42.0/24").returncode == 0
    ns = lab.add_container("dock")
    out = ctl(lab, host, "network", "connect", "dock", ns, "--ip", "198.19.42.9", "--alias", "web")
    assert out.returncode == 0, out.stderr
    [ep] = lab.overlayctl_json(host, "endpoint", "ls", "--network", "dock")
    assert ep["ip"] == "198.19.42.9" and ep["names"] == ["web"]
    assert ctl(lab, host, "network", "disconnect", "dock", ns).returncode == 0
    assert lab.overlayctl_json(host, "endpoint", "ls", "--network", "dock") == []
    assert ctl(lab, host, "network", "rm", "dock").returncode == 0


def test_answers_match_the_documented_shapes(lab, host):
    """Every route a real daemon serves answers in the shape its route (and so /openapi.json) documents."""
    import msgspec

    from overlaynet.api.client import ApiError, Client
    from overlaynet.api.routes import BY_NAME

    api = Client(host.socket)
    net = api.create_network("shapes", "198.19.40.0/24")
    ns = lab.add_container("shapes")
    ep = api.create_endpoint("shapes", netns=ns, names=["shapes"])
    calls = {
        "create_network": net, "create_endpoint": ep, "get_network": api.get_network("shapes"),
        "list_networks": api.list_networks(), "list_endpoints": api.list_endpoints("shapes"),
        "get_endpoint": api.get_endpoint(ep["id"], check=True), "members": api.members(),
        "set_endpoint_names": api.set_endpoint_names(ep["id"], ["shapes2"]), "keys": api.keys(),
        "network_fdb": api.network_fdb("shapes"), "reconcile": api.reconcile(),
        "reserve_address": api.reserve_address("shapes"), "status": api.status(), "stats": api.stats(),
        "openapi": api.openapi(), "detach": api.detach("shapes", ns),
    }
    for name, answer in calls.items():
        msgspec.convert(answer, BY_NAME[name].answer_type)
    # The edge refuses what it does not know, through the real socket, in one line.
    try:
        api._send("POST", "/v1/networks", b'{"name": "m", "subnet": "198.19.41.0/24", "mut": 1400}', None)
        raise AssertionError("an unknown key was accepted")
    except ApiError as e:
        assert e.status == 400 and "'mut'" in e.message and "mtu" in e.message, e.message
    assert all(n["name"] != "m" for n in api.list_networks())
    api.delete_network("shapes", force=True)


def _has_curl():
    return subprocess.run(["which", "curl"], capture_output=True).returncode == 0


def test_cli_errors_without_daemon(lab, tmp_path):
    result = subprocess.run([sys.executable, "-m", "overlaynet.cli.main", "--socket", str(tmp_path / "none.sock"),
                             "network", "ls"], capture_output=True, text=True)
    fails_with(result, "overlayd is not running")
    usage = subprocess.run([sys.executable, "-m", "overlaynet.cli.main", "attach"], capture_output=True, text=True)
    assert usage.returncode == 2 and "Traceback" not in usage.stderr


def test_cli_refuses_non_root(lab, host):
    from overlaynet.cli.main import main

    code, err = run_as_nobody(lambda: main(["--socket", host.socket, "status"]))
    assert code == 1
    assert err.strip().startswith("overlayctl: permission denied") and "root" in err, err
    assert "Traceback" not in err
