"""Hostile bodies against the real overlaynet-docker server (beside a real overlayd): whatever comes
in, the answer is one `{"Err": "..."}` line a user understands — never a 500 traceback, never an id
that names a path, never a pool of the whole Internet — and the plugin keeps serving."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overlaynet.lab import Lab, wait_until
from tests.support.engines import http_unix

pytestmark = [pytest.mark.adversarial, pytest.mark.timeout(300)]

NET_ID = "a3dfce" + "0" * 58
EP_ID = "182b98" + "1" * 58
METHODS = [
    "NetworkDriver.CreateNetwork", "NetworkDriver.DeleteNetwork", "NetworkDriver.CreateEndpoint",
    "NetworkDriver.Join", "NetworkDriver.Leave", "NetworkDriver.DeleteEndpoint", "NetworkDriver.EndpointOperInfo",
    "NetworkDriver.ProgramExternalConnectivity", "NetworkDriver.RevokeExternalConnectivity",
    "NetworkDriver.AllocateNetwork", "NetworkDriver.FreeNetwork", "IpamDriver.RequestPool",
    "IpamDriver.ReleasePool", "IpamDriver.RequestAddress", "IpamDriver.ReleaseAddress",
]


@dataclass
class Plugin:
    socket: str
    state_dir: str
    log_path: str
    process: subprocess.Popen[bytes]

    def post(self, method: str, body: bytes) -> tuple[int, Any]:
        return http_unix(self.socket, "POST", f"/{method}", body, timeout=20)

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()


@pytest.fixture(scope="module")
def plugin(prefix: str) -> Iterator[Plugin]:
    lab = Lab(f"{prefix}j")
    process = None
    try:
        host = lab.add_host("a")
        lab.start_daemon(host, "--plaintext")
        workdir = os.path.join(lab.workdir, "plugin")
        os.makedirs(workdir)
        sock, log_path = os.path.join(workdir, "overlaynet.sock"), os.path.join(workdir, "plugin.log")
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "overlaynet.plugins.docker", "--socket", sock, "--api-socket", host.socket,
                 "--docker-host", f"unix://{workdir}/no-docker.sock", "--state-dir", os.path.join(workdir, "state"),
                 "--log-level", "debug"], stdout=log, stderr=subprocess.STDOUT)
        wait_until(lambda: os.path.exists(sock), 20, what="the plugin socket")
        yield Plugin(sock, os.path.join(workdir, "state"), log_path, process)
    finally:
        try:
            if process is not None:
                process.terminate()
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        finally:
            lab.close()  # even if the plugin would not stop: never leave overlayd behind


def assert_refused_in_one_line(status: int, payload: bytes, *words: str) -> str:
    """A refusal Docker can show: JSON {"Err": one line}, no traceback, no internal error."""
    assert status != 200, payload
    answer = json.loads(payload)  # never aiohttp's plain-text 500
    assert isinstance(answer, dict) and isinstance(answer.get("Err"), str), answer
    message = answer["Err"]
    assert "\n" not in message and "Traceback" not in message and "internal error" not in message, message
    assert "AttributeError" not in message and "TypeError" not in message, message
    for word in words:
        assert word in message, message
    return message


def still_serving(plugin: Plugin) -> None:
    status, payload = plugin.post("Plugin.Activate", b"")
    assert status == 200 and json.loads(payload) == {"Implements": ["NetworkDriver", "IpamDriver"]}
    assert plugin.process.poll() is None
    assert "Traceback" not in plugin.log()


@pytest.mark.parametrize("method, body, words", [
    ("NetworkDriver.CreateNetwork", {"NetworkID": 5}, ["Expected `str`", "NetworkID"]),
    ("NetworkDriver.CreateNetwork", {"NetworkID": NET_ID, "IPv4Data": {"Pool": "198.19.5.0/24"}}, ["IPv4Data"]),
    ("NetworkDriver.CreateNetwork", {"NetworkID": NET_ID, "IPv4Data": [{"Pool": 7}]}, ["Pool"]),
    ("NetworkDriver.CreateNetwork", {"NetworkID": NET_ID, "IPv4Data": [{"Pool": "198.19.5.0/24"}],
                                     "Options": {"com.docker.network.generic": ["mtu"]}}, ["generic"]),
    ("NetworkDriver.CreateEndpoint", {"NetworkID": NET_ID, "EndpointID": EP_ID, "Interface": "eth0"}, ["Interface"]),
    ("NetworkDriver.CreateEndpoint", {"NetworkID": NET_ID, "EndpointID": EP_ID,
                                      "Interface": {"Address": ["198.19.5.2"]}}, ["Address"]),
    ("NetworkDriver.Join", {"NetworkID": NET_ID, "EndpointID": None}, ["EndpointID"]),
    ("IpamDriver.RequestPool", {"Pool": {"cidr": "198.19.5.0/24"}}, ["Pool"]),
    ("IpamDriver.RequestPool", {"Options": {"network": 1}}, ["Options"]),
    ("IpamDriver.RequestAddress", {"PoolID": 1}, ["PoolID"]),
    ("IpamDriver.RequestAddress", {"PoolID": "overlaynet:198.19.5.0/24", "Address": "../../etc"}, ["address"]),
    ("IpamDriver.ReleaseAddress", {"PoolID": "LocalDefault/x"}, ["overlaynet IPAM"]),
    ("NetworkDriver.DeleteNetwork", [NET_ID], ["object"]),
    ("NetworkDriver.DeleteNetwork", None, ["object"]),
])
def test_wrong_json_types_are_refused_in_one_line(plugin: Plugin, method: str, body: Any, words: list[str]) -> None:
    status, payload = plugin.post(method, json.dumps(body).encode())
    assert_refused_in_one_line(status, payload, *words)
    still_serving(plugin)


@pytest.mark.parametrize("depth", [64, 100_000])
def test_deeply_nested_json_is_refused_in_one_line(plugin: Plugin, depth: int) -> None:
    nested = b'{"NetworkID":"' + NET_ID.encode() + b'","Options":' + b"[" * depth + b"]" * depth + b"}"
    status, payload = plugin.post("NetworkDriver.CreateNetwork", nested)
    assert_refused_in_one_line(status, payload)
    still_serving(plugin)


@pytest.mark.parametrize("method, path", [("GET", "/Plugin.Activate"), ("PUT", "/NetworkDriver.Join"),
                                          ("POST", "/a/b/../../etc"), ("DELETE", "/")])
def test_other_requests_are_refused_in_one_line(plugin: Plugin, method: str, path: str) -> None:
    status, payload = http_unix(plugin.socket, method, path, b"{}", timeout=20)
    assert_refused_in_one_line(status, payload, "POST /<Interface>.<Method>")
    still_serving(plugin)


def test_an_oversized_body_is_refused_in_one_line(plugin: Plugin) -> None:
    huge = b'{"NetworkID":"' + NET_ID.encode() + b'","Pad":"' + b"x" * (2 << 20) + b'"}'
    status, payload = plugin.post("NetworkDriver.CreateNetwork", huge)
    assert_refused_in_one_line(status, payload, "larger than")
    still_serving(plugin)


@pytest.mark.parametrize("bad_id", ["../../../etc", "..", "a/b" * 8, "0" * 65, "x" * 11, "ab\u00e9" * 8])
def test_ids_that_are_no_docker_ids_are_refused_and_never_stored(plugin: Plugin, bad_id: str) -> None:
    body = {"NetworkID": bad_id, "IPv4Data": [{"Pool": "198.19.77.0/24", "Gateway": "198.19.77.1/24"}]}
    status, payload = plugin.post("NetworkDriver.CreateNetwork", json.dumps(body).encode())
    assert_refused_in_one_line(status, payload, "Docker id")
    status, payload = plugin.post("NetworkDriver.DeleteEndpoint", json.dumps(
        {"NetworkID": NET_ID, "EndpointID": bad_id}).encode())
    assert_refused_in_one_line(status, payload, "Docker id")
    state = os.path.join(plugin.state_dir, "networks.json")
    if os.path.exists(state):
        with open(state) as f:
            assert bad_id not in f.read()
    still_serving(plugin)


@pytest.mark.parametrize("pool", ["0.0.0.0/0", "0.0.0.0/1", "127.0.0.0/24", "224.0.0.0/24", "198.19.5.0/31",
                                  "198.19.5.1/24", "fd00::/64", "not-a-cidr"])
def test_absurd_pools_are_refused(plugin: Plugin, pool: str) -> None:
    status, payload = plugin.post("IpamDriver.RequestPool", json.dumps({"Pool": pool}).encode())
    assert_refused_in_one_line(status, payload, pool if pool != "198.19.5.1/24" else "198.19.5.1/24")
    body = {"NetworkID": NET_ID, "IPv4Data": [{"Pool": pool}]}
    status, payload = plugin.post("NetworkDriver.CreateNetwork", json.dumps(body).encode())
    assert_refused_in_one_line(status, payload)
    still_serving(plugin)


def test_a_good_request_still_works(plugin: Plugin) -> None:
    """The refusals above are not a server that refuses everything."""
    status, payload = plugin.post("IpamDriver.RequestPool", json.dumps({"Pool": "198.19.78.0/24"}).encode())
    assert status == 200 and json.loads(payload)["Pool"] == "198.19.78.0/24", payload


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
KEYS = ["NetworkID", "EndpointID", "Options", "IPv4Data", "IPv6Data", "Interface", "Pool", "PoolID", "Address",
        "SubPool", "V6", "Gateway", "MacAddress", "com.docker.network.generic", "com.docker.network.portmap"]
SHAPED = st.dictionaries(st.sampled_from(KEYS), JSON | st.sampled_from([NET_ID, EP_ID, "198.19.5.0/24", "../etc"]),
                         max_size=5)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(method=st.sampled_from(METHODS), body=JSON | SHAPED)
def test_fuzzed_bodies_get_json_answers_never_a_crash(plugin: Plugin, method: str, body: Any) -> None:
    status, payload = plugin.post(method, json.dumps(body).encode())
    answer = json.loads(payload)
    assert isinstance(answer, dict), payload
    if status != 200:
        assert_refused_in_one_line(status, payload)
    assert plugin.process.poll() is None


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(METHODS), raw=st.binary(max_size=200))
def test_fuzzed_bytes_get_json_answers(plugin: Plugin, method: str, raw: bytes) -> None:
    status, payload = plugin.post(method, raw)
    answer = json.loads(payload)
    assert isinstance(answer, dict)
    if status != 200:
        assert_refused_in_one_line(status, payload)


def test_no_traceback_after_the_attacks(plugin: Plugin) -> None:
    still_serving(plugin)
