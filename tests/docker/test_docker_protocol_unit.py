"""Docker's driver protocol mapped to and from overlaynet's objects (requests as Docker sends them)."""

from __future__ import annotations

import pytest

from overlaynet import model
from overlaynet.plugins.docker import protocol as p

pytestmark = pytest.mark.unit

NET_ID = "a3dfce" + "0" * 58
EP_ID = "182b98" + "1" * 58
ENDPOINT = {"id": EP_ID, "network": "blue", "ip": "198.19.5.2", "prefixlen": 24, "mac": "02:42:c6:13:05:02",
            "mtu": 1450, "host": "a", "vtep": "198.18.0.1", "host_ifname": "ove182b98111",
            "container_ifname": "ovc182b98111", "gateway": None}


def test_create_network_plain() -> None:
    req = p.parse_create_network({
        "NetworkID": NET_ID,
        "Options": {"com.docker.network.enable_ipv6": False, "com.docker.network.generic": {}},
        "IPv4Data": [{"AddressSpace": "LocalDefault", "Gateway": "198.19.5.1/24", "Pool": "198.19.5.0/24"}],
        "IPv6Data": [],
    })
    assert (req.docker_id, req.subnet, req.gateway, req.name, req.mtu, req.vni) == (
        NET_ID, "198.19.5.0/24", "198.19.5.1", None, None, None)


def test_create_network_options() -> None:
    req = p.parse_create_network({
        "NetworkID": NET_ID,
        "Options": {"com.docker.network.generic": {"mtu": "1400", "vni": "77", "name": "blue", "probe.mode": "l2"}},
        "IPv4Data": [{"Gateway": "198.19.6.254/24", "Pool": "198.19.6.0/24"}],
    })
    assert (req.name, req.mtu, req.vni, req.gateway, req.extra) == ("blue", 1400, 77, "198.19.6.254",
                                                                    {"probe.mode": "l2"})


@pytest.mark.parametrize("body, words", [
    ({"NetworkID": NET_ID, "IPv4Data": [{"Pool": "0.0.0.0/0"}]}, "--subnet"),
    ({"NetworkID": NET_ID, "IPv4Data": []}, "--subnet"),
    ({"NetworkID": NET_ID, "IPv4Data": [{"Pool": "198.19.5.0/24"}], "IPv6Data": [{"Pool": "fd00::/64"}]}, "IPv4"),
    ({"NetworkID": NET_ID, "IPv4Data": [{"Pool": "198.19.5.0/24"}],
      "Options": {"com.docker.network.generic": {"mtu": "big"}}}, "mtu"),
])
def test_create_network_errors_say_what_to_do(body: dict, words: str) -> None:
    with pytest.raises(p.PluginError, match=words):
        p.parse_create_network(body)


def test_create_endpoint_returns_only_what_docker_left_empty() -> None:
    empty = p.parse_create_endpoint({"NetworkID": NET_ID, "EndpointID": EP_ID,
                                     "Interface": {"Address": "", "AddressIPv6": "", "MacAddress": ""}})
    assert (empty.ip, empty.mac) == (None, None)
    assert p.create_endpoint_response(empty, ENDPOINT) == {
        "Interface": {"MacAddress": "02:42:c6:13:05:02", "Address": "198.19.5.2/24"}}
    given = p.parse_create_endpoint({"NetworkID": NET_ID, "EndpointID": EP_ID,
                                     "Interface": {"Address": "198.19.5.2/24", "MacAddress": "02:AA:BB:CC:DD:EE"}})
    assert (given.ip, given.mac) == ("198.19.5.2", "02:aa:bb:cc:dd:ee")
    # Echoing Address or MacAddress back makes Docker roll the endpoint back.
    assert p.create_endpoint_response(given, ENDPOINT) == {"Interface": {}}


def test_endpoint_ids_are_validated() -> None:
    with pytest.raises(p.PluginError):
        p.parse_create_endpoint({"NetworkID": NET_ID, "EndpointID": "../../etc", "Interface": {}})


def test_join_hands_over_the_veth_and_disables_gwbridge() -> None:
    answer = p.join_response(ENDPOINT)
    assert answer == {"InterfaceName": {"SrcName": "ovc182b98111", "DstPrefix": "eth"},
                      "DisableGatewayService": True}
    # The network's gateway is the anycast DNS address, not a router: never a default route.
    assert "Gateway" not in p.join_response(dict(ENDPOINT, gateway="198.19.5.1"))


def test_container_names_become_dns_names() -> None:
    # Compose: the container name has underscores (not a DNS name), the service alias is kept.
    assert model.usable_dns_names(["proj_web_1", "web", "3f2a9c1d0e4b", "Web", ""]) == ["web", "3f2a9c1d0e4b"]


def test_request_pool() -> None:
    assert p.parse_request_pool({"AddressSpace": "overlaynet-local", "Pool": "198.19.5.0/24"}).subnet == "198.19.5.0/24"
    assert p.parse_request_pool({"Options": {"network": "blue"}}).network == "blue"
    with pytest.raises(p.PluginError, match="--subnet"):
        p.parse_request_pool({"Pool": ""})
    with pytest.raises(p.PluginError, match="IPv4"):
        p.parse_request_pool({"Pool": "fd00::/64", "V6": True})
    with pytest.raises(p.PluginError, match="ip-range"):
        p.parse_request_pool({"Pool": "198.19.5.0/24", "SubPool": "198.19.5.0/25"})
    assert p.pool_response("198.19.5.0/24")["PoolID"] == "overlaynet:198.19.5.0/24"
    assert p.subnet_of_pool("overlaynet:198.19.5.0/24") == "198.19.5.0/24"
    with pytest.raises(p.PluginError):
        p.subnet_of_pool("LocalDefault/172.17.0.0/16")


def test_gateway_requests() -> None:
    body = {"PoolID": "overlaynet:198.19.5.0/24", "Address": "",
            "Options": {"RequestAddressType": "com.docker.network.gateway"}}
    assert p.is_gateway_request(body)
    assert p.gateway_address("198.19.5.0/24", None) == "198.19.5.1/24"
    assert p.gateway_address("198.19.5.0/24", "198.19.5.254") == "198.19.5.254/24"
    with pytest.raises(p.PluginError, match="outside"):
        p.gateway_address("198.19.5.0/24", "198.19.6.1")
    assert not p.is_gateway_request({"PoolID": "overlaynet:198.19.5.0/24", "Address": "198.19.5.9"})
    assert p.requested_ip({"Address": "198.19.5.9/24"}) == "198.19.5.9"


def test_capabilities_are_local_scope() -> None:
    assert p.driver_capabilities()["Scope"] == "local"
    assert set(p.activate()["Implements"]) == {"NetworkDriver", "IpamDriver"}
