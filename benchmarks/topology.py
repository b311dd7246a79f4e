"""The two-host setups the dataplane cases compare, all built on overlaynet.lab's namespaces.

Each mode gets its own lab (underlay bridge + host namespaces), so the modes never share a UDP port
or a device name, and the cases can alternate between modes repeat by repeat.

  underlay      host a eth0 -> host b eth0, no overlay at all: the ceiling.
  kernel-vxlan  container ns -> veth -> bridge -> kernel vxlan (static FDB, programmed here with
                pyroute2) -> underlay -> the same on host b: the reference.
  overlaynet-kernel / overlaynet-userspace
                two overlayd (one --join's the other), one network, one container attached on each
                host with overlayctl.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field

from pyroute2 import IPRoute

from benchmarks.core import NotAvailable
from overlaynet.lab import Host, Lab

MODES = ("underlay", "kernel-vxlan", "overlaynet-kernel", "overlaynet-userspace")
REFERENCE = "kernel-vxlan"
VNI = 4242
OVERLAY_NET = "198.19.42"
NETWORK = "bench"


@dataclass
class Pair:
    """Traffic goes from src_ns (device src_dev) to dst_ip/dst_mac, received on dst_dev in dst_ns."""

    mode: str
    lab: Lab
    src_ns: str
    dst_ns: str
    src_dev: str
    dst_dev: str
    src_ip: str
    dst_ip: str
    dst_mac: str
    mtu: int  # of the path the traffic sees (inner MTU for the overlays)
    daemon_pids: list[int] = field(default_factory=list)  # overlayd pids of a userspace pair (CPU accounting)

    def close(self) -> None:
        close_lab(self.lab)


def _mac(ns: str, dev: str) -> str:
    with IPRoute(netns=ns) as ipr:
        link = ipr.get_links(ipr.link_lookup(ifname=dev)[0])[0]
        return link.get_attr("IFLA_ADDRESS")


def build(mode: str, prefix: str, underlay_mtu: int) -> Pair:
    """Build `mode` under `prefix`; NotAvailable (with the reason) if this checkout cannot do it yet."""
    lab = Lab(prefix, underlay_mtu=underlay_mtu)
    try:
        a, b = lab.add_host("a"), lab.add_host("b")
        if mode == "underlay":
            return Pair(mode, lab, a.netns, b.netns, "eth0", "eth0", a.address, b.address,
                        _mac(b.netns, "eth0"), underlay_mtu)
        if mode == "kernel-vxlan":
            return _kernel_vxlan(lab, a, b, underlay_mtu - 50)
        if mode in ("overlaynet-kernel", "overlaynet-userspace"):
            return _overlaynet(lab, a, b, mode.split("-")[1], underlay_mtu - 50)
        raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    except BaseException:
        close_lab(lab)
        raise


# ---- the reference: the kernel's VXLAN, programmed by hand -----------------------------------------


def _kernel_vxlan(lab: Lab, a: Host, b: Host, mtu: int) -> Pair:
    containers = {}
    for n, (host, peer) in enumerate(((a, b), (b, a)), start=1):
        ctr = lab.add_container(f"c{host.label}")
        containers[host.label] = ctr
        mac = f"02:00:c6:13:2a:{n:02x}"
        with IPRoute(netns=host.netns) as ipr:
            ipr.link("add", ifname="bbr0", kind="bridge", mtu=mtu)
            br = ipr.link_lookup(ifname="bbr0")[0]
            ipr.link("add", ifname="bvx0", kind="vxlan", vxlan_id=VNI, vxlan_local=host.address,
                     vxlan_port=4789, vxlan_learning=0, mtu=mtu)
            vx = ipr.link_lookup(ifname="bvx0")[0]
            ipr.link("add", ifname="bve0", kind="veth", peer={"ifname": "eth0", "net_ns_fd": ctr})
            ve = ipr.link_lookup(ifname="bve0")[0]
            for idx in (vx, ve):
                ipr.link("set", index=idx, master=br, mtu=mtu, state="up")
            ipr.link("set", index=br, state="up")
            # Flood list (ARP, unknown unicast) and the remote container's MAC, as overlaynet programs them.
            ipr.fdb("append", ifindex=vx, lladdr="00:00:00:00:00:00", dst=peer.address, state=0x80, flags=0x02)
            peer_mac = f"02:00:c6:13:2a:{3 - n:02x}"
            ipr.fdb("replace", ifindex=vx, lladdr=peer_mac, dst=peer.address, state=0x80, flags=0x02)
        with IPRoute(netns=ctr) as ipr:
            idx = ipr.link_lookup(ifname="eth0")[0]
            ipr.link("set", index=idx, address=mac, mtu=mtu, state="up")
            ipr.addr("add", index=idx, address=f"{OVERLAY_NET}.{n}", prefixlen=24)
    return Pair("kernel-vxlan", lab, containers["a"], containers["b"], "eth0", "eth0",
                f"{OVERLAY_NET}.1", f"{OVERLAY_NET}.2", "02:00:c6:13:2a:02", mtu)


# ---- overlaynet itself -------------------------------------------------------------------------------


def _first_line(text: str) -> str:
    """The line of a daemon's output that says why it stopped: its own one-line error, else the
    exception at the end of a traceback, else the last line."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith("overlayd:"):
            return ln
    for ln in reversed(lines):
        head = ln.split(":", 1)[0]
        if head.endswith(("Error", "Exception")) and " " not in head:
            return ln
    return lines[-1] if lines else "no output"


def _overlaynet(lab: Lab, a: Host, b: Host, dataplane: str, mtu: int) -> Pair:
    common = ["--dataplane", dataplane, "--plaintext", "--resync-interval", "5"]
    for host, extra in ((a, []), (b, ["--join", a.address])):
        try:
            lab.start_daemon(host, *common, *extra, timeout=30)
        except (RuntimeError, TimeoutError) as e:
            raise NotAvailable(f"overlayd --dataplane {dataplane} did not start: "
                               f"{_first_line(lab.daemon_log(host) or str(e))}") from None
    lab.overlayctl(a, "network", "create", NETWORK, "--subnet", f"{OVERLAY_NET}.0/24", "--vni", str(VNI),
                   "--mtu", str(mtu))
    # The network should reach host b by gossip; if it does not, say so rather than hand-creating it.
    deadline = time.monotonic() + 15
    while not any(n["name"] == NETWORK for n in lab.overlayctl_json(b, "network", "ls")):
        if time.monotonic() > deadline:
            raise NotAvailable("a network created on host a never appeared on host b within 15 s "
                               "(cross-host gossip of tables not working in this checkout)")
        time.sleep(0.2)
    containers, eps = {}, {}
    for host in (a, b):
        ctr = lab.add_container(f"c{host.label}")
        containers[host.label] = ctr
        eps[host.label] = lab.overlayctl_json(host, "attach", ctr, "--network", NETWORK)
    try:
        lab.wait_ping(containers["a"], eps["b"]["ip"], timeout=30)
    except TimeoutError:
        raise NotAvailable(f"containers attached on two hosts could not ping each other within 30 s "
                           f"(overlayd {dataplane} mode across hosts)") from None
    pids = [h.process.pid for h in (a, b) if h.process is not None] if dataplane == "userspace" else []
    return Pair(f"overlaynet-{dataplane}", lab, containers["a"], containers["b"], eps["a"]["ifname"],
                eps["b"]["ifname"], eps["a"]["ip"], eps["b"]["ip"], eps["b"]["mac"], mtu, daemon_pids=pids)


def close_lab(lab: Lab) -> None:
    """lab.close(), and if that fails (the lab is being developed too), remove its objects ourselves:
    daemons, bind mounts under its workdir, namespaces with its prefix, files."""
    try:
        lab.close()
        return
    except Exception as e:
        print(f"benchmarks: lab.close() failed ({e}); removing {lab.prefix}* directly", file=sys.stderr)
    for host in lab.hosts.values():
        if host.process is not None and host.process.poll() is None:
            host.process.kill()
            host.process.wait()
    cleanup_leftovers(lab.prefix, lab.workdir)
    shutil.rmtree(lab.workdir, ignore_errors=True)


def cleanup_leftovers(prefix: str, workdir: str | None = None) -> list[str]:
    """Remove mounts under workdir and namespaces named prefix*; return what was found."""
    from pyroute2 import netns as pyroute2_netns

    found = []
    if workdir:
        with open("/proc/self/mountinfo") as f:
            mounts = [line.split()[4] for line in f if line.split()[4].startswith(workdir)]
        for path in sorted(mounts, reverse=True):
            subprocess.run(["umount", "-l", path], capture_output=True)
            found.append(f"mount {path}")
    left = [n for n in os.listdir("/run/netns")] if os.path.isdir("/run/netns") else []
    for name in [n for n in left if n.startswith(prefix)]:
        found.append(f"namespace {name}")
        try:
            pyroute2_netns.remove(name)
        except OSError:
            pass
    return found
