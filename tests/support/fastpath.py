"""Throwaway VXLAN topologies for the fast-path integration tests (and ad-hoc measurements).

    underlay switch netns (bridge) ── veth ── host netns (198.18.0.N, fastpathd or kernel vxlan)
    host: sandbox netns per network: bridge + TAP (userspace) or VXLAN device (kernel)
    container netns: eth0 on 198.19.<net>.<n>/24, veth into the sandbox bridge

Everything is created inside namespaces made by the `netns` fixture (removed after the test);
fastpathd processes are stopped by Lab.close().
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from pyroute2 import IPRoute

from overlaynet.dataplane import esp_keys, esp_wire
from overlaynet.dataplane.control import FastpathClient, start_fastpathd
from overlaynet.lab import stop_process

UNDERLAY_NET = "198.18.0"


def wait_until(cond: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def nsexec(ns: str, *cmd: str, timeout: float = 60.0, check: bool = True, input: bytes | None = None
           ) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, timeout=timeout, check=check,
                          input=input)


def nspopen(ns: str, *cmd: str, **kw: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["ip", "netns", "exec", ns, *cmd], **kw)


def _ifindex(ipr: IPRoute, name: str) -> int:
    return ipr.link_lookup(ifname=name)[0]


@dataclass
class Container:
    ns: str
    ip: str
    mac: str
    net: Network


@dataclass
class Network:
    vni: int
    index: int  # 198.19.<index>.0/24
    mtu: int
    sandboxes: dict[str, str] = field(default_factory=dict)  # host name -> sandbox netns
    containers: list[Container] = field(default_factory=list)
    encrypted: bool = False
    secret: bytes = b""
    epochs: tuple[int, ...] = (1,)  # key epochs installed (the last one transmits)


@dataclass
class Host:
    name: str
    ns: str
    vtep: str
    kind: str  # "userspace" | "kernel"
    mtu: int
    control: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    fastpath_args: tuple[str, ...] = ()
    state: str | None = None  # fastpathd --state file (encrypted networks need one)

    def client(self) -> FastpathClient:
        assert self.control
        return FastpathClient(self.control)


class Lab:
    def __init__(self, prefix: str, netns: Callable[[str], str], tmpdir: str, underlay_mtu: int = 1500) -> None:
        self.prefix = prefix
        self.netns = netns
        self.tmpdir = tmpdir
        self.mtu = underlay_mtu
        self.hosts: dict[str, Host] = {}
        self.networks: dict[int, Network] = {}
        self.switch = netns("sw")
        with IPRoute(netns=self.switch) as ipr:
            ipr.link("add", ifname="usw", kind="bridge")
            ipr.link("set", index=_ifindex(ipr, "usw"), state="up", mtu=underlay_mtu)

    # ---- hosts
    def add_host(self, name: str, kind: str, fastpath_args: tuple[str, ...] = (), state: bool = False) -> Host:
        n = len(self.hosts) + 1
        ns = self.netns("h" + name)
        vtep = f"{UNDERLAY_NET}.{n}"
        with IPRoute(netns=self.switch) as ipr:
            ipr.link("add", ifname=f"up{n}", kind="veth", peer={"ifname": "eth0", "net_ns_fd": ns})
            idx = _ifindex(ipr, f"up{n}")
            ipr.link("set", index=idx, master=_ifindex(ipr, "usw"), mtu=self.mtu, state="up")
        with IPRoute(netns=ns) as ipr:
            idx = _ifindex(ipr, "eth0")
            ipr.link("set", index=idx, mtu=self.mtu, state="up")
            ipr.addr("add", index=idx, address=vtep, prefixlen=16)
        host = Host(name, ns, vtep, kind, self.mtu, fastpath_args=fastpath_args,
                    state=os.path.join(self.tmpdir, f"{name}.state") if state else None)
        self.hosts[name] = host
        if kind == "userspace":
            self.start_fastpathd(host)
        return host

    def start_fastpathd(self, host: Host, state: str | None = None) -> None:
        host.control = os.path.join(self.tmpdir, f"{self.prefix}-{host.name}.sock")
        log = open(os.path.join(self.tmpdir, f"fastpathd-{host.name}.log"), "ab")  # noqa: SIM115
        host.proc = start_fastpathd(host.control, bind=host.vtep, netns=f"/run/netns/{host.ns}",
                                    state=state or host.state, extra=host.fastpath_args, log=log)
        log.close()

    def stop_fastpathd(self, host: Host, sig: int = signal.SIGTERM) -> None:
        if host.proc:
            stop_process(host.proc, sig, 10)
        host.proc = None

    def close(self) -> None:
        for h in self.hosts.values():
            self.stop_fastpathd(h)

    # ---- networks
    def add_network(self, vni: int, hosts: list[str], index: int | None = None, mtu: int | None = None,
                    encrypted: bool = False) -> Network:
        default_mtu = esp_wire.inner_mtu(self.mtu) if encrypted else self.mtu - esp_wire.VXLAN_OVERHEAD
        net = Network(vni, index if index is not None else len(self.networks) + 1, mtu or default_mtu,
                      encrypted=encrypted, secret=os.urandom(32) if encrypted else b"")
        self.networks[vni] = net
        for hname in hosts:
            host = self.hosts[hname]
            sb = self.netns(f"s{hname}{vni % 1000}")
            net.sandboxes[hname] = sb
            with IPRoute(netns=sb) as ipr:
                ipr.link("add", ifname="br0", kind="bridge")
                ipr.link("set", index=_ifindex(ipr, "br0"), state="up")
            if host.kind == "userspace":
                with host.client() as c:
                    c.add_network(vni, f"/run/netns/{sb}", f"tap{vni}", net.mtu, encrypted=encrypted)
                with IPRoute(netns=sb) as ipr:
                    idx = _ifindex(ipr, f"tap{vni}")
                    ipr.link("set", index=idx, master=_ifindex(ipr, "br0"), state="up")
            else:
                with IPRoute(netns=host.ns) as ipr:
                    ipr.link("add", ifname=f"vx{vni}", kind="vxlan", vxlan_id=vni, vxlan_local=host.vtep,
                             vxlan_port=4789, vxlan_learning=1)
                    ipr.link("set", index=_ifindex(ipr, f"vx{vni}"), net_ns_fd=sb)
                with IPRoute(netns=sb) as ipr:
                    idx = _ifindex(ipr, f"vx{vni}")
                    ipr.link("set", index=idx, mtu=net.mtu, master=_ifindex(ipr, "br0"), state="up")
        return net

    def add_container(self, vni: int, host: str) -> Container:
        net = self.networks[vni]
        n = len(net.containers) + 1
        ns = self.netns(f"c{vni % 1000}x{n}")
        ip = f"198.19.{net.index}.{n}"
        mac = f"02:00:{(vni >> 16) & 0xff:02x}:{(vni >> 8) & 0xff:02x}:{vni & 0xff:02x}:{n:02x}"
        sb = net.sandboxes[host]
        with IPRoute(netns=sb) as ipr:
            ipr.link("add", ifname=f"ve{n}", kind="veth", peer={"ifname": "eth0", "net_ns_fd": ns})
            idx = _ifindex(ipr, f"ve{n}")
            ipr.link("set", index=idx, master=_ifindex(ipr, "br0"), mtu=net.mtu, state="up")
        with IPRoute(netns=ns) as ipr:
            idx = _ifindex(ipr, "eth0")
            ipr.link("set", index=idx, address=mac, mtu=net.mtu, state="up")
            ipr.addr("add", index=idx, address=ip, prefixlen=24)
        c = Container(ns, ip, mac, net)
        c.host = host  # type: ignore[attr-defined]
        net.containers.append(c)
        return c

    # ---- control-plane programming (what overlayd's reconciler would do)
    def program(self, arp: bool = True) -> None:
        for host in self.hosts.values():
            if host.kind == "userspace":
                with host.client() as c:
                    c.sync_peers([h.vtep for h in self.hosts.values() if h is not host])
                    for net in self.networks.values():
                        if host.name not in net.sandboxes:
                            continue
                        remote = [x for x in net.containers if x.host != host.name]  # type: ignore[attr-defined]
                        c.sync_fdb(net.vni, {x.mac: self.hosts[x.host].vtep for x in remote})  # type: ignore[attr-defined]
                        c.sync_flood(net.vni, [self.hosts[h].vtep for h in net.sandboxes if h != host.name])
                        c.sync_arp(net.vni, {x.ip: x.mac for x in remote} if arp else {})
                        if net.encrypted:
                            c.sync_sas(net.vni, self.sas(net, host.name))
            else:
                for net in self.networks.values():
                    if host.name not in net.sandboxes:
                        continue
                    with IPRoute(netns=net.sandboxes[host.name]) as ipr:
                        idx = _ifindex(ipr, f"vx{net.vni}")
                        for h in net.sandboxes:
                            if h != host.name:
                                with contextlib.suppress(Exception):
                                    ipr.fdb("append", ifindex=idx, lladdr="00:00:00:00:00:00",
                                            dst=self.hosts[h].vtep)


    # ---- encrypted networks (what overlayd would derive from the network's secret)
    def sa(self, net: Network, src: str, dst: str, epoch: int | None = None) -> esp_keys.EspSaParams:
        """The SA that carries `net` from host `src` to host `dst` in `epoch` (default: the newest)."""
        epoch = net.epochs[-1] if epoch is None else epoch
        return esp_keys.derive_sa(net.secret, net.vni, epoch, self.hosts[src].vtep, self.hosts[dst].vtep)

    def sas(self, net: Network, host: str, out_epoch: int | None = None,
            in_epochs: tuple[int, ...] | None = None) -> list[dict[str, Any]]:
        """`host`'s SAs for `net`: one outbound per peer (newest epoch), inbound for every installed epoch."""
        out: list[dict[str, Any]] = []
        for peer in net.sandboxes:
            if peer == host:
                continue
            for d, epochs in (("out", (net.epochs[-1] if out_epoch is None else out_epoch,)),
                              ("in", net.epochs if in_epochs is None else in_epochs)):
                for epoch in epochs:
                    p = self.sa(net, host, peer, epoch) if d == "out" else self.sa(net, peer, host, epoch)
                    out.append({"peer": self.hosts[peer].vtep, "dir": d, "epoch": epoch, "spi": p.spi,
                                "key": p.key, "salt": p.salt})
        return out


@pytest.fixture
def make_lab(prefix: str, netns: Callable[[str], str], tmp_path: Any) -> Iterator[Callable[..., Lab]]:
    """A fixture: make_lab(underlay_mtu=1500) gives a Lab whose fastpathds are stopped after the test."""
    labs: list[Lab] = []

    def make(underlay_mtu: int = 1500) -> Lab:
        lab = Lab(prefix, netns, str(tmp_path), underlay_mtu)
        labs.append(lab)
        return lab

    yield make
    for lab in labs:
        lab.close()


# ---- traffic helpers

def ping(src: Container, dst_ip: str, count: int = 3, size: int = 56, timeout: float = 10) -> bool:
    r = nsexec(src.ns, "ping", "-c", str(count), "-i", "0.2", "-W", "2", "-s", str(size), "-M", "dont", dst_ip,
               check=False, timeout=timeout + count)
    return r.returncode == 0


def ping_until(src: Container, dst_ip: str, timeout: float = 10.0) -> None:
    wait_until(lambda: ping(src, dst_ip, count=1), timeout, f"ping {src.ip} -> {dst_ip}")


def tcp_transfer(src: Container, dst: Container, nbytes: int, port: int = 5001, timeout: float = 60) -> None:
    """Send nbytes of random data src -> dst over TCP and assert the sha256 matches at the far end."""
    data = os.urandom(nbytes)
    want = hashlib.sha256(data).hexdigest()
    server_code = (
        "import socket,hashlib,sys\n"
        "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        f"s.bind(('{dst.ip}', {port})); s.listen(1); print('ready', flush=True)\n"
        "c,_=s.accept(); h=hashlib.sha256(); n=0\n"
        "while True:\n"
        "    b=c.recv(1<<20)\n"
        "    if not b: break\n"
        "    h.update(b); n+=len(b)\n"
        "print(n, h.hexdigest(), flush=True)\n"
    )
    client_code = (
        "import socket,sys\n"
        f"s=socket.create_connection(('{dst.ip}', {port}), timeout=20)\n"
        "s.sendall(sys.stdin.buffer.read()); s.shutdown(socket.SHUT_WR)\n"
        "s.settimeout(30); s.recv(1)\n"
    )
    srv = nspopen(dst.ns, "python3", "-c", server_code, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert srv.stdout is not None
        line = srv.stdout.readline()
        assert line.strip() == b"ready", srv.stderr.read() if srv.stderr else line
        nsexec(src.ns, "python3", "-c", client_code, input=data, timeout=timeout)
        out, err = srv.communicate(timeout=timeout)
        n, got = out.decode().split()
        assert int(n) == nbytes, f"received {n} of {nbytes} bytes"
        assert got == want, "payload corrupted in transit (sha256 mismatch)"
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()


def link_stats(ns: str, ifname: str) -> dict[str, int]:
    with IPRoute(netns=ns) as ipr:
        link = ipr.get_links(_ifindex(ipr, ifname))[0]
        st = link.get("IFLA_STATS64")
        return {k: st[k] for k in ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "multicast")}
