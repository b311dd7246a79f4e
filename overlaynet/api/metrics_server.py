"""The metrics address: Prometheus `/metrics` and `/healthz`, over plain HTTP on TCP.

Separate from the API socket on purpose: the API is root-only and can change the network, while
these two only read, so they can be exposed to a monitoring system (loopback by default).
`/healthz` answers 200 `ok` or 503 `degraded` followed by one reason per line, so load balancers,
Kubernetes probes and `curl -f` can use the status code alone.
"""

from __future__ import annotations

import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from overlaynet.agent.agent import Agent
from overlaynet.agent.config import parse_host_port
from overlaynet.agent.metrics import REGISTRY, SNAPSHOT

AGENT_KEY = web.AppKey("agent", Agent)
log = logging.getLogger("overlaynet.metrics")


async def metrics(request: web.Request) -> web.Response:
    # Set and read within one step of the event loop: concurrent scrapes cannot interleave here.
    SNAPSHOT.snapshot = await request.app[AGENT_KEY].metrics_snapshot()
    body = generate_latest(REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    health = await request.app[AGENT_KEY].health()
    text = "\n".join([health.status, *health.reasons]) + "\n"
    return web.Response(text=text, status=200 if health.ok else 503)


class MetricsListener:
    """The metrics address's HTTP listener; SIGHUP may move it (`rebind`) without a restart."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.address = ""
        self.runner: web.AppRunner | None = None

    async def start(self, address: str, host: str, port: int) -> None:
        """Listen on host:port (OSError if it cannot); `address` is how the config spells it."""
        app = web.Application()
        app[AGENT_KEY] = self.agent
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/healthz", healthz)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port, reuse_address=True).start()
        except OSError:
            await runner.cleanup()
            raise
        self.runner, self.address = runner, address

    async def rebind(self, address: str, parsed: tuple[str, int] | None) -> None:
        """Move to a new address: the old listener is closed first (the new one may be the same
        port on another address), and if the new one cannot listen, the old one comes back."""
        old = self.address
        await self.close()
        if parsed is None:
            log.info("event=metrics-stopped previous=%s", old or "-")
            return
        try:
            await self.start(address, *parsed)
            log.info("event=metrics-moved address=%s previous=%s", address, old or "-")
        except OSError as e:
            log.error("event=metrics-rebind-failed address=%s error=%s kept=%s", address, e.strerror or e, old or "-")
            old_parsed = parse_host_port(old) if old else None
            if old_parsed is not None:
                await self.start(old, *old_parsed)

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        self.runner, self.address = None, ""
