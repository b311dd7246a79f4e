"""overlayd: the per-host root daemon. Wiring only: config, checks, the agent, the API, signals.

SIGTERM/SIGINT stop the daemon without tearing anything down: containers keep their networking,
and the next start adopts what exists. Every other signal that would end the process is logged and
ends it the same clean way (exit status 128 + the signal's number). SIGHUP reopens the log file
and reloads the config (reload.py); a crash in native code leaves a traceback in the log.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import logging
import os
import signal
import socket
import sys
from typing import Any

from overlaynet import __version__, logs, malloc
from overlaynet.agent import config as config_mod
from overlaynet.agent.agent import Agent
from overlaynet.agent.reload import Reloader
from overlaynet.agent.sdnotify import Notifier
from overlaynet.agent.statelock import StateDirBusy, lock_state_dir
from overlaynet.api.client import Client
from overlaynet.api.metrics_server import MetricsListener
from overlaynet.api.server import make_app, serve
from overlaynet.errors import OverlayError
from overlaynet.gossip.keyring import Keyring, KeyringError, generate_key
from overlaynet.kernel import KernelError

log = logging.getLogger("overlaynet.daemon")


class StartupError(Exception):
    """A reason not to start, said in one line."""


# Signals whose default action ends the process and that can be caught. SIGTERM and SIGINT are the
# ordinary ways to stop; the rest would otherwise end overlayd silently, mid-request.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
OTHER_FATAL_SIGNALS = (signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM, signal.SIGVTALRM,
                       signal.SIGPROF, signal.SIGXCPU, signal.SIGXFSZ, signal.SIGPWR, signal.SIGIO,
                       signal.SIGSTKFLT)


def setup_logging(level: str, log_file: str | None = None, log_format: str = "logfmt") -> None:
    """Log to `log_file` (appending) or stderr, in overlaynet's one format (overlaynet/logs.py). Called
    again on SIGHUP: that reopens the file, so a rotated log gets a fresh file at the configured path."""
    stream: Any = open(log_file, "a", encoding="utf-8", buffering=1) if log_file else sys.stderr
    root = logging.getLogger()
    old_streams = [getattr(old, "stream", None) for old in root.handlers]
    logs.setup(level, log_format, stream)
    for old_stream in old_streams:
        if old_stream not in (None, sys.stderr, stream):
            old_stream.close()  # the previous log file (a rotated one, after SIGHUP)
    # A fatal error in native code (SIGSEGV, SIGBUS, ...) leaves a Python traceback in the log.
    faulthandler.enable(file=stream)


_background: set[asyncio.Task[None]] = set()


def _spawn(coro: Any) -> None:
    """Run a coroutine from a plain callback (a reload applier), keeping a reference until it ends."""
    task = asyncio.ensure_future(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)


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
    keyring = Keyring([generate_key()], path=path)  # the agent saves it when it starts
    log.warning("event=keyring-generated path=%s msg=\"new cluster key; give other hosts this file "
                "with --key-file so they can join\"", path)
    return keyring


def reload_config(args: argparse.Namespace, reloader: Reloader) -> None:
    """SIGHUP: reopen the log, re-read the config, apply what can change; keep the rest running."""
    config = reloader.running
    setup_logging(config.log_level, config.log_file, config.log_format)  # reopen first: the outcome lands in the new file
    try:
        new = config_mod.load(args)
    except OverlayError as e:
        log.error("event=config-reload-failed config=%s error=%s kept=running-config",
                  args.config or config_mod.DEFAULT_CONFIG, logs.quote(e.message))
        return
    result = reloader.apply(new)
    log.info("event=config-reloaded config=%s changed=%s restart_needed=%s",
             args.config or config_mod.DEFAULT_CONFIG, ",".join(result.changed) or "-",
             ",".join(result.restart_needed) or "-")
    if result.restart_needed:
        log.warning("event=config-needs-restart keys=%s msg=\"these keep their running values until "
                    "overlayd restarts\"", ",".join(result.restart_needed))


async def run(config: config_mod.Config, args: argparse.Namespace) -> int:
    notifier = Notifier()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[int] = []

    def on_signal(sig: int) -> None:
        received.append(sig)
        stop.set()

    # Installed before anything else so that no signal can end a half-started daemon silently.
    for sig in STOP_SIGNALS + OTHER_FATAL_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    check_socket_free(config.socket)
    lock_fd = lock_state_dir(config.state_dir)
    agent = Agent(config, load_keyring(config), reset_identity=args.reset_identity)
    reloader = Reloader(config, appliers={
        "log_level": lambda level: logging.getLogger().setLevel(level.upper()),
        "log_file": lambda path: setup_logging(config.log_level, path, config.log_format),
        # overlayd's own lines change format at once; a running fastpathd keeps its own until restarted.
        "log_format": lambda fmt: setup_logging(config.log_level, config.log_file, fmt),
        "resync_interval": lambda _seconds: agent.resync_interval_changed(),
    })
    loop.add_signal_handler(signal.SIGHUP, reload_config, args, reloader)
    notifier.status("restoring state and joining the cluster")
    await agent.start()
    runner = await serve(make_app(agent), config.socket)
    metrics = await start_metrics(agent, config.metrics_address)
    # A reload may move the metrics address; the listener rebinds on the event loop.
    reloader.appliers["metrics_address"] = lambda address: _spawn(
        metrics.rebind(address, config_mod.parse_host_port(address) if address else None))
    # Ready means: the API answers on its socket (asked the way any client asks) and state is restored.
    await loop.run_in_executor(None, Client(config.socket, timeout=10).health)
    log.info("event=started name=%s advertise=%s dataplane=%s socket=%s metrics=%s state_dir=%s version=%s pid=%d",
             config.name, agent.advertise, config.dataplane, config.socket, config.metrics_address or "off",
             config.state_dir, __version__, os.getpid())
    malloc.release_free_memory()  # what start-up freed (imports, the state restore) goes back to the kernel
    notifier.ready(await status_line(agent))
    watchdog = asyncio.create_task(notifier.watchdog())
    status_updates = asyncio.create_task(keep_status_current(agent, notifier))

    await stop.wait()
    notifier.stopping()
    sig = signal.Signals(received[0])
    log.info("event=stopping reason=signal signal=%s teardown=none", sig.name)
    watchdog.cancel()
    status_updates.cancel()
    await metrics.close()
    await runner.cleanup()
    try:
        os.unlink(config.socket)
    except FileNotFoundError:
        pass
    await agent.close()
    os.close(lock_fd)
    log.info("event=stopped")
    return 0 if sig in STOP_SIGNALS else 128 + int(sig)


async def status_line(agent: Agent) -> str:
    """What `systemctl status overlayd` shows: health first, the reasons when degraded."""
    health = await agent.health()
    if health.ok:
        return f"ok: serving {len(agent.networks)} network(s), {len(agent.endpoints)} endpoint(s) here"
    return "degraded: " + "; ".join(health.reasons)


async def keep_status_current(agent: Agent, notifier: Notifier, every: float = 5.0) -> None:
    """Under systemd, a new STATUS= line whenever the line would change (health, counts)."""
    if not notifier.enabled:
        return
    last = ""
    while True:
        await asyncio.sleep(every)
        try:
            line = await status_line(agent)
        except Exception:  # a status line is never a reason to stop the daemon
            log.exception("event=status-line-failed")
            continue
        if line != last:
            notifier.status(line)
            last = line


async def start_metrics(agent: Agent, address: str) -> MetricsListener:
    listener = MetricsListener(agent)
    if not address:
        return listener
    parsed = config_mod.parse_host_port(address)
    assert parsed is not None, "the config loader checked the address"
    try:
        await listener.start(address, *parsed)
    except OSError as e:
        raise StartupError(f"cannot serve metrics on {address}: {e.strerror or e}; "
                           'choose another --metrics-address, or "" for none') from None
    return listener


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="overlayd", description="overlaynet host daemon")
    config_mod.add_arguments(parser)
    parser.add_argument("--version", action="version", version=f"overlayd {__version__}")
    parser.add_argument("--reset-identity", action="store_true",
                        help="start as a new node (new id, same name) when node.json is unreadable")
    args = parser.parse_args(argv)
    try:
        config = config_mod.load(args)
    except OverlayError as e:
        print(f"overlayd: {e.message}", file=sys.stderr)
        return 2
    try:
        setup_logging(config.log_level, config.log_file, config.log_format)
    except OSError as e:
        print(f"overlayd: cannot open log file {config.log_file}: {e.strerror}", file=sys.stderr)
        return 1
    if os.geteuid() != 0:
        print("overlayd: must run as root (it creates namespaces, bridges and VXLAN devices)", file=sys.stderr)
        return 1
    malloc.limit_arenas(1)  # before the first thread starts (overlaynet/malloc.py says why)
    try:
        import uvloop

        return uvloop.run(run(config, args))
    except (StartupError, StateDirBusy, OverlayError, KernelError, KeyringError) as e:
        print(f"overlayd: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
