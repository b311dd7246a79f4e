"""The metrics address: Prometheus `/metrics` and `/healthz`, over plain HTTP on TCP.

Separate from the API socket on purpose: the API is root-only and can change the network, while
these two only read, so they can be exposed to a monitoring system (loopback by default).
`/healthz` answers 200 `ok` or 503 `degraded` followed by one reason per line, so load balancers,
Kubernetes probes and `curl -f` can use the status code alone.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from overlaynet.agent.agent import Agent
from overlaynet.agent.metrics import REGISTRY, SNAPSHOT

AGENT_KEY = web.AppKey("agent", Agent)


async def metrics(request: web.Request) -> web.Response:
    # Set and read within one step of the event loop: concurrent scrapes cannot interleave here.
    SNAPSHOT.snapshot = await request.app[AGENT_KEY].metrics_snapshot()
    body = generate_latest(REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    health = await request.app[AGENT_KEY].health()
    text = "\n".join([health.status, *health.reasons]) + "\n"
    return web.Response(text=text, status=200 if health.ok else 503)


async def serve_metrics(agent: Agent, host: str, port: int) -> web.AppRunner:
    app = web.Application()
    app[AGENT_KEY] = agent
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_address=True).start()
    except OSError:
        await runner.cleanup()
        raise
    return runner
