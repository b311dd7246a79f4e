"""Control-plane cases on N real hosts (namespaces on one underlay bridge), overlaynet and Serf side by
side, at several loss rates (nftables on every host's eth0, after the cluster has converged).

overlaynet (N overlayd, all --join host 1, one network, a "pinger" container on host 1):
- attach-to-reachable: wall time from starting `overlayctl attach` for a new container on host k
  until a ping from host 1's container answers (ping every 10 ms; the pinger's ARP retry is 10 ms);
- propagation: from the attach's return (overlayd publishes the endpoint before it answers) until
  each other host's kernel FDB for the network holds the new MAC (seen as the netlink event of the
  entry's creation in the host's sandbox namespace, benchmarks/fdbwatch.py: no load on the daemons);
- failure detection: kill -9 one overlayd; until each survivor logged it dead (`event=member-dead`,
  read from the log files, as Serf's handler files are: polling 63 APIs every 20 ms loaded the
  daemons that were detecting).
Serf: see benchmarks/serf.py (user event with coalescing off; member-failed).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from benchmarks.core import NotAvailable, Progress, Results, percentile
from benchmarks.fdbwatch import FdbWatch
from benchmarks.loss import set_loss
from benchmarks.serf import SerfCluster
from benchmarks.topology import close_lab
from overlaynet.lab import Host, Lab

# What is polled: a client method (api/routes.py's name for the route) and its arguments.
MEMBERS: tuple[str, tuple[str, ...]] = ("members", ())
NETWORK = "bctl"
SUBNET = "198.19.64.0/18"
POLL = 0.02


# ---- overlaynet observation through the API ------------------------------------------------------------


def _entries(data: Any) -> list[dict[str, Any]]:
    if isinstance(data, dict):
        for key in ("members", "entries", "fdb", "items"):
            if isinstance(data.get(key), list):
                return data[key]
        return [dict(v, name=k) if isinstance(v, dict) else {"name": k, "state": v} for k, v in data.items()]
    return [e for e in data if isinstance(e, dict)] if isinstance(data, list) else []


def member_states(data: Any) -> dict[str, str]:
    out = {}
    for e in _entries(data):
        name = e.get("name") or e.get("node")
        state = e.get("state") or e.get("status")
        if name:
            out[str(name)] = str(state).lower()
    return out


async def _get(socket: str, call: tuple[str, tuple[str, ...]]) -> Any:
    from overlaynet.api.client import AsyncClient

    name, args = call
    return await getattr(AsyncClient(socket, timeout=5), name)(*args)


def poll_hosts(hosts: list[Host], call: tuple[str, tuple[str, ...]], done: Callable[[Any], bool], t0: float,
               timeout: float, every: float = POLL) -> dict[str, float | None]:
    """Poll the API `call` on every host concurrently until done(answer); wall seconds after t0 (time.time()).
    Each poll is a request the daemon must answer: 64 hosts every 20 ms is a load of its own."""

    async def main() -> dict[str, float | None]:
        seen: dict[str, float | None] = {h.label: None for h in hosts}
        deadline = time.monotonic() + timeout

        async def one(h: Host) -> None:
            while time.monotonic() < deadline:
                try:
                    data = await _get(h.socket, call)
                    if done(data):
                        seen[h.label] = time.time() - t0
                        return
                except Exception:
                    pass
                await asyncio.sleep(every)

        await asyncio.gather(*(one(h) for h in hosts))
        return seen

    return asyncio.run(main())


def logged_at(log: str, event: str, field: str, after: float = 0.0) -> float | None:
    """Wall time of the first overlayd log line (logfmt, local time, ms) with `event` and `field`
    written at or after `after`."""
    for line in log.splitlines():
        if event in line and field in line.lower() and line.startswith("ts="):
            try:
                at = datetime.datetime.strptime(line.split()[0][3:], "%Y-%m-%dT%H:%M:%S.%f").timestamp()
            except ValueError:
                continue
            if at >= after - 0.001:
                return at
    return None


def handled_in(log: str, mac: str) -> float | None:
    """Seconds overlayd took from receiving the attach of `mac` until its answer was ready (the
    `took_ms` of its `event=attached` line)."""
    for line in log.splitlines():
        if "event=attached" in line and f"mac={mac}" in line.lower():
            for word in line.split():
                if word.startswith("took_ms="):
                    return float(word[len("took_ms="):]) / 1000
    return None


class OverlaynetCluster:
    def __init__(self, lab: Lab, n: int, progress: Callable[[str], None]) -> None:
        self.lab, self.progress = lab, progress
        self.hosts = [lab.add_host(f"o{i}") for i in range(1, n + 1)]
        self.containers = 0
        self.watch: FdbWatch | None = None

    def start(self, timeout: float = 120.0) -> None:
        first = self.hosts[0]
        common = ["--dataplane", "kernel", "--plaintext"]
        self.lab.start_daemon(first, *common, timeout=60)
        for h in self.hosts[1:]:
            self.lab.start_daemon(h, *common, "--join", first.address, wait=False)
        for h in self.hosts[1:]:
            self.lab.wait_ready(h, timeout=60)
        try:
            asyncio.run(_get(first.socket, MEMBERS))
        except Exception as e:
            raise NotAvailable(f"overlayd answers the members route with: {e}") from None
        names = {h.label for h in self.hosts}
        seen = poll_hosts(self.hosts, MEMBERS,
                          lambda d: {k for k, v in member_states(d).items() if v == "alive"} >= names,
                          time.time(), timeout, every=0.5)
        if any(v is None for v in seen.values()):
            missing = [k for k, v in seen.items() if v is None]
            raise NotAvailable(f"{len(missing)} of {len(self.hosts)} overlayd never saw all members alive "
                               f"within {timeout:.0f}s")
        self.lab.overlayctl(first, "network", "create", NETWORK, "--subnet", SUBNET)
        # One resident container per host, so that every host has the network active and must program
        # each new endpoint (hosts without a local endpoint program nothing). Host 1's also pings.
        residents = [self.lab.add_container(f"r{i}") for i in range(1, len(self.hosts) + 1)]
        asyncio.run(self._attach_residents(residents, timeout))
        self.pinger = residents[0]
        self.lab.run(self.pinger, ["sysctl", "-qw", "net.ipv4.neigh.eth0.retrans_time_ms=10"])
        from overlaynet.kernel import list_sandboxes

        self.watch = FdbWatch({h.label: list_sandboxes(h.state_dir)[0] for h in self.hosts})

    def stop(self) -> None:
        """Close the FDB watch (its sockets hold the sandbox namespaces); the lab removes the rest."""
        if self.watch is not None:
            self.watch.close()
            self.watch = None

    async def _attach_residents(self, residents: list[str], timeout: float) -> None:
        from overlaynet.api.client import AsyncClient

        async def attach(host: Host, netns: str) -> None:
            deadline = time.monotonic() + timeout
            while True:  # refused until the network has reached this host by gossip
                try:
                    await AsyncClient(host.socket).create_endpoint(NETWORK, netns=f"/run/netns/{netns}")
                    return
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)

        await asyncio.gather(*(attach(h, r) for h, r in zip(self.hosts, residents, strict=True)))

    def attach(self, host: Host, timeout: float) -> tuple[float, float | None, dict[str, float | None], float | None]:
        """(seconds the attach command took as a whole process, seconds overlayd took to handle it (its
        log line's took_ms; None if not logged), per-host propagation, attach-to-reachable or None)."""
        self.containers += 1
        ctr = self.lab.add_container(f"x{self.containers}")
        deadline = time.monotonic() + 30
        while True:  # the network reaches the other hosts by gossip; attaching before that is refused
            started = time.time()
            result = self.lab.overlayctl(host, "attach", ctr, "--network", NETWORK, "--json", check=False)
            if result.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if result.returncode != 0:
            raise RuntimeError(f"overlayctl attach on {host.label}: {result.stderr.strip()}")
        ep = json.loads(result.stdout)
        returned = time.time()
        reached: list[float | None] = [None]

        def watch() -> None:
            # ping -c 1 -w T sends every 10 ms until one answer, but gives up at the first neighbour
            # failure (no ARP answer within the pinger's 30 ms of retries, e.g. while the flooded
            # request waits for a busy remote host): start it again until an answer or T.
            while time.time() - started < timeout:
                left = max(1, int(timeout - (time.time() - started)))
                pinger = self.lab.popen(self.pinger, ["ping", "-n", "-q", "-c", "1", "-i", "0.01", "-w", str(left),
                                                      ep["ip"]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                if pinger.wait() == 0:
                    reached[0] = time.time() - started
                    return

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        others = [h for h in self.hosts if h is not host and h.process is not None]
        mac = ep["mac"].lower()
        # From the moment overlayd published the endpoint (its `event=attached` log line, written right
        # after the record went into gossip; the command's return if the line is not found): the
        # other hosts may program it before the CLI process has even exited.
        log = self.lab.daemon_log(host)
        published = logged_at(log, "event=attached", f"mac={mac}") or returned
        assert self.watch is not None
        prop = self.watch.wait(mac, [h.label for h in others], published, timeout)
        watcher.join(timeout + 5)
        return returned - started, handled_in(log, mac), prop, reached[0]

    def kill(self, host: Host, timeout: float) -> dict[str, float | None]:
        """kill -9 one overlayd; seconds until each survivor logged it dead (its `event=member-dead`
        line, ms resolution), read from the log files: no request to the daemons while they detect."""
        t0 = time.time()
        self.lab.stop_daemon(host, signal.SIGKILL)
        survivors = [h for h in self.hosts if h.process is not None]
        seen: dict[str, float | None] = {h.label: None for h in survivors}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(v is None for v in seen.values()):
            time.sleep(0.05)
            for h in survivors:
                if seen[h.label] is None:
                    at = logged_at(self.lab.daemon_log(h), "event=member-dead", f"name={host.label} ", t0)
                    seen[h.label] = None if at is None else at - t0
        return seen


# ---- the runner -------------------------------------------------------------------------------------


def _record(results: Results, case: str, system: str, what: str, samples: list[float | None],
            per_trial_max: list[float | None]) -> None:
    got = [s for s in samples if s is not None]
    missed = len(samples) - len(got)
    if not got:
        results.mark("control", case, system, f"{what} p50", "s", "failed",
                     f"no host saw it within the deadline ({missed} misses)", "lower")
        return
    results.add("control", case, system, f"{what} p50", "s", percentile(got, 50), "lower")
    results.add("control", case, system, f"{what} p99", "s", percentile(got, 99), "lower")
    results.add("control", case, system, f"{what} max", "s", max(got), "lower", missed=missed,
                samples=len(samples))
    done = [m for m in per_trial_max if m is not None]
    if done:
        results.add("control", case, system, f"{what} all-hosts", "s", max(done), "lower")


def _store(results: Results, system: str, what: str, n: int, loss: int, values: list[float | None]) -> None:
    store = results.samples.setdefault("control", {}).setdefault(system, {}).setdefault(what, {})
    store.setdefault(str(loss), {}).setdefault(str(n), []).extend(v for v in values if v is not None)


NEIGH_THRESH = "/proc/sys/net/ipv4/neigh/default/gc_thresh{}"


@contextlib.contextmanager
def neighbour_room(n: int) -> Iterator[None]:
    """Room in the kernel's ARP table for a full mesh of n hosts, for the duration of a cluster.

    The table is one for the whole machine (every namespace counts against gc_thresh3, default
    1024): at N=64 the underlay's 64 x 63 entries overflowed it ("neighbor table overflow", sendmsg
    ENOBUFS), so that hosts never joined and every other namespace on the machine lost ARP too.
    The old limits are put back afterwards."""
    need = {2: 2 * n * n, 3: 4 * n * n}
    old = {}
    for k in need:
        with open(NEIGH_THRESH.format(k)) as f:
            old[k] = int(f.read())
    raised = {k: v for k, v in need.items() if v > old[k]}
    try:
        for k in (3, 2):  # thresh3 first: thresh2 may not exceed it
            if k in raised:
                with open(NEIGH_THRESH.format(k), "w") as f:
                    f.write(str(raised[k]))
        yield
    finally:
        for k in (2, 3):
            if k in raised:
                with open(NEIGH_THRESH.format(k), "w") as f:
                    f.write(str(old[k]))


def start_timeout(n: int) -> float:
    """Seconds a cluster of n gets to converge: at N=64 on 2 busy cores joining alone takes minutes."""
    return max(120.0, 4.0 * n)


def cluster_cost(n: int, events: int, kills: int) -> float:
    """Rough seconds one cluster case takes (start N hosts, the updates, the kills), for the ETA."""
    return 5 + 0.5 * n + 1.5 * events + 8 * kills


def plan(progress: Progress, systems: list[str], sizes: list[int], losses: list[int], events: int,
         kills: int) -> None:
    for n in sizes:
        progress.plan(len(systems) * len(losses), cluster_cost(n, events, kills))


def run(results: Results, progress: Progress, prefix: str, systems: list[str], sizes: list[int],
        losses: list[int], events: int, kills: int, register: Callable[[Any], None],
        event_timeout: float = 30.0) -> None:
    for system in systems:
        unavailable: str | None = None  # once a cluster says "not available", the others would too
        for n in sizes:
            for li, loss in enumerate(losses):
                case = f"N={n} loss={loss}%"
                if unavailable:
                    for what in ("propagation", "detection"):
                        results.mark("control", case, system, f"{what} p50", "s", "not available", unavailable,
                                     "lower")
                    progress.step_done(cluster_cost(n, events, kills))
                    continue
                room = neighbour_room(n)  # until the lab is gone: its namespaces hold the entries
                room.__enter__()
                lab = Lab(f"{prefix}{system[0]}{n}{li}")
                register(lab)
                try:
                    _one_cluster(results, progress, lab, system, n, loss, case, events, kills, event_timeout)
                except NotAvailable as e:
                    unavailable = str(e)
                    progress(f"control {system} {case}: not available: {e}")
                    for what in ("propagation", "detection"):
                        results.mark("control", case, system, f"{what} p50", "s", "not available", str(e), "lower")
                except Exception as e:
                    progress(f"control {system} {case}: failed: {type(e).__name__}: {e}")
                    for what in ("propagation", "detection"):
                        results.mark("control", case, system, f"{what} p50", "s", "failed",
                                     f"{type(e).__name__}: {e}", "lower")
                finally:
                    close_lab(lab)
                    room.__exit__(None, None, None)
                    progress.step_done(cluster_cost(n, events, kills))


def _one_cluster(results: Results, progress: Callable[[str], None], lab: Lab, system: str, n: int, loss: int,
                 case: str, events: int, kills: int, event_timeout: float) -> None:
    step = f"control {system} {case}"
    t = time.monotonic()
    cluster: SerfCluster | OverlaynetCluster
    if system == "serf":
        cluster = SerfCluster(lab, n, progress)
    else:
        cluster = OverlaynetCluster(lab, n, progress)
    try:
        cluster.start(timeout=start_timeout(n))
        progress(f"{step}: {n} hosts converged in {time.monotonic() - t:.1f}s; loss {loss}% on")
        set_loss(lab, loss)
        prop_all: list[float | None] = []
        prop_max: list[float | None] = []
        reach_all: list[float | None] = []
        command_all: list[float | None] = []
        handled_all: list[float | None] = []
        for i in range(events):
            if isinstance(cluster, SerfCluster):
                seen = cluster.propagate(f"b{i}", timeout=event_timeout)
                extra = ""
            else:
                host = cluster.hosts[1 + i % (n - 1)]
                took, handled, seen, reach = cluster.attach(host, timeout=event_timeout)
                reach_all.append(reach)
                command_all.append(took)
                handled_all.append(handled)
                extra = f"; attach {took * 1000:.0f} ms, reachable after " + (
                    f"{reach * 1000:.0f} ms" if reach is not None else f"never ({event_timeout:.0f} s)")
            values = list(seen.values())
            prop_all += values
            prop_max.append(None if None in values else max(v for v in values if v is not None))
            got = [v for v in values if v is not None]
            progress(f"{step} update {i + 1}/{events}: all {len(got)}/{len(values)} hosts in "
                     f"{max(got) * 1000 if got else float('nan'):.0f} ms{extra}")
        _record(results, case, system, "propagation", prop_all, prop_max)
        _store(results, system, "propagation", n, loss, prop_all)
        if reach_all:
            _record(results, case, system, "attach-to-reachable", reach_all, [])
            # Its parts: `overlayctl attach` as a whole process, and overlayd's handling inside it.
            _record(results, case, system, "attach command", command_all, [])
            if any(h is not None for h in handled_all):
                _record(results, case, system, "attach in overlayd", handled_all, [])
        det_all: list[float | None] = []
        det_max: list[float | None] = []
        for k in range(kills):
            victim = cluster.hosts[-1 - k]
            seen = cluster.kill(victim.label, timeout=60) if isinstance(cluster, SerfCluster) \
                else cluster.kill(victim, timeout=60)
            values = list(seen.values())
            det_all += values
            det_max.append(None if None in values else max(v for v in values if v is not None))
            got = [v for v in values if v is not None]
            progress(f"{step} kill -9 {k + 1}/{kills}: detected by {len(got)}/{len(values)}, first "
                     f"{min(got) if got else float('nan'):.2f} s, last {max(got) if got else float('nan'):.2f} s")
        if kills:  # with --kills 0 there is nothing to detect: no row rather than a "failed" one
            _record(results, case, system, "detection", det_all, det_max)
            _store(results, system, "detection", n, loss, det_all)
    finally:
        cluster.stop()
