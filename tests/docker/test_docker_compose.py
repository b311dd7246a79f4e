"""The classic Compose workflow on overlaynet: an external network made with `docker network create
-d overlaynet`, services that find each other by name — on one host and across two."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from overlaynet.api.client import Client
from tests.docker.conftest import DockerCluster, DockerHost
from tests.support.engines import IMAGE, fetch_from, wait_until
from tests.support.esp_capture import capture, cleartext_vxlan, decrypt, esp_in_udp, show_keys

# Generous: the first test also pays for installing (apt) and starting two engines.
pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

SERVICES = f"""services:
  web:
    image: {IMAGE}
    command: httpd -f -p 80 -h /var/www
    stop_signal: SIGKILL
  db:
    image: {IMAGE}
    command: sleep 3600
    stop_signal: SIGKILL
"""

CLASSIC = f"""version: '3'
{SERVICES}networks:
  default:
    external:
      name: my-network
"""

def seed_file(dns: str | None = None) -> str:
    """The seed's file as written, ports included; busybox stands in for nginx (80) and mysql (3306).

    Across hosts (`dns` given) each engine runs one service. Docker's embedded DNS knows only its own
    engine's containers and forwards other names to the `dns:` servers, from inside the container:
    the network's gateway is overlaynet's DNS on every host, which knows every host's containers.
    """
    services = ""
    for service, port in (("web", 80), ("db", 3306)):
        services += f"""  {service}:
    image: {IMAGE}
    command: httpd -f -p {port} -h /var/www
    stop_signal: SIGKILL
    ports:
      - "{port}:{port}"
""" + (f"    dns: [{dns}]\n" if dns else "")
    return f"version: '3'\nservices:\n{services}networks:\n  default:\n    external:\n      name: my-network\n"


SEED = seed_file()
SPLIT = seed_file(dns="198.19.30.1")


def assert_published(docker_host: DockerHost, other: DockerHost, port: int) -> None:
    """The port answers on the Docker host itself (127.0.0.1) and from another host (its address)."""
    here = docker_host.host
    wait_until(lambda: fetch_from(here.netns, f"http://127.0.0.1:{port}/") == "overlaynet-ok", 20,
               f"127.0.0.1:{port} on host {here.label}")
    wait_until(lambda: fetch_from(other.host.netns, f"http://{here.address}:{port}/") == "overlaynet-ok", 20,
               f"{here.address}:{port} from host {other.host.label}")


def create_network(h: DockerHost, subnet: str, *options: str) -> None:
    h.engine.docker("network", "create", "-d", "overlaynet", "--ipam-driver", "overlaynet",
                    "--subnet", subnet, *options, "my-network")


@pytest.fixture
def project(docker_cluster: DockerCluster, prefix: str) -> Iterator[tuple[str, str]]:
    """A compose project dir (name, path); `down` on both hosts and network removal afterwards."""
    name = f"{prefix}c"
    path = os.path.join(docker_cluster.lab.workdir, name)
    os.makedirs(path, exist_ok=True)
    yield name, path
    # Every host's containers first: the host that created the overlaynet network removes it only
    # once no host has an endpoint on it (the next test may need my-network with other options).
    for h in (docker_cluster.a, docker_cluster.b):
        if os.path.exists(os.path.join(path, "docker-compose.yml")):
            h.engine.compose(path, "-p", name, "down", check=False)
    for h in (docker_cluster.a, docker_cluster.b):
        h.engine.docker("network", "rm", "my-network", check=False)
    shutil.rmtree(path, ignore_errors=True)


def test_classic_compose_file_on_one_host(docker_cluster: DockerCluster, project: tuple[str, str]) -> None:
    name, path = project
    a = docker_cluster.a
    create_network(a, "198.19.31.0/24")
    with open(os.path.join(path, "docker-compose.yml"), "w") as f:
        f.write(CLASSIC)
    a.engine.compose(path, "-p", name, "up", "-d")
    page = a.engine.compose(path, "-p", name, "exec", "-T", "db", "wget", "-qO-", "http://web/")
    assert page.stdout.strip() == "overlaynet-ok"
    ping = a.engine.compose(path, "-p", name, "exec", "-T", "web", "ping", "-c", "2", "-W", "2", "db")
    assert ", 0% packet loss" in ping.stdout
    web_ip = a.engine.docker_json("inspect", f"{name}_web_1")[0]["NetworkSettings"]["Networks"]["my-network"][
        "IPAddress"]
    by_ip = a.engine.compose(path, "-p", name, "exec", "-T", "db", "wget", "-qO-", f"http://{web_ip}/")
    assert by_ip.stdout.strip() == "overlaynet-ok"
    assert len(Client(a.host.socket).list_endpoints("my-network")) == 2
    a.engine.compose(path, "-p", name, "down")
    assert Client(a.host.socket).list_endpoints("my-network") == []


def test_seed_compose_file_publishes_ports_and_reaches_outside(docker_cluster: DockerCluster,
                                                               project: tuple[str, str]) -> None:
    """The seed's file, ports and all, under a stock dockerd: published ports answer on the host and
    from another host, containers reach beyond the overlay, names still work."""
    name, path = project
    a, b = docker_cluster.a, docker_cluster.b
    create_network(a, "198.19.33.0/24")
    with open(os.path.join(path, "docker-compose.yml"), "w") as f:
        f.write(SEED)
    a.engine.compose(path, "-p", name, "up", "-d")
    assert_published(a, b, 80)
    assert_published(a, b, 3306)
    # Egress: another host's underlay address, outside the overlay, through docker_gwbridge.
    ping = a.engine.compose(path, "-p", name, "exec", "-T", "web", "ping", "-c", "2", "-W", "2", b.host.address,
                            check=False)
    assert ", 0% packet loss" in ping.stdout, ping.stdout + ping.stderr
    # Overlaynet's routes stay right: its subnet on its interface, the default route on the gwbridge.
    routes = a.engine.compose(path, "-p", name, "exec", "-T", "web", "ip", "route").stdout
    web_ip = a.engine.docker_json("inspect", f"{name}_web_1")[0]["NetworkSettings"]["Networks"]["my-network"][
        "IPAddress"]
    overlay_dev = next(line.split("dev ")[1].split()[0] for line in routes.splitlines()
                       if line.startswith("198.19.33.0/24"))
    default_dev = next(line.split("dev ")[1].split()[0] for line in routes.splitlines()
                       if line.startswith("default"))
    assert overlay_dev != default_dev, routes
    assert web_ip in a.engine.compose(
        path, "-p", name, "exec", "-T", "web", "ip", "-o", "addr", "show", overlay_dev).stdout
    page = a.engine.compose(path, "-p", name, "exec", "-T", "db", "wget", "-qO-", "http://web/")
    assert page.stdout.strip() == "overlaynet-ok"
    a.engine.compose(path, "-p", name, "down")
    assert Client(a.host.socket).list_endpoints("my-network") == []


def network_on(h: DockerHost, name: str) -> dict | None:
    return next((n for n in Client(h.host.socket).list_networks() if n["name"] == name), None)


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_compose_across_two_docker_hosts(docker_cluster: DockerCluster, project: tuple[str, str],
                                         encrypted: bool) -> None:
    """The seed's file split over two hosts (web on a, db on b): names resolve across hosts, each
    host publishes its service's port, to itself and to the other host. Encrypted (`-o encrypted`,
    docs/encryption.md): the same, and the underlay carries only ESP for the network."""
    name, path = project
    a = docker_cluster.a
    options = ("-o", "encrypted") if encrypted else ()
    wire = capture(docker_cluster.lab, a.host, f"compose-{'enc' if encrypted else 'plain'}")
    try:
        run_split_compose(docker_cluster, name, path, options)
    finally:
        packets = wire.packets()
    net = network_on(a, "my-network")
    assert net is not None and net["encrypted"] is encrypted
    if encrypted:
        assert not cleartext_vxlan(packets, net["vni"]), "cleartext VXLAN of an encrypted network on the wire"
        assert esp_in_udp(packets)
        assert decrypt(packets, show_keys(docker_cluster.lab, a.host, "my-network"), net["vni"]).icmp
    else:
        assert cleartext_vxlan(packets, net["vni"])  # the capture does see the network's traffic


def run_split_compose(docker_cluster: DockerCluster, name: str, path: str, options: tuple[str, ...]) -> None:
    a, b = docker_cluster.a, docker_cluster.b
    create_network(a, "198.19.30.0/24", *options)
    wait_until(lambda: network_on(a, "my-network"), 15, "my-network in overlayd on host a")
    wait_until(lambda: network_on(b, "my-network"), 20, "my-network (made on host a) to reach host b by gossip")
    # On host b the same command attaches the Docker network to the cluster's my-network.
    create_network(b, "198.19.30.0/24", *options)
    with open(os.path.join(path, "docker-compose.yml"), "w") as f:
        f.write(SPLIT)
    a.engine.compose(path, "-p", name, "up", "-d", "web")
    b.engine.compose(path, "-p", name, "up", "-d", "db")
    net_b = network_on(b, "my-network")
    assert net_b is not None and net_b["owner"] == "a", net_b  # one network, not a second one

    web_ip = a.engine.docker_json("inspect", f"{name}_web_1")[0]["NetworkSettings"]["Networks"]["my-network"][
        "IPAddress"]
    db_ip = b.engine.docker_json("inspect", f"{name}_db_1")[0]["NetworkSettings"]["Networks"]["my-network"][
        "IPAddress"]

    def ping(h: DockerHost, service: str, target: str, count: int) -> str:
        return h.engine.compose(path, "-p", name, "exec", "-T", service, "ping", "-c", str(count), "-W", "2",
                                target, check=False).stdout

    # By IP first. Gossip needs a moment to tell each host where the other's endpoint is.
    wait_until(lambda: ", 0% packet loss" in ping(b, "db", web_ip, 1), 30, "db on host b to ping web's IP")
    assert ", 0% packet loss" in ping(b, "db", web_ip, 3)

    # By name: the plugin publishes the service names after Join; then each side resolves the other
    # through its own host's overlaynet DNS (the `dns:` entry), via Docker's embedded resolver.
    def resolves(h: DockerHost, service: str, target: str, ip: str) -> bool:
        out = h.engine.compose(path, "-p", name, "exec", "-T", service, "nslookup", target, check=False)
        return ip in out.stdout.split("Name:", 1)[-1]

    wait_until(lambda: resolves(b, "db", "web", web_ip), 30, "web's name resolved on host b")
    wait_until(lambda: resolves(a, "web", "db", db_ip), 30, "db's name resolved on host a")
    said = [""]  # (busybox 1.35's `wget -T` segfaults: hence `timeout 5 wget`)

    def fetch() -> bool:
        page = b.engine.compose(path, "-p", name, "exec", "-T", "db", "timeout", "5", "wget", "-qO-", "http://web/",
                                check=False)
        said[0] = (page.stdout + page.stderr)[-300:]
        return page.stdout.strip() == "overlaynet-ok"

    try:
        wait_until(fetch, 30, "db on host b to fetch http://web/ from host a")
    except AssertionError as e:
        raise AssertionError(f"{e}; wget said: {said[0]}") from None
    assert ", 0% packet loss" in ping(a, "web", "db", 2)
    # Each host publishes its own service's port, to itself and to the other host.
    assert_published(a, b, 80)
    assert_published(b, a, 3306)
    page = a.engine.compose(path, "-p", name, "exec", "-T", "web", "wget", "-qO-", "http://db:3306/", check=False)
    assert page.stdout.strip() == "overlaynet-ok", page.stdout + page.stderr
    # What overlayd published: the service name (and the short container id) on the endpoint.
    names = {n for e in Client(a.host.socket).list_endpoints("my-network") for n in e["names"]}
    assert "web" in names, names
    net = network_on(a, "my-network")
    assert net is not None and net["gateway"] == "198.19.30.1"  # Docker's gateway: the DNS address


COMPOSE_NETWORK = f"""version: '3'
{SERVICES}networks:
  default:
    driver: overlaynet
    driver_opts:
      mtu: "1400"
    ipam:
      driver: overlaynet
      config:
        - subnet: 198.19.32.0/24
"""


def test_compose_created_network_with_driver_options(docker_cluster: DockerCluster,
                                                     project: tuple[str, str]) -> None:
    name, path = project
    a = docker_cluster.a
    with open(os.path.join(path, "docker-compose.yml"), "w") as f:
        f.write(COMPOSE_NETWORK)
    a.engine.compose(path, "-p", name, "up", "-d")
    network = f"{name}_default"  # Compose's name for it, and so overlaynet's
    net = wait_until(lambda: network_on(a, network), 15, f"overlaynet network {network}")
    assert (net["subnet"], net["mtu"]) == ("198.19.32.0/24", 1400)
    link = a.engine.compose(path, "-p", name, "exec", "-T", "web", "ip", "-o", "link", "show", "eth0").stdout
    assert "mtu 1400" in link, link
    page = a.engine.compose(path, "-p", name, "exec", "-T", "db", "wget", "-qO-", "http://web/")
    assert page.stdout.strip() == "overlaynet-ok"
    a.engine.compose(path, "-p", name, "down")  # removes the Docker network, and with it ours
    assert network_on(a, network) is None
