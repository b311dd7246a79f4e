"""Fuzzing overlayd's REST API on its real unix socket: a real overlayd (one lab host) gets
hypothesis-made bodies on every route that takes one (JSON of any shape, near-valid bodies with one
field of a wrong type, raw bytes, deep nesting) and odd path parameters. No request may get a 5xx
or a non-JSON answer, and the daemon must keep answering.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overlaynet.api.routes import ROUTES, Route
from overlaynet.lab import Host, Lab
from tests.support.engines import http_unix

pytestmark = pytest.mark.adversarial

FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
WITH_BODY = [r for r in ROUTES if r.body is not None]
# A valid body per route, to mutate one field at a time.
VALID: dict[str, dict[str, object]] = {
    "create_network": {"name": "fz", "subnet": "198.19.74.0/24"},
    "reserve_address": {"ip": "198.19.74.9"},
    "create_endpoint": {"network": "fz", "netns": "/run/netns/none"},
    "set_endpoint_names": {"names": ["a"]},
    "key_op": {"key": "AAAA"},
}


@pytest.fixture(scope="module")
def daemon(prefix: str) -> Iterator[tuple[Lab, Host]]:
    lab = Lab(prefix=f"{prefix}rf")
    try:
        host = lab.add_host("h1")
        lab.start_daemon(host, "--plaintext", "--resync-interval", "5")
        yield lab, host
    finally:
        lab.close()


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False), st.text(max_size=30)),
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=10), inner, max_size=5)),
    max_leaves=25)


def mutated(route: Route) -> st.SearchStrategy[bytes]:
    valid = VALID.get(route.name, {})
    keys = sorted(valid) + ["unknown"]
    return st.tuples(st.sampled_from(keys), json_values).map(
        lambda kv: json.dumps({**valid, kv[0]: kv[1]}).encode())


def bodies(route: Route) -> st.SearchStrategy[bytes]:
    return st.one_of(
        json_values.map(lambda v: json.dumps(v).encode()),
        mutated(route),
        st.binary(max_size=300),
        st.integers(50, 20000).map(lambda depth: b"[" * depth + b"]" * depth),
    )


requests = st.sampled_from(WITH_BODY).flatmap(
    lambda route: st.tuples(st.just(route), bodies(route),
                            st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FF), min_size=1,
                                    max_size=20)))


@FUZZ
@given(request=requests)
def test_bodies_get_a_json_answer_below_500(daemon: tuple[Lab, Host], request: tuple[Route, bytes, str]) -> None:
    _, host = daemon
    route, body, param = request
    values = {p: (route.path_values.get(p) or (param,))[0] for p in route.path_params}
    status, answer = http_unix(host.socket, route.method, route.url(**values), body, timeout=10)
    assert status < 500, (route.name, body[:200], status, answer[:300])
    if status >= 400:
        assert "error" in json.loads(answer), answer[:300]


def test_the_fuzzed_daemon_still_answers(daemon: tuple[Lab, Host]) -> None:
    lab, host = daemon
    assert host.process is not None and host.process.poll() is None
    assert lab.overlayctl_json(host, "status")["name"] == "h1"
    lab.overlayctl(host, "network", "create", "after", "--subnet", "198.19.75.0/24")
    assert any(n["name"] == "after" for n in lab.overlayctl_json(host, "network", "ls"))
