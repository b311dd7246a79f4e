"""HashiCorp Serf on the same kind of namespaces and loss: the yardstick for our gossip.

One `serf agent` per host namespace (default LAN profile, no encryption), all joined to host 1.
Every agent runs one event handler that appends "<unix time> <event> <user event name>" to a file;
that is how we see when each host learned something, with the same clock for every host.

- propagation: `serf event -coalesce=false NAME` on host 1; time from the command's return until
  each other host's handler ran for NAME.
- failure detection: kill -9 one agent; time until each survivor's handler ran for member-failed.
Handler start (fork+exec of /bin/sh) adds a few ms to every figure; it is the same for all hosts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable

from overlaynet.lab import Lab

HANDLER = """#!/bin/sh
echo "$(date +%s.%N) $SERF_EVENT $SERF_USER_EVENT" >> "{dir}/$SERF_SELF_NAME.events"
cat >/dev/null
"""


class SerfCluster:
    def __init__(self, lab: Lab, n: int, progress: Callable[[str], None]) -> None:
        self.lab = lab
        self.dir = os.path.join(lab.workdir, "serf")
        os.makedirs(self.dir, exist_ok=True)
        self.handler = os.path.join(self.dir, "handler.sh")
        with open(self.handler, "w") as f:
            f.write(HANDLER.format(dir=self.dir))
        os.chmod(self.handler, 0o755)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.hosts = [lab.add_host(f"s{i}") for i in range(1, n + 1)]
        self.progress = progress

    def start(self, timeout: float = 60.0) -> None:
        first = self.hosts[0]
        for host in self.hosts:
            argv = ["serf", "agent", f"-node={host.label}", f"-bind={host.address}:7946",
                    "-rpc-addr=127.0.0.1:7373", f"-event-handler={self.handler}", "-log-level=warn"]
            if host is not first:
                argv.append(f"-join={first.address}:7946")
                argv.append("-retry-join=" + f"{first.address}:7946")
            log = open(os.path.join(self.dir, f"{host.label}.log"), "ab")
            self.procs[host.label] = self.lab.popen(host.netns, argv, stdout=log, stderr=subprocess.STDOUT)
            log.close()
        self.wait_members(len(self.hosts), timeout)

    def alive_members(self, host_label: str) -> int:
        host = next(h for h in self.hosts if h.label == host_label)
        out = self.lab.run(host.netns, ["serf", "members", "-rpc-addr=127.0.0.1:7373", "-status=alive"],
                           timeout=10).stdout
        return len([ln for ln in out.splitlines() if ln.strip()])

    def wait_members(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            alive = [h.label for h in self.hosts if h.label in self.procs and self.procs[h.label].poll() is None]
            if all(self.alive_members(label) >= n for label in alive):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"serf agents did not all see {n} members within {timeout:.0f}s")
            time.sleep(0.2)

    def events(self, host_label: str) -> list[tuple[float, str, str]]:
        path = os.path.join(self.dir, f"{host_label}.events")
        try:
            with open(path) as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            parts = line.split(" ", 2)
            if len(parts) >= 2:
                out.append((float(parts[0]), parts[1], parts[2] if len(parts) > 2 else ""))
        return out

    def _first(self, host_label: str, event: str, name: str = "") -> float | None:
        for ts, ev, nm in self.events(host_label):
            if ev == event and (not name or nm == name):
                return ts
        return None

    def propagate(self, name: str, timeout: float) -> dict[str, float | None]:
        """Seconds from the event's acceptance on host 1 until each other live host ran its handler."""
        origin = self.hosts[0]
        result = self.lab.run(origin.netns, ["serf", "event", "-rpc-addr=127.0.0.1:7373", "-coalesce=false",
                                             name, "x"], timeout=10)
        t0 = time.time()
        if result.returncode != 0:
            raise RuntimeError(f"serf event failed: {result.stderr.strip() or result.stdout.strip()}")
        targets = [h.label for h in self.hosts[1:] if self.procs[h.label].poll() is None]
        return self._wait_all(targets, "user", name, t0, timeout)

    def kill(self, host_label: str, timeout: float) -> dict[str, float | None]:
        """kill -9 one agent; seconds until each survivor declared it failed (None: never, in time)."""
        proc = self.procs[host_label]
        t0 = time.time()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        survivors = [h.label for h in self.hosts if self.procs[h.label].poll() is None]
        return self._wait_all(survivors, "member-failed", "", t0, timeout, after=t0)

    def _wait_all(self, labels: list[str], event: str, name: str, t0: float, timeout: float,
                  after: float = 0.0) -> dict[str, float | None]:
        seen: dict[str, float | None] = {label: None for label in labels}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(v is None for v in seen.values()):
            time.sleep(0.02)
            for label in labels:
                if seen[label] is None:
                    for ts, ev, nm in self.events(label):
                        if ev == event and (not name or nm == name) and ts >= after:
                            seen[label] = ts - t0
                            break
        return seen

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
