"""Real podman (CNI backend) runs containers on overlaynet through overlaynet-cni."""

from __future__ import annotations

import pytest

from overlaynet.api.client import Client
from tests.cni.conftest import NETWORK, PodmanCluster, PodmanHost
from tests.support.engines import IMAGE, fetch_from, run_in, wait_until

# Generous: the first test also pays for installing (apt) and preparing two podman hosts.
pytestmark = [pytest.mark.cni, pytest.mark.timeout(900)]


def run_container(h: PodmanHost, name: str, *extra: str) -> str:
    h.engine.podman("run", "-d", "--name", name, "--network", NETWORK, *extra, IMAGE, "sleep", "3600")
    return container_ip(h, name)


def container_ip(h: PodmanHost, name: str) -> str:
    out = h.engine.podman("inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                          name).stdout.strip()
    assert out, f"podman reports no address for {name}"
    return out


def overlay_links(netns: str) -> list[str]:
    out = run_in(netns, ["ip", "-o", "link", "show"]).stdout
    names = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]
    return [n for n in names if n.startswith(("ovc", "ove"))]


def test_podman_containers_ping_and_rm_cleans_up(podman_cluster: PodmanCluster, prefix: str) -> None:
    a = podman_cluster.a
    one, two = f"{prefix}-p1", f"{prefix}-p2"
    ip1 = run_container(a, one)
    ip2 = run_container(a, two)
    endpoints = {ep["ip"]: ep for ep in Client(a.host.socket).list_endpoints(NETWORK)}
    assert {ip1, ip2} <= set(endpoints), endpoints
    link = a.engine.podman("exec", one, "ip", "-o", "link", "show", "eth0").stdout
    assert f"mtu {endpoints[ip1]['mtu']}" in link and endpoints[ip1]["mac"] in link, link
    ping = a.engine.podman("exec", one, "ping", "-c", "2", "-W", "2", ip2).stdout
    assert ", 0% packet loss" in ping, ping
    a.engine.podman("rm", "-f", "-t", "0", one, two)
    assert Client(a.host.socket).list_endpoints(NETWORK) == []
    assert overlay_links(a.host.netns) == []


def test_podman_static_ip(podman_cluster: PodmanCluster, prefix: str) -> None:
    a = podman_cluster.a
    name = f"{prefix}-pst"
    try:
        assert run_container(a, name, "--ip", "198.19.40.77") == "198.19.40.77"
        (ep,) = Client(a.host.socket).list_endpoints(NETWORK)
        assert ep["ip"] == "198.19.40.77"
    finally:
        a.engine.podman("rm", "-f", "-t", "0", name, check=False)


def test_podman_containers_on_two_hosts_ping_each_other(podman_cluster: PodmanCluster, prefix: str) -> None:
    a, b = podman_cluster.a, podman_cluster.b
    one, two = f"{prefix}-pa", f"{prefix}-pb"
    alias = f"{prefix}-web"
    try:
        # the first ADD creates the network (config has "subnet")
        ip_a = run_container(a, one, "--network-alias", alias)

        def on_b() -> bool:
            return any(n["name"] == NETWORK for n in Client(b.host.socket).list_networks())

        wait_until(on_b, 20, f"{NETWORK} (made on host a) to reach host b by gossip")
        ip_b = run_container(b, two)
        assert ip_a != ip_b

        def ping_b(count: int) -> str:
            return a.engine.podman("exec", one, "ping", "-c", str(count), "-W", "2", ip_b, check=False).stdout

        # Gossip needs a moment to tell each host where the other's endpoint is; then no loss at all.
        wait_until(lambda: ", 0% packet loss" in ping_b(1), 30, "container on a to ping the one on b")
        ping_ab = ping_b(3)
        assert ", 0% packet loss" in ping_ab, ping_ab
        ping_ba = b.engine.podman("exec", two, "ping", "-c", "3", "-W", "2", ip_a).stdout
        assert ", 0% packet loss" in ping_ba, ping_ba

        # Names: the container's name (CNI_ARGS K8S_POD_NAME) and its network alias (capability
        # "aliases") resolve on the other host, through that host's overlaynet DNS on the gateway.
        gateway = Client(b.host.socket).get_network(NETWORK)["gateway"]

        def resolves(name: str) -> bool:
            out = b.engine.podman("exec", two, "nslookup", name, gateway, check=False).stdout
            return ip_a in out.split("Name:", 1)[-1]

        wait_until(lambda: resolves(one), 30, f"{one}'s name to resolve on host b")
        assert resolves(alias)
    finally:
        a.engine.podman("rm", "-f", "-t", "0", one, check=False)
        b.engine.podman("rm", "-f", "-t", "0", two, check=False)


def test_podman_publishes_ports_with_portmap_and_reaches_outside_with_egress(
        podman_cluster: PodmanCluster, prefix: str) -> None:
    """An --egress network with CNI portmap chained after overlaynet-cni: `podman run -p 8080:80`
    answers on the host's 8080, locally and from another host; the container reaches another
    host's underlay address; nothing of the egress stays once the container is gone."""
    a, b = podman_cluster.a, podman_cluster.b
    network, name = "cniout", f"{prefix}-pweb"
    a.engine.add_network(network, subnet="198.19.42.0/24", egress=True, portmap=True)
    try:
        a.engine.podman("run", "-d", "--name", name, "--network", network, "-p", "8080:80", IMAGE,
                        "httpd", "-f", "-p", "80", "-h", "/var/www")
        routes = a.engine.podman("exec", name, "ip", "route").stdout
        assert "default via 198.19.42.1 dev eth0" in routes, routes
        wait_until(lambda: fetch_from(b.host.netns, f"http://{a.host.address}:8080/") == "overlaynet-ok", 20,
                   f"{a.host.address}:8080 from host b")
        wait_until(lambda: fetch_from(a.host.netns, "http://127.0.0.1:8080/") == "overlaynet-ok", 20,
                   "127.0.0.1:8080 on host a")
        ping = a.engine.podman("exec", name, "ping", "-c", "2", "-W", "2", b.host.address, check=False).stdout
        assert ", 0% packet loss" in ping, ping
        vni = Client(a.host.socket).get_network(network)["vni"]
        assert f"ovh{vni}" in run_in(a.host.netns, ["ip", "-o", "link"]).stdout
    finally:
        a.engine.podman("rm", "-f", "-t", "0", name, check=False)
    wait_until(lambda: "ovh" not in run_in(a.host.netns, ["ip", "-o", "link"]).stdout, 15,
               "the egress link removed with the last container")
    Client(a.host.socket).delete_network(network, force=True)
