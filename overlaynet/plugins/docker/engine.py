"""The two questions the driver asks the Docker engine: the name of network <ID>, and the names of
the container behind endpoint <ID>.

CreateNetwork carries only Docker's network ID, yet overlaynet networks are named (and shared
between hosts) by name. Docker stores the network, name included, right after CreateNetwork
returns, so the driver looks the name up on the engine's API then (`GET /networks/<id>`).
Join likewise carries no container name: once the container is connected, the network lists it
with the endpoint id (`GET /networks/<id>`), and the container its aliases (`GET /containers/<id>/json`).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import aiohttp

DEFAULT_DOCKER_HOST = "unix:///run/docker.sock"


def docker_socket(host: str | None) -> str:
    host = host or os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST
    if not host.startswith("unix://"):
        raise SystemExit(f"overlaynet-docker: --docker-host {host!r} must be a unix:// socket")
    return host[len("unix://"):]


class EngineUnavailable(Exception):
    pass


class Engine:
    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path

    async def _get(self, path: str) -> tuple[int, Any]:
        connector = aiohttp.UnixConnector(path=self.socket_path)
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            async with session.get(f"http://docker{path}") as resp:
                data = await resp.json(content_type=None) if resp.status == 200 else None
                return resp.status, data

    async def endpoint_names(self, network_id: str, endpoint_id: str, deadline_s: float = 60.0) -> list[str]:
        """The container name and network aliases (Compose: the service name) of the container that
        holds endpoint_id on network_id, once Docker has connected it; [] if it never shows up."""
        until = time.monotonic() + deadline_s
        while time.monotonic() < until:
            try:
                status, net = await self._get(f"/networks/{network_id}")
                if status == 404:
                    return []
                containers = (net or {}).get("Containers") or {}
                for container_id, info in containers.items():
                    if isinstance(info, dict) and info.get("EndpointID") == endpoint_id:
                        status, container = await self._get(f"/containers/{container_id}/json")
                        if status == 200 and isinstance(container, dict):
                            return _container_names(container, endpoint_id)
            except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
                pass
            await asyncio.sleep(0.2)
        return []

    async def network_name(self, network_id: str, deadline_s: float = 15.0) -> str:
        """The Docker name of a network, waiting for Docker to finish storing it."""
        until = time.monotonic() + deadline_s
        last = "no answer"
        while True:
            try:
                connector = aiohttp.UnixConnector(path=self.socket_path)
                timeout = aiohttp.ClientTimeout(total=5)
                async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
                    async with session.get(f"http://docker/networks/{network_id}") as resp:
                        if resp.status == 200:
                            data = await resp.json(content_type=None)
                            name = data.get("Name")
                            if isinstance(name, str) and name:
                                return name
                            last = "answer without a Name"
                        else:
                            last = f"HTTP {resp.status}"
            except (TimeoutError, aiohttp.ClientError, OSError) as e:
                last = str(e) or type(e).__name__
            if time.monotonic() >= until:
                raise EngineUnavailable(
                    f"cannot learn the name of Docker network {network_id[:12]} from the engine at "
                    f"{self.socket_path} ({last}); start overlaynet-docker with --docker-host pointing at "
                    "dockerd's socket, or create the network with -o name=NAME"
                )
            await asyncio.sleep(0.1)


def _container_names(container: dict[str, Any], endpoint_id: str) -> list[str]:
    names = [str(container.get("Name") or "").lstrip("/")]
    networks = (container.get("NetworkSettings") or {}).get("Networks") or {}
    for settings in networks.values():
        if isinstance(settings, dict) and settings.get("EndpointID") == endpoint_id:
            names += [str(a) for a in settings.get("Aliases") or []]
    return [n for n in names if n]
