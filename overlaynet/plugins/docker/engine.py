"""The one question the driver asks the Docker engine: what is the name of network <ID>?

CreateNetwork carries only Docker's network ID, yet overlaynet networks are named (and shared
between hosts) by name. Docker stores the network, name included, right after CreateNetwork
returns, so the driver looks the name up on the engine's API then (`GET /networks/<id>`).
"""

from __future__ import annotations

import asyncio
import os
import time

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
