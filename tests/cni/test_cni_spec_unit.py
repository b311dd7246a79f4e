"""CNI environment/config parsing and result shapes, per spec version."""

from __future__ import annotations

import json

import pytest

from overlaynet.plugins import cni
from overlaynet.plugins.cni import spec

pytestmark = pytest.mark.unit

ENDPOINT = {"id": "x" * 29 + "cni", "network": "blue", "ip": "198.19.1.5", "prefixlen": 24,
            "mac": "02:00:c6:13:01:05", "mtu": 1450, "host_ifname": "ovexxxxxxxxxxx", "gateway": None}
ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "abc", "CNI_NETNS": "/run/netns/c1", "CNI_IFNAME": "eth0",
       "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=q1;IP=198.19.1.9", "CNI_PATH": "/opt/cni/bin"}


def config(version: str = "1.0.0", **extra: object) -> str:
    return json.dumps({"cniVersion": version, "name": "blue", "type": "overlaynet-cni", **extra})


def test_env_parsing() -> None:
    inv = spec.parse_env(ENV)
    assert (inv.command, inv.container_id, inv.netns, inv.ifname) == ("ADD", "abc", "/run/netns/c1", "eth0")
    assert inv.args == {"IgnoreUnknown": "1", "K8S_POD_NAME": "q1", "IP": "198.19.1.9"}
    # DEL must work without a netns (it may be gone already).
    assert spec.parse_env({"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "abc", "CNI_IFNAME": "eth0"}).netns == ""
    with pytest.raises(spec.CniError, match="CNI_NETNS") as e:
        spec.parse_env({**ENV, "CNI_NETNS": ""})
    assert e.value.code == spec.ERR_INVALID_ENV
    with pytest.raises(spec.CniError, match="FOO"):
        spec.parse_env({"CNI_COMMAND": "FOO"})


def test_config_parsing_and_errors() -> None:
    conf = spec.parse_config(config(network="green", socket="/tmp/s.sock", subnet="198.19.1.0/24"), "ADD")
    assert (conf.name, conf.network, conf.socket, conf.subnet) == ("blue", "green", "/tmp/s.sock", "198.19.1.0/24")
    assert spec.parse_config(config(), "ADD").network == "blue"  # defaults to the config's name
    with pytest.raises(spec.CniError) as e:
        spec.parse_config("{nope", "ADD")
    assert e.value.code == spec.ERR_DECODE
    with pytest.raises(spec.CniError) as e:
        spec.parse_config(config("0.2.0"), "ADD")
    assert e.value.code == spec.ERR_INCOMPATIBLE_VERSION


@pytest.mark.parametrize("version", ["0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_result_shape_per_version(version: str) -> None:
    conf = spec.parse_config(config(version, dns={"nameservers": ["198.19.1.1"]}), "ADD")
    result = spec.build_result(conf, spec.parse_env(ENV), ENDPOINT)
    assert result["cniVersion"] == version
    ip = result["ips"][0]
    assert ip["address"] == "198.19.1.5/24" and result["interfaces"][ip["interface"]]["name"] == "eth0"
    assert result["interfaces"][1]["sandbox"] == "/run/netns/c1"
    assert result["interfaces"][1]["mac"] == "02:00:c6:13:01:05"
    assert ("version" in ip) == version.startswith("0.3.")
    assert result["dns"] == {"nameservers": ["198.19.1.1"]}
    assert "routes" not in result
    with_gw = spec.build_result(conf, spec.parse_env(ENV), dict(ENDPOINT, gateway="198.19.1.1"))
    assert with_gw["ips"][0]["gateway"] == "198.19.1.1"
    assert "routes" not in with_gw  # the gateway is the anycast DNS address, not a router
    with_egress = spec.build_result(conf, spec.parse_env(ENV), dict(ENDPOINT, gateway="198.19.1.1", egress=True))
    assert with_egress["routes"] == [{"dst": "0.0.0.0/0", "gw": "198.19.1.1"}]  # --egress: out through the host


def test_endpoint_ids_are_stable_and_recognisable() -> None:
    one = spec.endpoint_id("blue", "abc", "eth0")
    assert one == spec.endpoint_id("blue", "abc", "eth0") and len(one) == 32 and one.isalnum()
    assert one != spec.endpoint_id("blue", "abc", "eth1") != spec.endpoint_id("green", "abc", "eth0")
    assert spec.is_ours({"id": one}) and not spec.is_ours({"id": "3f2a" * 8})
    assert spec.is_ours({"id": "3f2a" * 8, "labels": {"owner": "cni"}})
    assert not spec.is_ours({"id": one, "labels": {"owner": "docker"}})


def test_static_ip_sources() -> None:
    inv = spec.parse_env(ENV)
    assert spec.requested_ip(spec.parse_config(config(), "ADD"), inv) == "198.19.1.9"
    runtime = spec.parse_config(config(runtimeConfig={"ips": ["198.19.1.7/24"]}), "ADD")
    assert spec.requested_ip(runtime, inv) == "198.19.1.7"


def test_dns_names_from_the_pod_name_and_this_networks_aliases() -> None:
    inv = spec.parse_env(ENV)  # K8S_POD_NAME=q1
    assert spec.dns_names(spec.parse_config(config(), "ADD"), inv) == ["q1"]
    conf = spec.parse_config(config(runtimeConfig={"aliases": {"blue": ["web", "Web", "not_a_name"],
                                                                "red": ["other"]}}), "ADD")
    assert spec.dns_names(conf, inv) == ["q1", "web"]
    nameless = spec.parse_env({k: v for k, v in ENV.items() if k != "CNI_ARGS"})
    assert spec.dns_names(spec.parse_config(config(runtimeConfig={"aliases": {}}), "ADD"), nameless) == []
    with pytest.raises(spec.CniError, match="aliases") as e:  # typed at the edge: junk is refused
        spec.parse_config(config(runtimeConfig={"aliases": "junk"}), "ADD")
    assert e.value.code == spec.ERR_INVALID_CONFIG


def test_valid_attachments() -> None:
    conf = spec.parse_config(config("1.1.0", **{"cni.dev/valid-attachments": [
        {"containerID": "a", "ifname": "eth0"}, {"ifname": "eth0"}]}), "GC")
    assert spec.valid_attachments(conf) == [("a", "eth0")]
    with pytest.raises(spec.CniError) as e:
        spec.parse_config(config("1.1.0", **{"cni.dev/valid-attachments": ["junk"]}), "GC")
    assert e.value.code == spec.ERR_INVALID_CONFIG


def test_run_answers_version_and_errors_as_json() -> None:
    code, out = cni.run({"CNI_COMMAND": "VERSION"}, "")
    assert code == 0 and out == spec.version_result()
    code, out = cni.run({**ENV, "CNI_COMMAND": "ADD"}, config("7.0.0"))
    assert code == 1 and out is not None and out["code"] == spec.ERR_INCOMPATIBLE_VERSION and "7.0.0" in out["msg"]
    code, out = cni.run({"CNI_COMMAND": "STATUS"}, config(socket="/nonexistent/overlayd.sock"))
    assert code == 50 and out is not None and out["code"] == 50 and out["cniVersion"] == "1.0.0"
