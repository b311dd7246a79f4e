"""systemd's readiness protocol (sd_notify(3)): datagrams such as `READY=1` to $NOTIFY_SOCKET.

A few lines rather than the `sdnotify` package: the protocol is one datagram per message to a unix
socket (abstract when the name starts with "@"), the package is unmaintained since 2017 and has
no watchdog support, and without $NOTIFY_SOCKET (not under systemd) everything here does nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

log = logging.getLogger("overlaynet.sdnotify")


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + path[1:] if path.startswith("@") else path
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        # The watchdog is ours only if systemd meant this process (WATCHDOG_PID unset or ours).
        wanted = usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid()))
        self.watchdog_interval = int(usec) / 2e6 if wanted else None  # ping twice per period

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, *lines: str) -> None:
        if not self.address:
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            try:
                sock.sendto("\n".join(lines).encode(), self.address)
            except OSError as e:  # systemd gone or socket wrong: never a reason to stop the daemon
                log.warning("event=sd-notify-failed error=%s", e)

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def ready(self, text: str) -> None:
        self.send("READY=1", f"STATUS={text}", f"MAINPID={os.getpid()}")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping (containers keep their networking)")

    async def watchdog(self) -> None:
        """Ping the watchdog from the event loop: if the loop hangs, the pings stop and systemd acts."""
        if self.watchdog_interval is None:
            return
        while True:
            self.send("WATCHDOG=1")
            await asyncio.sleep(self.watchdog_interval)
