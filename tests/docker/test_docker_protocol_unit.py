"""Docker's driver protocol mapped to and from overlaynet's objects (requests as Docker sends them)."""

from __future__ import annotations

import msgspec
import pytest

from overlaynet import model
from overlaynet.plugins.docker import protocol as p
from overlaynet.plugins.docker import requests as rq

pytestmark = pytest.mark.unit

NET_ID = "a3dfce" + "0" * 58
EP_ID = "182b98" + "1" * 58
ENDPOINT = {"id": EP_ID, "network": "blue", "ip": "198.19.5.2", "prefixlen": 24, "mac": "02:42:c6:13:05:02",
            "mtu": 1450, "host": "a", "vtep": "198.18.0.1", "host_ifname": "ove182b98111",
            "container_ifname": "ovc182b98111", "gateway": None}


def typed(kind: type, body: dict) -> object:
    """A body as Docker sends it, decoded the way the server does."""
    return msgspec.json.decode(msgspec.json.encode(body), type=kind)


def network(body: dict) -> p.NetworkRequest:
    return p.parse_create_network(typed(rq.CreateNetwork, body))  # type: ignore[arg-type]


def endpoint(body: dict) -> p.EndpointRequest:
    return p.parse_create_endpoint(typed(rq.CreateEndpoint, body))  # type: ignore[arg-type]


def pool(body: dict) -> p.PoolRequest:
    return p.parse_request_pool(typed(rq.RequestPool, body))  # type: ignore[arg-type]


def test_create_network_plain() -> None:
    req = network({
        "NetworkID": NET_ID,
        "Options": {"com.docker.network.enable_ipv6": False, "com.docker.network.generic": {}},
        "IPv4Data": [{"AddressSpace": "LocalDefault", "Gateway": "198.19.5.1/24", "Pool": "198.19.5.0/24"}],
        "IPv6Data": [],
    })
    assert (req.docker_id, req.subnet, req.gateway, req.name, req.mtu, req.vni) == (
        NET_ID, "198.19.5.0/24", "198.19.5.1", None, None, None)


def test_create_network_options() -> None:
    req = network({
        "NetworkID": NET_ID,
        "Options": {"com.docker.network.generic": {"mtu": "1400", "vni": "77", "name": "blue"},
                    "com.docker.network.internal": True},
        "IPv4Data": [{"Gateway": "198.19.6.254/24", "Pool": "198.19.6.0/24"}],
    })
    assert (req.name, req.mtu, req.vni, req.gateway, req.internal) == ("blue", 1400, 77, "198.19.6.254", True)
    # Docker's standard MTU key is honoured like our short one.
    standard = network({"NetworkID": NET_ID, "IPv4Data": [{"Pool": "198.19.6.0/24"}],
                        "Options": {"com.docker.network.generic": {"com.docker.network.driver.mtu": "1400"}}})
    assert standard.mtu == 1400 and not standard.internal


def generic(options: dict) -> dict:
    return {"NetworkID": NET_ID, "IPv4Data": [{"Pool": "198.19.6.0/24"}],
            "Options": {"com.docker.network.generic": options}}


@pytest.mark.parametrize("options, words", [
    ({"probe.mode": "l2"}, "unknown option -o probe.mode: overlaynet knows com.docker.network.driver.mtu, "
                           "encrypted, mtu, name, vni"),
    ({"encrypted": "false"}, "give -o encrypted .or encrypted=true. for an encrypted network"),
    ({"encrypted": "maybe"}, "or leave the option out"),
    ({"mtu": "1400", "com.docker.network.driver.mtu": "1300"}, "disagree"),
])
def test_network_options_are_refused_unless_known(options: dict, words: str) -> None:
    with pytest.raises(p.PluginError, match=words):
        network(generic(options))


@pytest.mark.parametrize("value", ["", "true", "True", "1", "yes", "on"])
def test_encrypted_option_with_or_without_a_value_encrypts(value: str) -> None:
    """As Docker's overlay takes it: `-o encrypted` (sent as ""), `-o encrypted=`, `-o encrypted=true`."""
    assert network(generic({"encrypted": value})).encrypted is True
    assert network(generic({})).encrypted is False


@pytest.mark.parametrize("body, words", [
    ({"NetworkID": NET_ID, "IPv4Data": [{"Pool": "0.0.0.0/0"}]}, "--ipam-driver overlaynet"),
    ({"NetworkID": NET_ID, "IPv4Data": [{"Pool": "0.0.0.0/1"}]}, "too large"),
    ({"NetworkID": NET_ID, "IPv4Data": [{"Pool": "127.0.0.0/24"}]}, "cannot use"),
    ({"NetworkID": NET_ID, "IPv4Data": []}, "--subnet"),
    ({"NetworkID": NET_ID, "IPv4Data": [{"Pool": "198.19.5.0/24"}], "IPv6Data": [{"Pool": "fd00::/64"}]}, "IPv4"),
    ({"NetworkID": NET_ID, "IPv4Data": [{"Pool": "198.19.5.0/24"}],
      "Options": {"com.docker.network.generic": {"mtu": "big"}}}, "mtu"),
])
def test_create_network_errors_say_what_to_do(body: dict, words: str) -> None:
    with pytest.raises(p.PluginError, match=words):
        network(body)


def test_create_endpoint_returns_only_what_docker_left_empty() -> None:
    empty = endpoint({"NetworkID": NET_ID, "EndpointID": EP_ID,
                                     "Interface": {"Address": "", "AddressIPv6": "", "MacAddress": ""}})
    assert (empty.ip, empty.mac) == (None, None)
    assert p.create_endpoint_response(empty, ENDPOINT) == {
        "Interface": {"MacAddress": "02:42:c6:13:05:02", "Address": "198.19.5.2/24"}}
    given = endpoint({"NetworkID": NET_ID, "EndpointID": EP_ID,
                                     "Interface": {"Address": "198.19.5.2/24", "MacAddress": "02:AA:BB:CC:DD:EE"}})
    assert (given.ip, given.mac) == ("198.19.5.2", "02:aa:bb:cc:dd:ee")
    # Echoing Address or MacAddress back makes Docker roll the endpoint back.
    assert p.create_endpoint_response(given, ENDPOINT) == {"Interface": {}}


def test_ids_are_validated_at_the_edge() -> None:
    for bad in ("../../etc", "", "a" * 65, "abc"):
        with pytest.raises(rq.BadBody, match="Docker id"):
            rq.decode("NetworkDriver.CreateEndpoint",
                      msgspec.json.encode({"NetworkID": NET_ID, "EndpointID": bad, "Interface": {}}))


def test_join_hands_over_the_veth_and_leaves_the_gateway_service_on_unless_internal() -> None:
    # No Gateway and no DisableGatewayService: Docker adds docker_gwbridge (egress, published ports).
    assert p.join_response(ENDPOINT, internal=False) == {
        "InterfaceName": {"SrcName": "ovc182b98111", "DstPrefix": "eth"}}
    # The network's gateway is the anycast DNS address, not a router: never a default route.
    assert "Gateway" not in p.join_response(dict(ENDPOINT, gateway="198.19.5.1"), internal=False)
    assert p.join_response(ENDPOINT, internal=True)["DisableGatewayService"] is True


def test_container_names_become_dns_names() -> None:
    # Compose: the container name has underscores (not a DNS name), the service alias is kept.
    assert model.usable_dns_names(["proj_web_1", "web", "3f2a9c1d0e4b", "Web", ""]) == ["web", "3f2a9c1d0e4b"]


def test_request_pool() -> None:
    assert pool({"AddressSpace": "overlaynet-local", "Pool": "198.19.5.0/24"}).subnet == "198.19.5.0/24"
    assert pool({"Options": {"network": "blue"}}).network == "blue"
    assert pool({"Pool": ""}) == p.PoolRequest(None, None)  # the driver picks from the default pool
    with pytest.raises(p.PluginError, match="too large"):
        pool({"Pool": "0.0.0.0/0"})
    with pytest.raises(p.PluginError, match="IPv4"):
        pool({"Pool": "fd00::/64", "V6": True})
    with pytest.raises(p.PluginError, match="ip-range"):
        pool({"Pool": "198.19.5.0/24", "SubPool": "198.19.5.0/25"})
    with pytest.raises(p.PluginError, match="network=NAME"):
        pool({"Pool": "198.19.5.0/24", "Options": {"colour": "blue"}})
    assert p.pool_response("198.19.5.0/24")["PoolID"] == "overlaynet:198.19.5.0/24"
    assert p.subnet_of_pool("overlaynet:198.19.5.0/24") == "198.19.5.0/24"
    with pytest.raises(p.PluginError):
        p.subnet_of_pool("LocalDefault/172.17.0.0/16")


def test_default_pool_hands_out_the_first_free_24() -> None:
    assert p.pick_subnet(p.DEFAULT_POOL, []) == "10.213.0.0/24"
    assert p.pick_subnet(p.DEFAULT_POOL, ["10.213.0.0/24", "10.213.1.128/25", "198.19.5.0/24"]) == "10.213.2.0/24"
    assert p.pick_subnet("198.19.7.0/24", ["198.19.7.0/25"]) is None


def test_gateway_requests() -> None:
    def address(body: dict) -> rq.RequestAddress:
        return typed(rq.RequestAddress, body)  # type: ignore[return-value]

    body = address({"PoolID": "overlaynet:198.19.5.0/24", "Address": "",
                    "Options": {"RequestAddressType": "com.docker.network.gateway"}})
    assert p.is_gateway_request(body)
    assert p.gateway_address("198.19.5.0/24", None) == "198.19.5.1/24"
    assert p.gateway_address("198.19.5.0/24", "198.19.5.254") == "198.19.5.254/24"
    with pytest.raises(p.PluginError, match="outside"):
        p.gateway_address("198.19.5.0/24", "198.19.6.1")
    assert not p.is_gateway_request(address({"PoolID": "overlaynet:198.19.5.0/24", "Address": "198.19.5.9"}))
    assert p.requested_ip(address({"PoolID": "overlaynet:198.19.5.0/24", "Address": "198.19.5.9/24"})) == "198.19.5.9"
    with pytest.raises(p.PluginError, match="invalid address"):
        p.requested_ip(address({"PoolID": "overlaynet:198.19.5.0/24", "Address": "../etc"}))


def test_capabilities_are_local_scope() -> None:
    assert p.driver_capabilities()["Scope"] == "local"
    assert set(p.activate()["Implements"]) == {"NetworkDriver", "IpamDriver"}
