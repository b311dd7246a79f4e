"""`overlaynet-docker`: serves the Docker remote network + IPAM driver on a unix socket.

Docker finds the plugin by its socket, `/run/docker/plugins/overlaynet.sock`, and from then on uses
the driver name `overlaynet` (`docker network create -d overlaynet --ipam-driver overlaynet ...`).
The socket is removed on SIGTERM/SIGINT: a stale one makes Docker retry for ~15 s on every call.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import stat
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from overlaynet import __version__, logs
from overlaynet.api.client import AsyncClient, default_socket
from overlaynet.plugins.docker import protocol as p
from overlaynet.plugins.docker import requests as rq
from overlaynet.plugins.docker.driver import Driver
from overlaynet.plugins.docker.engine import Engine, docker_socket
from overlaynet.plugins.docker.state import DriverState

log = logging.getLogger("overlaynet.docker")
DEFAULT_PLUGIN_SOCKET = "/run/docker/plugins/overlaynet.sock"
DEFAULT_STATE_DIR = "/var/lib/overlaynet/docker"

Handler = Callable[[Any], Awaitable[dict[str, Any]]]


def routes(driver: Driver) -> dict[str, Handler]:
    def const(value: dict[str, Any]) -> Handler:
        async def handler(_body: Any) -> dict[str, Any]:
            return value

        return handler

    empty = const({})
    return {
        "Plugin.Activate": const(p.activate()),
        "NetworkDriver.GetCapabilities": const(p.driver_capabilities()),
        "NetworkDriver.CreateNetwork": driver.create_network,
        "NetworkDriver.DeleteNetwork": driver.delete_network,
        "NetworkDriver.AllocateNetwork": empty,
        "NetworkDriver.FreeNetwork": empty,
        "NetworkDriver.CreateEndpoint": driver.create_endpoint,
        "NetworkDriver.DeleteEndpoint": driver.delete_endpoint,
        "NetworkDriver.EndpointOperInfo": driver.endpoint_oper_info,
        "NetworkDriver.Join": driver.join,
        "NetworkDriver.Leave": driver.leave,
        "NetworkDriver.DiscoverNew": empty,
        "NetworkDriver.DiscoverDelete": empty,
        "NetworkDriver.ProgramExternalConnectivity": empty,
        "NetworkDriver.RevokeExternalConnectivity": empty,
        "IpamDriver.GetCapabilities": const(p.ipam_capabilities()),
        "IpamDriver.GetDefaultAddressSpaces": const(p.default_address_spaces()),
        "IpamDriver.RequestPool": driver.request_pool,
        "IpamDriver.ReleasePool": driver.release_pool,
        "IpamDriver.RequestAddress": driver.request_address,
        "IpamDriver.ReleaseAddress": driver.release_address,
    }


def make_app(driver: Driver) -> web.Application:
    table = routes(driver)

    async def dispatch(request: web.Request) -> web.Response:
        method = request.match_info["method"]
        handler = table.get(method)
        if handler is None:
            return _reply(p.error(f"overlaynet-docker does not implement {method}"), 404)
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _reply(p.error(f"{method}: request body larger than {rq.MAX_BODY} bytes; Docker never "
                                  "sends that"), 413)
        try:
            body = rq.decode(method, raw)  # the typed request, or one line saying what is wrong
        except rq.BadBody as e:
            log.warning("event=call-refused method=%s error=%s", method, e)
            return _reply(p.error(str(e)), 400)
        log.debug("event=call method=%s body=%s", method, raw[:4096].decode(errors="replace"))
        try:
            answer = await handler(body)
        except p.PluginError as e:
            log.warning("event=call-failed method=%s error=%s", method, e)
            return _reply(p.error(str(e)), 500)
        except Exception as e:  # a bug: keep serving, tell Docker, log the traceback
            log.exception("event=call-crashed method=%s", method)
            return _reply(p.error(f"overlaynet-docker internal error in {method}: {e}; see its log"), 500)
        log.info("event=call method=%s", method)
        return _reply(answer, 200)

    app = web.Application(client_max_size=rq.MAX_BODY)
    async def refuse(request: web.Request) -> web.Response:
        # Anything but `POST /<Method>` is no plugin call: still one JSON line, never aiohttp's text page.
        return _reply(p.error(f"{request.method} {request.path[:100]}: Docker's plugin protocol is "
                              "POST /<Interface>.<Method>"), 405 if request.path.count("/") == 1 else 404)

    app.router.add_post("/{method}", dispatch)
    app.router.add_route("*", "/{path:.*}", refuse)
    return app


def _reply(body: dict[str, Any], status: int) -> web.Response:
    return web.Response(status=status, body=msgspec.json.encode(body), content_type=p.CONTENT_TYPE)


def prepare_socket(path: str) -> None:
    """Refuse to steal a live plugin's socket; remove a stale one (a crashed predecessor's)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise SystemExit(f"overlaynet-docker: {path} exists and is not a socket; remove it or pick --socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)
        return
    finally:
        probe.close()
    raise SystemExit(f"overlaynet-docker: another plugin is already serving {path}; stop it first")


async def serve(args: argparse.Namespace) -> int:
    state = DriverState(os.path.join(args.state_dir, "networks.json"))
    state.load()
    driver = Driver(AsyncClient(args.api_socket), Engine(docker_socket(args.docker_host)), state,
                    default_pool=args.default_pool)
    prepare_socket(args.socket)
    runner = web.AppRunner(make_app(driver), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.UnixSite(runner, args.socket)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await site.start()
        os.chmod(args.socket, 0o660)
        log.info("event=serving socket=%s api=%s state=%s", args.socket, driver.api.socket_path, state.path)
        await stop.wait()
        log.info("event=stopping reason=signal")
    finally:
        try:
            os.unlink(args.socket)
        except FileNotFoundError:
            pass
        await driver.close()
        await runner.cleanup()
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="overlaynet-docker", description="Docker network + IPAM driver for overlaynet"
    )
    parser.add_argument("--socket", default=DEFAULT_PLUGIN_SOCKET,
                        help=f"plugin socket Docker discovers (default {DEFAULT_PLUGIN_SOCKET})")
    parser.add_argument("--api-socket", default=None,
                        help="overlayd's API socket (default $OVERLAYNET_SOCKET or /run/overlaynet/overlayd.sock)")
    parser.add_argument("--docker-host", default=None,
                        help="dockerd's API socket, to learn network names (default $DOCKER_HOST or "
                             "unix:///run/docker.sock)")
    parser.add_argument("--state-dir", default=DEFAULT_STATE_DIR,
                        help=f"where the Docker-network mapping is kept (default {DEFAULT_STATE_DIR})")
    parser.add_argument("--default-pool", default=p.DEFAULT_POOL,
                        help=f"where networks without --subnet get a free /{p.DEFAULT_POOL_PREFIXLEN} "
                             f"(default {p.DEFAULT_POOL}; use the same on every host)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    logs.add_argument(parser)
    parser.add_argument("--version", action="version", version=f"overlaynet-docker {__version__}")
    args = parser.parse_args(argv)
    args.api_socket = args.api_socket or default_socket()
    try:
        args.default_pool = p.check_pool(args.default_pool)
    except p.PluginError as e:
        parser.error(f"--default-pool: {e}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logs.setup(args.log_level, args.log_format)
    try:
        return asyncio.run(serve(args))
    except KeyboardInterrupt:
        return 130
    except OSError as e:
        print(f"overlaynet-docker: cannot serve on {args.socket}: {e.strerror or e}", file=sys.stderr)
        return 1
