"""How overlayd drives fastpathd: a small blocking client and a start helper.

overlayd calls it from its kernel executor thread, like every other kernel-side call; there is no
asyncio twin to keep in step.

    from overlaynet.dataplane.control import FastpathClient, start_fastpathd
    proc = start_fastpathd("/run/overlaynet/fastpath.sock", bind="198.18.0.1")
    with FastpathClient("/run/overlaynet/fastpath.sock") as fp:
        fp.sync_peers(["198.18.0.2"])
        fp.add_network(4097, "/run/netns/ovs-4097", "ovt4097", 1450)
        fp.sync_flood(4097, ["198.18.0.2"])

Every sync_* call replaces the whole table (level-triggered): after a controller restart, simply
sync everything again. `networks()` tells what fastpathd currently programs.
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from overlaynet.dataplane import protocol


class FastpathControlError(Exception):
    """fastpathd refused a request (the message says what was wrong) or cannot be reached."""


class FastpathClient:
    """Blocking client; one request in flight at a time. Reconnects once if fastpathd restarted."""

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self.path = path
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._unpacker = protocol.unpacker()
        self._ids = itertools.count(1)

    def __enter__(self) -> FastpathClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _connect(self) -> socket.socket:
        if self._sock is None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(self.timeout)
            try:
                s.connect(self.path)
            except OSError as e:
                s.close()
                raise FastpathControlError(f"fastpathd at {self.path} not reachable: {e.strerror or e}") from None
            self._sock = s
            self._unpacker = protocol.unpacker()
        return self._sock

    def call(self, op: str, **args: Any) -> Any:
        for attempt in (0, 1):
            req_id = next(self._ids)
            try:
                s = self._connect()
                s.sendall(protocol.request(req_id, op, args))
                while True:
                    for msg in self._unpacker:
                        if msg.get("id") == req_id:
                            if msg.get("ok"):
                                return msg.get("result")
                            raise FastpathControlError(msg.get("error", "request failed"))
                    data = s.recv(1 << 16)
                    if not data:
                        raise ConnectionResetError("fastpathd closed the connection")
                    self._unpacker.feed(data)
            except (ConnectionError, BrokenPipeError, TimeoutError) as e:
                self.close()
                if attempt:
                    raise FastpathControlError(f"fastpathd at {self.path}: {e}") from None
        raise AssertionError("unreachable")

    # ---- the API
    def ping(self) -> dict[str, Any]:
        return self.call("ping")

    def add_network(self, vni: int, netns: str, tap: str, mtu: int, encrypted: bool = False) -> dict[str, Any]:
        """An encrypted network sends and accepts only ESP; until sync_sas it sends nothing."""
        return self.call("add_network", vni=vni, netns=netns, tap=tap, mtu=mtu, encrypted=encrypted)

    def remove_network(self, vni: int) -> bool:
        return self.call("remove_network", vni=vni)

    def sync_fdb(self, vni: int, fdb: Mapping[str, str]) -> int:
        return self.call("sync_fdb", vni=vni, fdb=dict(fdb))

    def sync_flood(self, vni: int, vteps: Iterable[str]) -> int:
        return self.call("sync_flood", vni=vni, vteps=list(vteps))

    def sync_arp(self, vni: int, arp: Mapping[str, str]) -> int:
        return self.call("sync_arp", vni=vni, arp=dict(arp))

    def sync_peers(self, vteps: Iterable[str], bum_rate: int = 0) -> int:
        return self.call("sync_peers", vteps=list(vteps), bum_rate=bum_rate)

    def sync_sas(self, vni: int, sas: Iterable[Mapping[str, Any]]) -> int:
        """Replace the SAs of encrypted network `vni`: [{peer, dir: "out"|"in", epoch, spi, key (16 bytes),
        salt (4 bytes)}]. SAs that stay keep their sequence numbers. Returns how many are installed."""
        return self.call("sync_sas", vni=vni, sas=[dict(sa) for sa in sas])

    def stats(self) -> dict[str, Any]:
        return self.call("stats")

    def offloads(self) -> dict[str, Any]:
        return self.call("offloads")

    def networks(self) -> dict[str, Any]:
        return self.call("networks")


def fastpathd_command(control: str, bind: str = "0.0.0.0", port: int = 4789, state: str | None = None,
                      netns: str | None = None, extra: Sequence[str] = (), python: str | None = None) -> list[str]:
    """The command line that runs fastpathd (for a supervisor unit or subprocess)."""
    cmd = [python or sys.executable, "-m", "overlaynet.dataplane.fastpathd", "--control", control,
           "--bind", bind, "--port", str(port)]
    if state:
        cmd += ["--state", state]
    if netns:
        cmd += ["--netns", netns]
    return cmd + list(extra)


def start_fastpathd(control: str, bind: str = "0.0.0.0", port: int = 4789, state: str | None = None,
                    netns: str | None = None, extra: Sequence[str] = (), timeout: float = 15.0,
                    log: Any = None) -> subprocess.Popen[bytes]:
    """Start fastpathd in its own session (it outlives its starter) and wait until it answers.

    `log` is a file object for fastpathd's stderr (default: an anonymous temporary file, so that
    fastpathd never blocks or fails on a pipe whose reader died). Raises FastpathControlError with
    fastpathd's own last line if it exits or does not answer in time.
    """
    logf = log if log is not None else tempfile.TemporaryFile()
    proc = subprocess.Popen(fastpathd_command(control, bind, port, state, netns, extra),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=logf,
                            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def last_line() -> str:
        try:
            logf.seek(0)
            lines = logf.read().decode(errors="replace").strip().splitlines()
            return lines[-1] if lines else ""
        except (OSError, AttributeError):
            return ""

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise FastpathControlError(last_line() or f"fastpathd exited with {proc.returncode}")
        if os.path.exists(control):
            try:
                with FastpathClient(control, timeout=2.0) as c:
                    c.ping()
                return proc
            except FastpathControlError:
                pass
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise FastpathControlError(f"fastpathd did not answer on {control} within {timeout:.0f}s: {last_line()}")
