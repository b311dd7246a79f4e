"""Throwaway multi-host topologies on one machine, for the demo, the tests and the benchmarks.

NOT part of overlaynet's runtime: no daemon, client or plugin imports it (tests/unit checks that).
It ships in the package so that `make demo`, the test suite and the benchmarks can use it.

A lab is an "underlay" namespace holding a bridge, "host" namespaces wired to it by veth pairs
(addresses from 198.18.0.0/16, the benchmarking range), an overlayd per host (its own state dir and
socket), and "container" namespaces. Every object is named with the lab's prefix, and `close()`
removes all of it — daemons, sandbox mounts, namespaces, files — even after failures.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyroute2 import IPRoute
from pyroute2 import netns as pyroute2_netns

from overlaynet import kernel
from overlaynet.agent.userspace_mode import UserspaceMode

UNDERLAY_PREFIX = "198.18.0"
UNDERLAY_BRIDGE = "ul0"


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05,
               what: str = "condition") -> Any:
    """Poll until predicate() is truthy and return that value; TimeoutError naming `what` if never."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def stop_process(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
    """Ask a child process to stop with `sig`, kill it if it has not within `timeout`; its exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def enter_netns(name: str) -> Callable[[], None]:
    """A preexec_fn that moves the child into the named network namespace."""
    path = name if name.startswith("/") else f"/run/netns/{name}"

    def _enter() -> None:
        pyroute2_netns.setns(path, flags=0)

    return _enter


@dataclass
class TransferResult:
    nbytes: int
    sent_sha256: str
    received_sha256: str
    received_bytes: int
    seconds: float

    @property
    def intact(self) -> bool:
        return self.received_bytes == self.nbytes and self.sent_sha256 == self.received_sha256

    @property
    def mbit_per_s(self) -> float:
        return self.nbytes * 8 / 1e6 / self.seconds if self.seconds else 0.0


# Tiny TCP endpoints run inside namespaces: the sink prints "<sha256> <bytes>", the source "<sha256>".
_TCP_SINK = """
import hashlib, socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1); s.settimeout(60)
c, _ = s.accept(); h = hashlib.sha256(); n = 0
while True:
    b = c.recv(1 << 16)
    if not b: break
    h.update(b); n += len(b)
print(h.hexdigest(), n)
"""
_TCP_SOURCE = """
import hashlib, os, socket, sys, time
h = hashlib.sha256(); left = int(sys.argv[3]); deadline = time.time() + 20
while True:
    try:
        s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2); break
    except OSError:
        if time.time() > deadline: raise
        time.sleep(0.05)
while left:
    b = os.urandom(min(left, 1 << 16)); s.sendall(b); h.update(b); left -= len(b)
s.shutdown(socket.SHUT_WR); s.recv(1); s.close()
print(h.hexdigest())
"""


# A tiny DNS client run inside a namespace: prints {"rcode", "aa", "answers"} as JSON.
_RESOLVE = """
import json, sys
from dnslib import DNSRecord, RCODE
server, name, qtype, tcp = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "tcp"
reply = DNSRecord.parse(DNSRecord.question(name, qtype).send(server, 53, tcp=tcp, timeout=2))
print(json.dumps({"rcode": RCODE[reply.header.rcode], "aa": reply.header.aa,
                  "answers": sorted(str(rr.rdata) for rr in reply.rr)}))
"""


# GET a URL, print the status on the first line and the body after it (errors included).
_HTTP_GET = """
import sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=10) as r:
        status, body = r.status, r.read()
except urllib.error.HTTPError as e:
    status, body = e.code, e.read()
print(status)
sys.stdout.write(body.decode())
"""


@dataclass
class Host:
    label: str
    netns: str
    address: str
    state_dir: str
    socket: str
    log_path: str
    process: subprocess.Popen[bytes] | None = None
    extra_args: list[str] = field(default_factory=list)


class Lab:
    def __init__(self, prefix: str, workdir: str | None = None, underlay_mtu: int = 1500) -> None:
        self.prefix = prefix
        self.workdir = workdir or f"/tmp/{prefix}-lab"
        self.underlay_mtu = underlay_mtu
        self.underlay_ns = f"{prefix}-ul"
        self.hosts: dict[str, Host] = {}
        self.containers: list[str] = []
        self._host_count = 0
        os.makedirs(self.workdir, exist_ok=True)
        self._make_netns(self.underlay_ns)
        with IPRoute(netns=self.underlay_ns) as ipr:
            ipr.link("add", ifname=UNDERLAY_BRIDGE, kind="bridge", mtu=underlay_mtu)
            idx = ipr.link_lookup(ifname=UNDERLAY_BRIDGE)[0]
            ipr.link("set", index=idx, state="up")

    # ---- topology --------------------------------------------------------------------------

    def _make_netns(self, name: str) -> None:
        pyroute2_netns.create(name)
        with IPRoute(netns=name) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")

    def add_host(self, label: str, mtu: int | None = None) -> Host:
        """A host namespace on the underlay; `mtu` gives its link (both ends) a smaller MTU than the
        lab's, as a host behind a tunnel or a jumbo-less segment would have."""
        self._host_count += 1
        n = self._host_count
        name = f"{self.prefix}-{label}"
        self._make_netns(name)
        address = f"{UNDERLAY_PREFIX}.{n}"
        port = f"{self.prefix[:8]}u{n}"
        with IPRoute(netns=self.underlay_ns) as ipr:
            ipr.link("add", ifname=port, kind="veth", peer={"ifname": "eth0", "net_ns_fd": name})
            idx = ipr.link_lookup(ifname=port)[0]
            bridge = ipr.link_lookup(ifname=UNDERLAY_BRIDGE)[0]
            ipr.link("set", index=idx, master=bridge, mtu=mtu or self.underlay_mtu, state="up")
        with IPRoute(netns=name) as ipr:
            idx = ipr.link_lookup(ifname="eth0")[0]
            ipr.link("set", index=idx, mtu=mtu or self.underlay_mtu, state="up")
            ipr.addr("add", index=idx, address=address, prefixlen=16)
        state_dir = os.path.join(self.workdir, label, "state")
        host = Host(
            label=label, netns=name, address=address, state_dir=state_dir,
            socket=os.path.join(self.workdir, label, "overlayd.sock"),
            log_path=os.path.join(self.workdir, label, "overlayd.log"),
        )
        os.makedirs(os.path.dirname(state_dir), exist_ok=True)
        self.hosts[label] = host
        return host

    def add_container(self, label: str) -> str:
        name = f"{self.prefix}-{label}"
        self._make_netns(name)
        self.containers.append(name)
        return name

    # ---- daemons ---------------------------------------------------------------------------

    def start_daemon(self, host: Host, *extra_args: str, wait: bool = True, timeout: float = 30.0,
                     env: dict[str, str] | None = None, ip_netns_exec: bool = False) -> None:
        """Start overlayd in the host's network namespace. ip_netns_exec: the way an operator would,
        with `ip netns exec HOST overlayd …`, which also gives it a private mount namespace."""
        launcher = ["ip", "netns", "exec", host.netns] if ip_netns_exec else []
        args = [
            *launcher, sys.executable, "-m", "overlaynet.daemon",
            "--config", os.devnull,
            "--name", host.label, "--advertise", host.address,
            "--state-dir", host.state_dir, "--socket", host.socket,
            *(extra_args or host.extra_args),
        ]
        host.extra_args = list(extra_args or host.extra_args)
        log = open(host.log_path, "ab")
        host.process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, preexec_fn=None if launcher else enter_netns(host.netns),
            env={**os.environ, **env} if env else None,
        )
        log.close()
        if wait:
            self.wait_ready(host, timeout)

    def wait_ready(self, host: Host, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if host.process is not None and host.process.poll() is not None:
                raise RuntimeError(f"overlayd on {host.label} exited with {host.process.returncode}:\n"
                                   + self.daemon_log(host)[-3000:])
            if os.path.exists(host.socket):
                # Answering is enough: `status` exits 1 while the host is degraded (e.g. peers down).
                result = self.overlayctl(host, "status", check=False)
                if result.stdout.startswith("health:"):
                    return
            time.sleep(0.05)
        raise TimeoutError(f"overlayd on {host.label} not ready after {timeout}s:\n" + self.daemon_log(host)[-3000:])

    def stop_daemon(self, host: Host, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        proc, host.process = host.process, None
        return None if proc is None else stop_process(proc, sig, timeout)

    def daemon_log(self, host: Host) -> str:
        try:
            with open(host.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    # ---- running things --------------------------------------------------------------------

    def run(self, netns: str, argv: Sequence[str], check: bool = False, timeout: float = 60.0,
            **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(argv), preexec_fn=enter_netns(netns), capture_output=True, text=True,
                              check=check, timeout=timeout, **kwargs)

    def popen(self, netns: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        return subprocess.Popen(list(argv), preexec_fn=enter_netns(netns), **kwargs)

    def overlayctl(self, host: Host, *args: str, check: bool = True,
                   timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "overlaynet.cli.main", "--socket", host.socket, *args],
            capture_output=True, text=True, timeout=timeout,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"overlayctl {' '.join(args)} failed on {host.label}: {result.stderr.strip()}")
        return result

    def overlayctl_json(self, host: Host, *args: str) -> Any:
        """The JSON overlayctl printed; `status` prints it and exits 1 when the host is degraded."""
        result = self.overlayctl(host, *args, "--json", check=False)
        if result.returncode != 0 and not (args[:1] == ("status",) and result.stdout.strip()):
            raise RuntimeError(f"overlayctl {' '.join(args)} failed on {host.label}: {result.stderr.strip()}")
        return json.loads(result.stdout)

    def http_get(self, netns: str, url: str) -> tuple[int, str]:
        """GET `url` from inside `netns` (e.g. a host's metrics address): (status, body); (0, "") if unreachable."""
        result = self.run(netns, [sys.executable, "-c", _HTTP_GET, url], timeout=30)
        if result.returncode != 0:
            return 0, ""
        status, _, body = result.stdout.partition("\n")
        return int(status), body

    def ping(self, netns: str, address: str, count: int = 1, wait: float = 1.0) -> bool:
        result = self.run(netns, ["ping", "-n", "-q", "-c", str(count), "-W", str(wait), address],
                          timeout=count * wait + 10)
        return result.returncode == 0

    def wait_ping(self, netns: str, address: str, timeout: float = 20.0) -> float:
        """Seconds until `address` answers a ping from `netns`; TimeoutError if it never does."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.ping(netns, address, wait=0.5):
                return time.monotonic() - started
        raise TimeoutError(f"{address} did not answer pings from {netns} within {timeout}s")

    def resolve(self, netns: str, server: str, name: str, qtype: str = "A",
                tcp: bool = False) -> dict[str, Any] | None:
        """Ask the DNS server at `server` from inside `netns`; None when nothing answered."""
        result = self.run(netns, [sys.executable, "-c", _RESOLVE, server, name, qtype, "tcp" if tcp else "udp"],
                          timeout=20)
        if result.returncode != 0:
            return None
        answer: dict[str, Any] = json.loads(result.stdout)
        return answer

    def tcp_transfer(self, src_netns: str, dst_netns: str, dst_ip: str, nbytes: int,
                     port: int = 5201, timeout: float = 60.0) -> TransferResult:
        """Send `nbytes` of random data over TCP and compare SHA-256 on both ends."""
        sink = self.popen(dst_netns, [sys.executable, "-c", _TCP_SINK, dst_ip, str(port)],
                          stdout=subprocess.PIPE, text=True)
        try:
            started = time.monotonic()
            sent = self.run(src_netns, [sys.executable, "-c", _TCP_SOURCE, dst_ip, str(port), str(nbytes)],
                            timeout=timeout)
            elapsed = time.monotonic() - started
            received, _ = sink.communicate(timeout=timeout)
        finally:
            if sink.poll() is None:
                sink.kill()
                sink.wait()
        if sent.returncode != 0:
            raise RuntimeError(f"TCP sender failed: {sent.stderr.strip()[-500:]}")
        recv_digest, _, recv_len = received.strip().partition(" ")
        return TransferResult(nbytes, sent.stdout.strip(), recv_digest, int(recv_len or 0), elapsed)

    # ---- teardown --------------------------------------------------------------------------

    def close(self) -> None:
        """Remove everything, best effort and in an order that cannot leave mounts behind."""
        for host in self.hosts.values():
            self.stop_daemon(host, signal.SIGKILL, timeout=5)
            UserspaceMode.stop_fastpathd(host.state_dir)  # it outlives overlayd by design
        for host in self.hosts.values():
            for sandbox in kernel.list_sandboxes(host.state_dir):
                try:
                    kernel.remove_sandbox(sandbox)
                except Exception as e:  # keep going: the rest must still be removed
                    print(f"lab: could not remove {sandbox}: {e}", file=sys.stderr)
        for name in self.containers + [h.netns for h in self.hosts.values()] + [self.underlay_ns]:
            try:
                pyroute2_netns.remove(name)
            except OSError:
                pass
        self.hosts.clear()
        self.containers.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
