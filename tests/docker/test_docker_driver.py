"""A real dockerd drives overlaynet-docker: networks, containers, errors, restarts, no leaks."""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys

import pytest

from overlaynet.api.client import Client
from tests.docker.conftest import DockerCluster
from tests.support.engines import IMAGE, TEST_DEFAULT_POOL, fetch_from, run_in, wait_until

# Generous: the first test also pays for installing (apt) and starting two engines.
pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]


def api(cluster: DockerCluster, label: str = "a") -> Client:
    return Client(cluster.lab.hosts[label].socket)


def wait_network(cluster: DockerCluster, label: str, name: str, timeout: float = 15.0) -> dict:
    def find() -> dict | None:
        return next((n for n in api(cluster, label).list_networks() if n["name"] == name), None)

    return wait_until(find, timeout, f"overlaynet network {name} on host {label}")


def host_links(netns: str) -> list[str]:
    out = run_in(netns, ["ip", "-o", "link", "show"]).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]


def overlay_links(netns: str) -> list[str]:
    return [name for name in host_links(netns) if name.startswith(("ovc", "ove"))]


@pytest.fixture
def net_a(docker_cluster: DockerCluster, prefix: str):
    """A Docker network on host a, removed (with its containers) after the test."""
    engine = docker_cluster.a.engine
    name = f"{prefix}-dnet"
    engine.docker("network", "create", "-d", "overlaynet", "--ipam-driver", "overlaynet",
                  "--subnet", "198.19.20.0/24", name)
    yield name
    ids = engine.docker("ps", "-aq", "--filter", f"network={name}", check=False).stdout.split()
    if ids:
        engine.docker("rm", "-f", *ids, check=False)
    engine.docker("network", "rm", name, check=False)


def test_network_create_makes_overlaynet_network_named_after_docker_network(
        docker_cluster: DockerCluster, net_a: str) -> None:
    net = wait_network(docker_cluster, "a", net_a)
    assert net["subnet"] == "198.19.20.0/24"
    assert net["options"].get("docker.network_id")
    inspect = docker_cluster.a.engine.docker_json("network", "inspect", net_a)[0]
    assert inspect["Driver"] == "overlaynet"
    assert inspect["IPAM"]["Driver"] == "overlaynet"
    assert net["options"]["docker.network_id"] == inspect["Id"]


def test_containers_reach_each_other_by_name_and_ip_with_overlay_mtu_and_mac(
        docker_cluster: DockerCluster, net_a: str, prefix: str) -> None:
    engine = docker_cluster.a.engine
    web, db = f"{prefix}-web", f"{prefix}-db"
    engine.docker("run", "-d", "--name", web, "--network", net_a, "--stop-signal", "SIGKILL", IMAGE,
                  "httpd", "-f", "-p", "80", "-h", "/var/www")
    engine.docker("run", "-d", "--name", db, "--network", net_a, "--stop-signal", "SIGKILL", IMAGE,
                  "sleep", "3600")
    endpoints = {ep["ip"]: ep for ep in api(docker_cluster).list_endpoints(net_a)}
    web_ip = engine.docker_json("inspect", web)[0]["NetworkSettings"]["Networks"][net_a]["IPAddress"]
    assert web_ip in endpoints, f"Docker's address {web_ip} is not one overlayd allocated: {endpoints}"
    ep = endpoints[web_ip]
    assert ep["labels"]["owner"] == "docker"
    link = engine.docker("exec", web, "ip", "-o", "link", "show", "eth0").stdout
    assert f"mtu {ep['mtu']}" in link and ep["mac"] in link, link
    # eth0 carries the overlay's subnet; Docker's gateway service adds eth1 on docker_gwbridge with
    # the default route (egress, published ports).
    routes = engine.docker("exec", web, "ip", "route").stdout
    assert "198.19.20.0/24 dev eth0" in routes and "default via" in routes and "dev eth1" in routes, routes
    assert engine.docker("exec", db, "wget", "-qO-", "http://" + web + "/").stdout.strip() == "overlaynet-ok"
    assert engine.docker("exec", db, "wget", "-qO-", f"http://{web_ip}/").stdout.strip() == "overlaynet-ok"
    db_ip = engine.docker_json("inspect", db)[0]["NetworkSettings"]["Networks"][net_a]["IPAddress"]
    assert ", 0% packet loss" in engine.docker("exec", web, "ping", "-c", "2", "-W", "2", db_ip).stdout


def test_stop_start_and_rm_never_leak_veths_or_endpoints(
        docker_cluster: DockerCluster, net_a: str, prefix: str) -> None:
    engine, netns = docker_cluster.a.engine, docker_cluster.a.host.netns
    name = f"{prefix}-cycle"
    engine.docker("run", "-d", "--name", name, "--network", net_a, "--stop-signal", "SIGKILL", IMAGE,
                  "sleep", "3600")
    assert len(api(docker_cluster).list_endpoints(net_a)) == 1
    engine.docker("stop", "-t", "0", name)
    assert api(docker_cluster).list_endpoints(net_a) == []
    assert overlay_links(netns) == []
    engine.docker("start", name)  # a new EndpointID, a new veth
    assert len(api(docker_cluster).list_endpoints(net_a)) == 1
    assert ", 0% packet loss" in engine.docker("exec", name, "ping", "-c", "1", "127.0.0.1").stdout
    engine.docker("rm", "-f", name)
    assert api(docker_cluster).list_endpoints(net_a) == []
    assert overlay_links(netns) == [], "veth pairs leaked into the host namespace"


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["clean-restart", "crash"])
def test_dockerd_restart_brings_containers_back_without_stale_endpoints(
        docker_cluster: DockerCluster, net_a: str, prefix: str, how: signal.Signals) -> None:
    """dockerd restarts (cleanly, or after kill -9): containers with a restart policy come back on
    the network and reach each other by name; nothing of their old attachments is left."""
    engine, netns = docker_cluster.a.engine, docker_cluster.a.host.netns
    names = [f"{prefix}-r{how.value}x{i}" for i in range(2)]
    for name in names:
        engine.docker("run", "-d", "--name", name, "--network", net_a, "--restart", "always",
                      "--stop-signal", "SIGKILL", IMAGE, "sleep", "3600")
    assert len(api(docker_cluster).list_endpoints(net_a)) == 2
    engine.restart(how)

    def back() -> bool:
        running = engine.docker("ps", "-q", "--filter", f"network={net_a}", check=False).stdout.split()
        return len(running) == 2

    wait_until(back, 60, "containers with --restart always running again")
    out = engine.docker("exec", names[0], "ping", "-c", "2", "-W", "2", names[1], check=False)
    assert ", 0% packet loss" in out.stdout, out.stdout + out.stderr
    endpoints = api(docker_cluster).list_endpoints(net_a)
    assert len(endpoints) == 2, f"stale endpoints after the restart: {endpoints}"
    assert len(overlay_links(netns)) == 0, "veth pairs leaked into the host namespace"
    engine.docker("rm", "-f", *names)
    assert api(docker_cluster).list_endpoints(net_a) == []


def test_static_ip_and_mac_are_honoured_and_conflicts_explained(
        docker_cluster: DockerCluster, net_a: str, prefix: str) -> None:
    engine = docker_cluster.a.engine
    engine.docker("run", "-d", "--name", f"{prefix}-st", "--network", net_a, "--ip", "198.19.20.50",
                  "--mac-address", "02:aa:bb:cc:dd:ee", "--stop-signal", "SIGKILL", IMAGE, "sleep", "3600")
    (ep,) = api(docker_cluster).list_endpoints(net_a)
    assert (ep["ip"], ep["mac"]) == ("198.19.20.50", "02:aa:bb:cc:dd:ee")
    clash = engine.docker("run", "--rm", "--network", net_a, "--ip", "198.19.20.50", IMAGE, "true", check=False)
    assert clash.returncode != 0
    assert "198.19.20.50" in clash.stderr and "in use" in clash.stderr, clash.stderr
    assert len(api(docker_cluster).list_endpoints(net_a)) == 1  # the failed run left nothing behind


def test_internal_network_gets_neither_egress_nor_published_ports(
        docker_cluster: DockerCluster, prefix: str) -> None:
    engine, b = docker_cluster.a.engine, docker_cluster.b.host
    name, web = f"{prefix}-int", f"{prefix}-intweb"
    engine.docker("network", "create", "-d", "overlaynet", "--ipam-driver", "overlaynet", "--internal",
                  "--subnet", "198.19.29.0/24", name)
    try:
        engine.docker("run", "-d", "--name", web, "--network", name, "-p", "18080:80", "--stop-signal", "SIGKILL",
                      IMAGE, "httpd", "-f", "-p", "80", "-h", "/var/www")
        routes = engine.docker("exec", web, "ip", "route").stdout
        assert "default" not in routes and "eth1" not in routes, routes
        served = engine.docker("exec", web, "wget", "-qO-", "http://127.0.0.1/").stdout.strip()
        assert served == "overlaynet-ok"  # it serves; nothing publishes it
        netns = docker_cluster.a.host.netns
        assert fetch_from(netns, "http://127.0.0.1:18080/") == ""
        ping = engine.docker("exec", web, "ping", "-c", "1", "-W", "2", b.address, check=False)
        assert ping.returncode != 0, ping.stdout
        # Docker drops -p on --internal networks before the driver sees it; the driver says so.
        assert "event=network-internal" in engine.plugin_log() and "no published ports" in engine.plugin_log()
    finally:
        engine.docker("rm", "-f", web, check=False)
        engine.docker("network", "rm", name, check=False)


def test_docker_option_conventions(docker_cluster: DockerCluster, prefix: str) -> None:
    engine, client = docker_cluster.a.engine, api(docker_cluster)

    def create(name: str, *args: str, check: bool = True):
        return engine.docker("network", "create", "-d", "overlaynet", "--ipam-driver", "overlaynet", *args, name,
                             check=check)

    made: list[str] = []
    try:
        # Docker's standard MTU key is honoured.
        made.append(f"{prefix}-mtu")
        create(made[-1], "--subnet", "198.19.34.0/24", "-o", "com.docker.network.driver.mtu=1400")
        assert wait_network(docker_cluster, "a", made[-1])["mtu"] == 1400
        link = engine.docker("run", "--rm", "--network", made[-1], IMAGE, "ip", "-o", "link", "show", "eth0").stdout
        assert "mtu 1400" in link, link
        # Unknown keys and an encrypted=<no> are refused, saying what is known / why.
        typo = create(f"{prefix}-typo", "--subnet", "198.19.35.0/24", "-o", "colour=blue", check=False)
        assert typo.returncode != 0 and "unknown option -o colour" in typo.stderr, typo.stderr
        assert "com.docker.network.driver.mtu, encrypted, mtu, name, vni" in typo.stderr, typo.stderr
        enc = create(f"{prefix}-enc", "--subnet", "198.19.35.0/24", "-o", "encrypted=false", check=False)
        assert enc.returncode != 0 and "or leave the option out" in enc.stderr, enc.stderr
        # Without --subnet: a free /24 of the default pool, a different one for each network.
        subnets = []
        for i in range(2):
            made.append(f"{prefix}-auto{i}")
            create(made[-1])
            subnets.append(engine.docker_json("network", "inspect", made[-1])[0]["IPAM"]["Config"][0]["Subnet"])
            assert wait_network(docker_cluster, "a", made[-1])["subnet"] == subnets[-1]
        pool = ipaddress.IPv4Network(TEST_DEFAULT_POOL)
        assert all(ipaddress.IPv4Network(s).subnet_of(pool) and s.endswith("/24") for s in subnets), subnets
        assert subnets[0] != subnets[1]
        engine.docker("run", "--rm", "--network", made[-1], IMAGE, "true")
        assert client.list_endpoints(made[-1]) == []
    finally:
        for name in made:
            engine.docker("network", "rm", name, check=False)
    version = subprocess.run([sys.executable, "-m", "overlaynet.plugins.docker", "--version"], capture_output=True,
                             text=True, timeout=30)
    assert version.returncode == 0 and version.stdout.startswith("overlaynet-docker "), version


def test_user_errors_come_back_as_one_clear_line(docker_cluster: DockerCluster, prefix: str) -> None:
    engine = docker_cluster.a.engine
    null_ipam = engine.docker("network", "create", "-d", "overlaynet", "--ipam-driver", "null",
                              f"{prefix}-nosub", check=False)
    assert null_ipam.returncode != 0 and "--ipam-driver overlaynet" in null_ipam.stderr, null_ipam.stderr
    v6 = engine.docker("network", "create", "-d", "overlaynet", "--ipam-driver", "overlaynet", "--ipv6",
                       "--subnet", "198.19.21.0/24", "--subnet", "fd00:21::/64", f"{prefix}-v6", check=False)
    assert v6.returncode != 0 and "IPv4" in v6.stderr, v6.stderr
    api(docker_cluster).create_network(f"{prefix}-taken", "198.19.22.0/24")
    try:
        clash = engine.docker("network", "create", "-d", "overlaynet", "--ipam-driver", "overlaynet",
                              "--subnet", "198.19.22.0/25", f"{prefix}-clash", check=False)
        assert clash.returncode != 0 and "overlaps" in clash.stderr and f"{prefix}-taken" in clash.stderr, clash.stderr
    finally:
        api(docker_cluster).delete_network(f"{prefix}-taken")
    names = engine.docker("network", "ls", "--format", "{{.Name}}").stdout.split()
    assert not [n for n in names if n.startswith(f"{prefix}-") and n != f"{prefix}-dnet"], names


def test_restarted_plugin_keeps_serving_existing_networks_and_removes_its_socket(
        docker_cluster: DockerCluster, net_a: str, prefix: str) -> None:
    engine = docker_cluster.a.engine
    first = f"{prefix}-before"
    engine.docker("run", "-d", "--name", first, "--network", net_a, "--stop-signal", "SIGKILL", IMAGE,
                  "sleep", "3600")
    assert engine.stop_plugin(signal.SIGTERM) == 0
    assert not os.path.exists(engine.plugin_socket), "SIGTERM must unlink the plugin socket"
    engine.start_plugin()
    second = f"{prefix}-after"
    engine.docker("run", "-d", "--name", second, "--network", net_a, "--stop-signal", "SIGKILL", IMAGE,
                  "sleep", "3600")
    assert ", 0% packet loss" in engine.docker("exec", second, "ping", "-c", "2", "-W", "2", first).stdout
    engine.docker("rm", "-f", first, second)
    assert api(docker_cluster).list_endpoints(net_a) == []


def test_network_rm_removes_the_overlaynet_network(docker_cluster: DockerCluster, prefix: str) -> None:
    engine = docker_cluster.a.engine
    name = f"{prefix}-gone"
    engine.docker("network", "create", "-d", "overlaynet", "--ipam-driver", "overlaynet",
                  "--subnet", "198.19.23.0/24", name)
    wait_network(docker_cluster, "a", name)
    engine.docker("network", "rm", name)
    assert all(n["name"] != name for n in api(docker_cluster).list_networks())


def test_docker_network_attaches_to_an_existing_overlaynet_network(
        docker_cluster: DockerCluster, prefix: str) -> None:
    """What host b sees once gossip brought host a's network: the same `docker network create` joins
    it instead of making a second one, and `docker network rm` there leaves it in place."""
    engine, client = docker_cluster.a.engine, api(docker_cluster)
    name = f"{prefix}-shared"
    client.create_network(name, "198.19.24.0/24")
    try:
        engine.docker("network", "create", "-d", "overlaynet", "--ipam-driver", "overlaynet",
                      "--subnet", "198.19.24.0/24", name)
        engine.docker("run", "-d", "--name", f"{prefix}-sh", "--network", name, "--stop-signal", "SIGKILL",
                      IMAGE, "sleep", "3600")
        (ep,) = client.list_endpoints(name)
        assert ep["ip"].startswith("198.19.24.")
        assert [n["name"] for n in client.list_networks()].count(name) == 1
        engine.docker("rm", "-f", f"{prefix}-sh")
        engine.docker("network", "rm", name)
        assert client.get_network(name)["subnet"] == "198.19.24.0/24"  # not ours to delete
        # Docker's gateway reservation was handed back.
        assert client.reserve_address(name, "198.19.24.1")["ip"] == "198.19.24.1"
        client.release_address(name, "198.19.24.1")
    finally:
        client.delete_network(name, force=True)


def test_same_name_with_another_subnet_is_refused_with_the_right_subnet(
        docker_cluster: DockerCluster, prefix: str) -> None:
    engine, client = docker_cluster.a.engine, api(docker_cluster)
    name = f"{prefix}-mism"
    client.create_network(name, "198.19.25.0/24")
    try:
        # Docker does not send the name with CreateNetwork, so the mismatch shows at first use ...
        engine.docker("network", "create", "-d", "overlaynet", "--ipam-driver", "overlaynet",
                      "--subnet", "198.19.26.0/24", name)
        run = engine.docker("run", "--rm", "--network", name, IMAGE, "true", check=False)
        assert run.returncode != 0 and "--subnet 198.19.25.0/24" in run.stderr, run.stderr
        engine.docker("network", "rm", name)
        # ... unless the name is given with -o name=, which fails `docker network create` itself.
        named = engine.docker("network", "create", "-d", "overlaynet", "--ipam-driver", "overlaynet",
                              "--subnet", "198.19.26.0/24", "-o", f"name={name}", f"{name}2", check=False)
        assert named.returncode != 0 and "--subnet 198.19.25.0/24" in named.stderr, named.stderr
        assert client.list_endpoints(name) == []
    finally:
        engine.docker("network", "rm", name, check=False)
        client.delete_network(name, force=True)


def test_plugin_killed_hard_leaves_a_stale_socket_that_the_next_start_replaces(
        docker_cluster: DockerCluster, net_a: str, prefix: str) -> None:
    engine = docker_cluster.a.engine
    engine.stop_plugin(signal.SIGKILL)
    assert os.path.exists(engine.plugin_socket)
    engine.start_plugin()
    engine.docker("run", "--rm", "--network", net_a, IMAGE, "true")
    assert api(docker_cluster).list_endpoints(net_a) == []


def test_ipam_opt_network_takes_the_subnet_from_overlaynet(docker_cluster: DockerCluster, prefix: str) -> None:
    engine, client = docker_cluster.a.engine, api(docker_cluster)
    name = f"{prefix}-byname"
    client.create_network(name, "198.19.27.0/24")
    try:
        engine.docker("network", "create", "-d", "overlaynet", "--ipam-driver", "overlaynet",
                      "--ipam-opt", f"network={name}", name)
        inspect = engine.docker_json("network", "inspect", name)[0]
        assert inspect["IPAM"]["Config"][0]["Subnet"] == "198.19.27.0/24"
        engine.docker("run", "--rm", "--network", name, IMAGE, "true")
    finally:
        engine.docker("network", "rm", name, check=False)
        client.delete_network(name, force=True)


def test_addresses_from_overlaynet_ipam_are_unique_across_hosts(docker_cluster: DockerCluster, prefix: str) -> None:
    a, b = docker_cluster.a.engine, docker_cluster.b.engine
    name = f"{prefix}-multi"
    a.docker("network", "create", "-d", "overlaynet", "--ipam-driver", "overlaynet", "--subnet", "198.19.28.0/24", name)
    try:
        wait_network(docker_cluster, "b", name, timeout=20)
        b.docker("network", "create", "-d", "overlaynet", "--ipam-driver", "overlaynet", "--subnet", "198.19.28.0/24",
                 name)
        ips: dict[str, str] = {}
        for engine, label in ((a, "a"), (b, "b"), (a, "a"), (b, "b")):
            cname = f"{prefix}-m{len(ips)}{label}"
            engine.docker("run", "-d", "--name", cname, "--network", name, "--stop-signal", "SIGKILL", IMAGE,
                          "sleep", "3600")
            ips[cname] = engine.docker_json("inspect", cname)[0]["NetworkSettings"]["Networks"][name]["IPAddress"]
        assert len(set(ips.values())) == 4, f"an address was handed out twice: {ips}"
        first_a, first_b = list(ips)[0], list(ips)[1]

        def ping(count: int) -> str:
            return a.docker("exec", first_a, "ping", "-c", str(count), "-W", "2", ips[first_b], check=False).stdout

        wait_until(lambda: ", 0% packet loss" in ping(1), 30, "a container on a to ping one on b")
        assert ", 0% packet loss" in ping(2)
    finally:
        for engine in (a, b):
            ids = engine.docker("ps", "-aq", "--filter", f"network={name}", check=False).stdout.split()
            if ids:
                engine.docker("rm", "-f", *ids, check=False)
        b.docker("network", "rm", name, check=False)
        a.docker("network", "rm", name, check=False)
