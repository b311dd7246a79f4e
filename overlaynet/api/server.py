"""The REST API on overlayd's unix socket (mode 0600: root only). JSON in, JSON out.

Each route of api/routes.py has a handler of the same name here. The route says what to decode
(typed body and query: overlaynet/requests.py) and the success status; handlers are thin: call the
agent, shape the answer. Errors become
`{"error": "<one line>"}` with the status the error carries.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec
from aiohttp import web

from overlaynet import requests as rq
from overlaynet.agent.agent import Agent
from overlaynet.agent.metrics import API_REQUESTS
from overlaynet.api.openapi import openapi_document
from overlaynet.api.routes import BY_NAME, KEY_OPS, ROUTES, Route
from overlaynet.errors import BadRequest, Forbidden, OverlayError

log = logging.getLogger("overlaynet.api")
B = TypeVar("B", bound=rq.Request)

AGENT_KEY = web.AppKey("agent", Agent)


def error_response(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def errors_as_json(request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    try:
        response = await handler(request)
        log.debug("event=api-request method=%s path=%s status=%d", request.method, request.path, response.status)
        return response
    except OverlayError as e:
        return error_response(e.status, e.message)
    except web.HTTPException as e:
        return error_response(e.status, e.reason or "error")
    except Exception as e:  # a bug: keep serving, log the traceback, tell the client plainly
        log.exception("event=api-internal-error path=%s", request.path)
        return error_response(500, f"internal error in overlayd ({type(e).__name__}: {e}); see its log")


def _decode_error(where: str, kind: type[rq.Request], error: msgspec.ValidationError) -> BadRequest:
    """One line naming what was wrong; for an unknown key, also the keys that are known."""
    text = str(error)
    unknown = re.search(r"unknown field `([^`]*)`", text)
    if unknown:
        known = ", ".join(kind.__struct_fields__)
        return BadRequest(f"unknown key {unknown.group(1)!r} in the {where}; known keys: {known}")
    return BadRequest(f"invalid {where}: {text}")


async def decode_body(request: web.Request, kind: type[B]) -> B:
    raw = await request.read() if request.can_read_body else b""
    try:
        return msgspec.json.decode(raw or b"{}", type=kind)
    except msgspec.ValidationError as e:
        raise _decode_error("request body", kind, e) from None
    except msgspec.DecodeError:
        raise BadRequest("request body is not valid JSON") from None


def decode_query(request: web.Request, kind: type[B]) -> B:
    try:
        return msgspec.convert(dict(request.query), kind, strict=False)
    except msgspec.ValidationError as e:
        raise _decode_error("query string", kind, e) from None


BodyT = TypeVar("BodyT")
QueryT = TypeVar("QueryT")


@dataclass
class Call(Generic[BodyT, QueryT]):
    """One request, decoded: its path parameters, typed body and typed query. A handler's annotation
    names the types its route decodes (a unit test checks they agree), so mypy checks what the
    handler hands the agent."""
    agent: Agent
    path: dict[str, str]
    body: BodyT
    query: QueryT


Plain = Call[None, None]  # a route without body or query
Handler = Callable[[Call[Any, Any]], Awaitable[Any]]  # returns the answer's JSON value (None: no body)
HANDLERS: dict[str, Handler] = {}


def handles(fn: Handler) -> Handler:
    """Register a handler for the route of the same name (api/routes.py)."""
    assert fn.__name__ in BY_NAME, f"no route named {fn.__name__} in api/routes.py"
    HANDLERS[fn.__name__] = fn
    return fn


@handles
async def openapi(call: Plain) -> Any:
    return openapi_document()


@handles
async def status(call: Plain) -> Any:
    return await call.agent.status()


@handles
async def health(call: Plain) -> Any:
    return (await call.agent.health()).to_dict()


@handles
async def stats(call: Plain) -> Any:
    return await call.agent.dataplane_stats()


@handles
async def list_networks(call: Plain) -> Any:
    agent = call.agent
    return [agent.network_view(n) for n in sorted(agent.networks.values(), key=lambda n: n.name)]


@handles
async def create_network(call: Call[rq.NetworkCreate, None]) -> Any:
    return call.agent.network_view(await call.agent.create_network(call.body))


@handles
async def get_network(call: Plain) -> Any:
    return call.agent.network_view(call.agent.get_network(call.path["name"]))


@handles
async def delete_network(call: Call[None, rq.NetworkDeleteQuery]) -> Any:
    await call.agent.delete_network(call.path["name"], force=call.query.force)


@handles
async def network_keys(call: Plain) -> Any:
    return call.agent.network_keys(call.path["name"])


@handles
async def rotate_key(call: Plain) -> Any:
    return call.agent.network_view(await call.agent.rotate_key(call.path["name"]))


@handles
async def network_fdb(call: Plain) -> Any:
    return await call.agent.programmed(call.path["name"])


@handles
async def reserve_address(call: Call[rq.AddressReserve, None]) -> Any:
    ip, prefixlen = await call.agent.reserve_address(call.path["name"], call.body.ip)
    return {"ip": ip, "prefixlen": prefixlen}


@handles
async def release_address(call: Plain) -> Any:
    await call.agent.release_address(call.path["name"], call.path["ip"])


@handles
async def list_endpoints(call: Call[None, rq.EndpointListQuery]) -> Any:
    agent, network = call.agent, call.query.network
    if network is not None:
        agent.get_network(network)  # 404 for an unknown network rather than an empty list
    if call.query.all:
        everywhere = [e for e in agent.cluster.endpoints().values() if network is None or e.network == network]
        everywhere.sort(key=lambda e: (e.network, e.host, e.ip))
        return [e.to_record() for e in everywhere]
    eps = [e for e in agent.endpoints.values() if network is None or e.network == network]
    eps.sort(key=lambda e: (e.network, e.created_at))
    return [agent.endpoint_view(e) for e in eps]


@handles
async def create_endpoint(call: Call[rq.EndpointCreate, None]) -> Any:
    return call.agent.endpoint_view(await call.agent.create_endpoint(call.body))


@handles
async def detach(call: Call[None, rq.DetachQuery]) -> Any:
    ep = await call.agent.delete_endpoint_by_netns(call.query.network, call.query.netns)
    return call.agent.endpoint_view(ep)


@handles
async def get_endpoint(call: Call[None, rq.EndpointGetQuery]) -> Any:
    agent = call.agent
    ep = agent.get_endpoint(call.path["id"])
    view = agent.endpoint_view(ep)
    if call.query.check:
        view["present"] = await agent.endpoint_present(ep)
    return view


@handles
async def set_endpoint_names(call: Call[rq.EndpointUpdate, None]) -> Any:
    agent = call.agent
    return agent.endpoint_view(await agent.set_endpoint_names(call.path["id"], call.body.names))


@handles
async def delete_endpoint(call: Plain) -> Any:
    await call.agent.delete_endpoint(call.path["id"])


@handles
async def members(call: Plain) -> Any:
    return [
        {"name": m.name, "addr": m.addr, "port": m.port, "state": m.state, "incarnation": m.incarnation,
         "last_change": m.last_change, "vtep": m.meta.get("vtep"), "dataplane": m.meta.get("dataplane")}
        for m in sorted(call.agent.cluster.members(), key=lambda m: m.name)
    ]


@handles
async def keys(call: Plain) -> Any:
    return call.agent.keys()


@handles
async def key_op(call: Call[rq.KeyChange, None]) -> Any:
    op = call.path["op"]
    if op not in KEY_OPS:
        raise BadRequest(f"unknown key operation {op!r}: {', '.join(KEY_OPS)}")
    return await call.agent.key_op(op, call.body.key)


@handles
async def doctor(call: Plain) -> Any:
    return await call.agent.doctor()


@handles
async def reconcile(call: Plain) -> Any:
    return await call.agent.reconcile()


def _endpoint(route: Route, handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The aiohttp handler of a route: decode what the route declares, call, encode the answer."""
    body_type, query_type = route.body_type, route.query_type

    async def serve_route(request: web.Request) -> web.StreamResponse:
        if route.root_only and _peer_uid(request) != 0:
            # The socket is 0600 already; this holds even if someone loosens its mode or group.
            raise Forbidden(f"{route.path} shows secret key material: only root may ask for it")
        body = await decode_body(request, body_type) if body_type is not None else None
        query = decode_query(request, query_type) if query_type is not None else None
        answer = await handler(Call(request.app[AGENT_KEY], dict(request.match_info), body, query))
        if route.answer is None:
            return web.Response(status=route.ok)
        return web.json_response(answer, status=route.ok)

    return serve_route


def _peer_uid(request: web.Request) -> int | None:
    """The uid of the process at the other end of the unix socket (None: not a unix socket)."""
    sock = request.transport.get_extra_info("socket") if request.transport is not None else None
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                           struct.calcsize("3i")))
    return int(uid)


@web.middleware
async def count_requests(request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """overlaynet_api_requests_total{route, method, code} (errors included: errors_as_json runs inside)."""
    response = await handler(request)
    route = request.match_info.route.name or "unknown"
    API_REQUESTS.labels(route, request.method, str(response.status)).inc()
    return response


def make_app(agent: Agent) -> web.Application:
    missing = [r.name for r in ROUTES if r.name not in HANDLERS]
    assert not missing, f"routes without a handler: {missing}"
    app = web.Application(middlewares=[count_requests, errors_as_json])
    app[AGENT_KEY] = agent
    for route in ROUTES:
        app.router.add_route(route.method, route.path, _endpoint(route, HANDLERS[route.name]), name=route.name)
    return app


async def serve(app: web.Application, socket_path: str) -> web.AppRunner:
    """Serve on a unix socket that only root can open."""
    os.makedirs(os.path.dirname(socket_path) or ".", mode=0o755, exist_ok=True)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    old_umask = os.umask(0o177)  # the socket is born 0600: no window where others can connect
    try:
        site = web.UnixSite(runner, socket_path)
        await site.start()
    finally:
        os.umask(old_umask)
    os.chmod(socket_path, 0o600)
    return runner
