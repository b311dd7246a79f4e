"""The REST API on overlayd's unix socket (mode 0600: root only). JSON in, JSON out.

Handlers are thin: parse, call the agent, shape the answer. Errors become
`{"error": "<one line>"}` with the status the error carries.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from overlaynet.agent.agent import Agent
from overlaynet.api.openapi import openapi_document
from overlaynet.errors import BadRequest, OverlayError

log = logging.getLogger("overlaynet.api")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

AGENT_KEY = web.AppKey("agent", Agent)


def error_response(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except OverlayError as e:
        return error_response(e.status, e.message)
    except web.HTTPException as e:
        return error_response(e.status, e.reason or "error")
    except Exception as e:  # a bug: keep serving, log the traceback, tell the client plainly
        log.exception("event=api-internal-error path=%s", request.path)
        return error_response(500, f"internal error in overlayd ({type(e).__name__}: {e}); see its log")


async def json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadRequest("request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    return data


def agent_of(request: web.Request) -> Agent:
    return request.app[AGENT_KEY]


async def get_status(request: web.Request) -> web.Response:
    return web.json_response(await agent_of(request).status())


async def get_stats(request: web.Request) -> web.Response:
    return web.json_response(await agent_of(request).dataplane_stats())


async def list_networks(request: web.Request) -> web.Response:
    agent = agent_of(request)
    return web.json_response([agent.network_view(n) for n in sorted(agent.networks.values(), key=lambda n: n.name)])


async def create_network(request: web.Request) -> web.Response:
    agent = agent_of(request)
    net = await agent.create_network(await json_body(request))
    return web.json_response(agent.network_view(net), status=201)


async def get_network(request: web.Request) -> web.Response:
    agent = agent_of(request)
    return web.json_response(agent.network_view(agent.get_network(request.match_info["name"])))


def flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("1", "true", "yes")


async def delete_network(request: web.Request) -> web.Response:
    await agent_of(request).delete_network(request.match_info["name"], force=flag(request, "force"))
    return web.Response(status=204)


async def list_endpoints(request: web.Request) -> web.Response:
    agent = agent_of(request)
    network = request.query.get("network")
    if network is not None:
        agent.get_network(network)  # 404 for an unknown network rather than an empty list
    if flag(request, "all"):
        everywhere = [e for e in agent.cluster.endpoints().values() if network is None or e.get("network") == network]
        everywhere.sort(key=lambda e: (e.get("network", ""), e.get("host", ""), e.get("ip", "")))
        return web.json_response(everywhere)
    eps = [e for e in agent.endpoints.values() if network is None or e.network == network]
    eps.sort(key=lambda e: (e.network, e.created_at))
    return web.json_response([agent.endpoint_view(e) for e in eps])


async def create_endpoint(request: web.Request) -> web.Response:
    agent = agent_of(request)
    ep = await agent.create_endpoint(await json_body(request))
    return web.json_response(agent.endpoint_view(ep), status=201)


async def get_endpoint(request: web.Request) -> web.Response:
    agent = agent_of(request)
    ep = agent.get_endpoint(request.match_info["id"])
    view = agent.endpoint_view(ep)
    if flag(request, "check"):
        view["present"] = await agent.endpoint_present(ep)
    return web.json_response(view)


async def update_endpoint(request: web.Request) -> web.Response:
    agent = agent_of(request)
    ep = await agent.update_endpoint(request.match_info["id"], await json_body(request))
    return web.json_response(agent.endpoint_view(ep))


async def delete_endpoint(request: web.Request) -> web.Response:
    await agent_of(request).delete_endpoint(request.match_info["id"])
    return web.Response(status=204)


async def delete_endpoint_by_netns(request: web.Request) -> web.Response:
    network, netns = request.query.get("network"), request.query.get("netns")
    if not network or not netns:
        raise BadRequest("give both ?network=NAME and ?netns=NETNS to detach by namespace")
    agent = agent_of(request)
    ep = await agent.delete_endpoint_by_netns(network, netns)
    return web.json_response(agent.endpoint_view(ep))


async def reserve_address(request: web.Request) -> web.Response:
    body = await json_body(request)
    ip, prefixlen = await agent_of(request).reserve_address(request.match_info["name"], body.get("ip"))
    return web.json_response({"ip": ip, "prefixlen": prefixlen}, status=201)


async def release_address(request: web.Request) -> web.Response:
    await agent_of(request).release_address(request.match_info["name"], request.match_info["ip"])
    return web.Response(status=204)


async def list_members(request: web.Request) -> web.Response:
    agent = agent_of(request)
    members = sorted(agent.cluster.members(), key=lambda m: m.name)
    return web.json_response([
        {"name": m.name, "addr": m.addr, "port": m.port, "state": m.state, "incarnation": m.incarnation,
         "last_change": m.last_change, "vtep": m.meta.get("vtep"), "dataplane": m.meta.get("dataplane")}
        for m in members
    ])


async def network_fdb(request: web.Request) -> web.Response:
    return web.json_response(await agent_of(request).programmed(request.match_info["name"]))


async def list_keys(request: web.Request) -> web.Response:
    return web.json_response(agent_of(request).keys())


async def key_op(request: web.Request) -> web.Response:
    body = await json_body(request)
    op = request.match_info["op"]
    if op not in ("install", "use", "remove"):
        raise BadRequest(f"unknown key operation {op!r}: install, use or remove")
    return web.json_response(await agent_of(request).key_op(op, body.get("key")))


async def reconcile(request: web.Request) -> web.Response:
    return web.json_response(await agent_of(request).reconcile())


async def get_openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


def make_app(agent: Agent) -> web.Application:
    app = web.Application(middlewares=[errors_as_json])
    app[AGENT_KEY] = agent
    app.router.add_get("/openapi.json", get_openapi)
    app.router.add_get("/v1/status", get_status)
    app.router.add_get("/v1/networks", list_networks)
    app.router.add_post("/v1/networks", create_network)
    app.router.add_get("/v1/networks/{name}", get_network)
    app.router.add_delete("/v1/networks/{name}", delete_network)
    app.router.add_post("/v1/networks/{name}/addresses", reserve_address)
    app.router.add_delete("/v1/networks/{name}/addresses/{ip}", release_address)
    app.router.add_get("/v1/endpoints", list_endpoints)
    app.router.add_post("/v1/endpoints", create_endpoint)
    app.router.add_delete("/v1/endpoints", delete_endpoint_by_netns)
    app.router.add_get("/v1/endpoints/{id}", get_endpoint)
    app.router.add_patch("/v1/endpoints/{id}", update_endpoint)
    app.router.add_delete("/v1/endpoints/{id}", delete_endpoint)
    app.router.add_get("/v1/networks/{name}/fdb", network_fdb)
    app.router.add_get("/v1/members", list_members)
    app.router.add_get("/v1/stats", get_stats)
    app.router.add_get("/v1/keys", list_keys)
    app.router.add_post("/v1/keys/{op}", key_op)
    app.router.add_post("/v1/reconcile", reconcile)
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
