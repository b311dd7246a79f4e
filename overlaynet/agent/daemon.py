"""overlayd: the per-host root daemon. Wiring only: config, checks, the agent, the API, signals.

SIGTERM/SIGINT stop the daemon without tearing anything down: containers keep their networking,
and the next start adopts what exists.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys

from overlaynet import __version__
from overlaynet.agent import config as config_mod
from overlaynet.agent.agent import Agent
from overlaynet.api.server import make_app, serve
from overlaynet.errors import OverlayError
from overlaynet.gossip.keyring import Keyring, KeyringError, generate_key
from overlaynet.kernel import KernelError

log = logging.getLogger("overlaynet.daemon")


class StartupError(Exception):
    """A reason not to start, said in one line."""


class KeyValueFormatter(logging.Formatter):
    """Structured lines: `ts=… level=… logger=… event=… key=value …`."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if not message.startswith("event="):
            message = "msg=" + _quote(message)
        line = f"ts={self.formatTime(record, '%Y-%m-%dT%H:%M:%S')} level={record.levelname.lower()} " \
               f"logger={record.name} {message}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _quote(text: str) -> str:
    return '"' + text.replace('"', '\\"') + '"' if " " in text or '"' in text else text


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("pyroute2").setLevel(logging.WARNING)


def check_socket_free(path: str) -> None:
    """Refuse when a live daemon holds the socket; remove a stale one left by a crash."""
    if not os.path.exists(path):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        os.unlink(path)  # stale: its daemon died without cleaning up
        return
    except OSError as e:
        raise StartupError(f"cannot check socket {path}: {e}") from None
    finally:
        probe.close()
    raise StartupError(
        f"another overlayd is already running on {path}; stop it first or give this one its own --socket"
    )


def load_keyring(config: config_mod.Config) -> Keyring | None:
    """The gossip keyring. Without --key-file, one is kept in the state dir (made on first start)."""
    if config.plaintext:
        log.warning("event=gossip-plaintext msg=\"gossip is NOT encrypted or authenticated: anyone who can "
                    "reach the gossip port can read and change this cluster's state\"")
        return None
    if config.key_file:
        if not os.path.exists(config.key_file):
            raise StartupError(f"key file {config.key_file} does not exist; create one with "
                               f"`overlayctl keys generate > {config.key_file}` and copy it to every host")
        return Keyring.load(config.key_file)
    path = os.path.join(config.state_dir, "gossip.key")
    if os.path.exists(path):
        return Keyring.load(path)
    keyring = Keyring([generate_key()], path=path)
    os.makedirs(config.state_dir, mode=0o700, exist_ok=True)
    keyring.save()
    log.warning("event=keyring-generated path=%s msg=\"new cluster key; give other hosts this file "
                "with --key-file so they can join\"", path)
    return keyring


async def run(config: config_mod.Config) -> int:
    check_socket_free(config.socket)
    agent = Agent(config, load_keyring(config))
    await agent.start()
    runner = await serve(make_app(agent), config.socket)
    log.info("event=started name=%s advertise=%s dataplane=%s socket=%s state_dir=%s version=%s",
             config.name, agent.advertise, config.dataplane, config.socket, config.state_dir, __version__)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    await stop.wait()
    log.info("event=stopping reason=signal teardown=none")
    await runner.cleanup()
    try:
        os.unlink(config.socket)
    except FileNotFoundError:
        pass
    await agent.close()
    log.info("event=stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="overlayd", description="overlaynet host daemon")
    config_mod.add_arguments(parser)
    parser.add_argument("--version", action="version", version=f"overlayd {__version__}")
    args = parser.parse_args(argv)
    try:
        config = config_mod.load(args)
    except OverlayError as e:
        print(f"overlayd: {e.message}", file=sys.stderr)
        return 2
    setup_logging(config.log_level)
    if os.geteuid() != 0:
        print("overlayd: must run as root (it creates namespaces, bridges and VXLAN devices)", file=sys.stderr)
        return 1
    try:
        import uvloop

        return uvloop.run(run(config))
    except (StartupError, OverlayError, KernelError, KeyringError) as e:
        print(f"overlayd: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
