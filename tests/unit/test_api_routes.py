"""One route table (api/routes.py): the server, the client and the OpenAPI document agree with it."""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import subprocess
import sys
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer

from overlaynet.api.client import Routes
from overlaynet.api.openapi import openapi_document
from overlaynet.api.routes import BY_NAME, ROUTES
from overlaynet.api.server import HANDLERS, make_app

pytestmark = pytest.mark.unit


class Recorder(Routes[tuple[str, str, Any, Any]]):
    """A transport that answers with what it would have sent."""

    def _send(self, method: str, path: str, body: bytes | None, params: dict[str, str] | None) -> Any:
        return method, path, body, params


def _sample_args(fn: Any) -> dict[str, Any]:
    args: dict[str, Any] = {}
    for name, param in list(inspect.signature(fn).parameters.items())[1:]:  # after self
        if param.default is inspect.Parameter.empty:
            args[name] = ["a-name"] if name == "names" else "install" if name == "op" else f"x/{name}"
    return args


# A value of each parameter type the client's methods take, to fill in every optional one too.
SAMPLE_BY_TYPE = {"str": "x", "int": 7, "bool": True, "list[str]": ["a-name"], "dict[str, str]": {"k": "v"},
                  "dict[str, Any]": {"k": "v"}}


def _every_arg(fn: Any) -> dict[str, Any]:
    args = _sample_args(fn)
    for name, param in list(inspect.signature(fn).parameters.items())[1:]:
        if name not in args:
            args[name] = SAMPLE_BY_TYPE[str(param.annotation).removesuffix(" | None")]
    return args


def test_server_and_client_cover_every_route_by_name():
    assert set(HANDLERS) == set(BY_NAME)
    client_methods = {name for name, _ in inspect.getmembers(Routes, inspect.isfunction) if not name.startswith("_")}
    assert client_methods == set(BY_NAME)


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
def test_client_method_sends_its_route(route):
    method, path, body, _ = getattr(Recorder(), route.name)(**_sample_args(getattr(Routes, route.name)))
    assert method == route.method
    # The path matches the route's template, with every parameter quoted into one segment.
    template = "^" + re.sub(r"\\{\w+\\}", "[^/]+", re.escape(route.path)) + "$"
    assert re.match(template, path), (path, route.path)
    assert (body is not None) == (route.body is not None)


@pytest.mark.parametrize("route", [r for r in ROUTES if r.body or r.query], ids=lambda r: r.name)
@pytest.mark.parametrize("fill", [_sample_args, _every_arg], ids=["required", "every"])
def test_what_the_client_sends_decodes_into_the_routes_types(route, fill):
    """The client sends plain JSON (it does not import the Structs, for start-up time): with the
    required arguments only and with every one given, the server's types take it as it decodes it."""
    _, _, body, params = getattr(Recorder(), route.name)(**fill(getattr(Routes, route.name)))
    if route.body is not None:
        msgspec.json.decode(body, type=route.body_type)  # unknown keys and wrong types raise
    if route.query is not None:
        msgspec.convert(params or {}, route.query_type, strict=False)


def test_the_blocking_client_starts_without_msgspec_or_the_typed_modules():
    """overlayctl and the CNI plugin are one request per process: what the client imports is start-up
    time on every attach (docs/performance.md)."""
    probe = ("import sys, overlaynet.cli.main, overlaynet.api.client; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] == 'msgspec' "
             "or m in ('overlaynet.requests', 'overlaynet.api.answers', 'overlaynet.agent.config', 'aiohttp')))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"


def test_every_served_route_is_documented_with_its_parameters():
    doc = openapi_document()
    app = make_app(None)  # type: ignore[arg-type]  # routing only: no request reaches an agent
    served = [(r.method, r.resource.canonical) for r in app.router.routes() if r.resource is not None]
    assert len(served) == len(ROUTES)
    for method, path in served:
        op = doc["paths"][path][method.lower()]
        route = BY_NAME[op["operationId"]]
        params = {(p["in"], p["name"]) for p in op.get("parameters", [])}
        for name in re.findall(r"{(\w+)}", path):
            assert ("path", name) in params
        if route.query is not None:
            assert {("query", f) for f in route.query_type.__struct_fields__} <= params
        if route.body is not None:
            ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
            assert set(schema["properties"]) == set(route.body_type.__struct_fields__)
            assert schema.get("additionalProperties") is False  # unknown keys are refused
        assert str(route.ok) in op["responses"]
    # Every reference resolves.
    for ref in re.findall(r'"#/components/schemas/([^"]+)"', json.dumps(doc)):
        assert ref in doc["components"]["schemas"], ref


def _post(path: str, body: bytes) -> tuple[int, dict[str, Any]]:
    async def go() -> tuple[int, dict[str, Any]]:
        async with TestClient(TestServer(make_app(None))) as client:  # type: ignore[arg-type]
            resp = await client.post(path, data=body, headers={"Content-Type": "application/json"})
            return resp.status, await resp.json()

    return asyncio.run(go())


def test_unknown_key_is_refused_with_the_known_ones():
    status, answer = _post("/v1/networks", b'{"name": "n", "subnet": "198.19.1.0/24", "mut": 1400}')
    assert status == 400
    line = answer["error"]
    assert "\n" not in line
    assert "'mut'" in line and "mtu" in line and "subnet" in line, line


@pytest.mark.parametrize("body, words", [
    (b'{"name": "n", "subnet": "198.19.1.0/24", "vni": "12"}', ["vni", "int"]),
    (b'{"subnet": "198.19.1.0/24"}', ["name"]),
    (b'[1, 2]', ["object"]),
    (b'{"name": ', ["not valid JSON"]),
])
def test_badly_typed_bodies_are_one_line(body, words):
    status, answer = _post("/v1/networks", body)
    assert status == 400
    assert "\n" not in answer["error"]
    for word in words:
        assert word in answer["error"], answer["error"]
