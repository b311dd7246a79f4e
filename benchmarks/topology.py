"""The two-host setups the dataplane cases compare, all built on overlaynet.lab's namespaces.

Each mode gets its own lab (underlay bridge + host namespaces), so the modes never share a UDP port
or a device name, and the cases can alternate between modes repeat by repeat.

  underlay      host a eth0 -> host b eth0, no overlay at all: the ceiling.
  kernel-vxlan  container ns -> veth -> bridge -> kernel vxlan (static FDB, programmed here with
                pyroute2) -> underlay -> the same on host b: the reference.
  overlaynet-kernel / overlaynet-userspace
                two overlayd (one --join's the other), one network, one container attached on each
                host with overlayctl.
  overlaynet-userspace-encrypted
                the same with `network create --encrypted` (ESP in the fast path; gossip encrypted
                with a shared --key-file, as encrypted networks require); MTU from esp_wire.inner_mtu.
  kernel-vxlan-esp
                kernel-vxlan inside xfrm ESP transport mode (rfc4106(gcm(aes)), espinudp 4500): what
                Docker's encrypted overlay does. Probed first; "not available" with the kernel's answer
                where the kernel has no ESP xfrm type.
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
from overlaynet.dataplane import esp_keys, esp_wire
from overlaynet.gossip.keyring import Keyring, generate_key
from overlaynet.lab import Host, Lab

MODES = ("underlay", "kernel-vxlan", "overlaynet-kernel", "overlaynet-userspace", "overlaynet-userspace-encrypted",
         "kernel-vxlan-esp")
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
    helpers: list[subprocess.Popen[str]] = field(default_factory=list)  # processes the mode needs running

    def close(self) -> None:
        _stop(self.helpers)
        close_lab(self.lab)


def _stop(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _mac(ns: str, dev: str) -> str:
    with IPRoute(netns=ns) as ipr:
        link = ipr.get_links(ipr.link_lookup(ifname=dev)[0])[0]
        return link.get_attr("IFLA_ADDRESS")


def build(mode: str, prefix: str, underlay_mtu: int) -> Pair:
    """Build `mode` under `prefix`; NotAvailable (with the reason) if this checkout cannot do it yet."""
    lab = Lab(prefix, underlay_mtu=underlay_mtu)
    helpers: list[subprocess.Popen[str]] = []
    try:
        a, b = lab.add_host("a"), lab.add_host("b")
        if mode == "underlay":
            return Pair(mode, lab, a.netns, b.netns, "eth0", "eth0", a.address, b.address,
                        _mac(b.netns, "eth0"), underlay_mtu)
        if mode == "kernel-vxlan":
            return _kernel_vxlan(lab, a, b, underlay_mtu - 50)
        if mode == "kernel-vxlan-esp":
            _xfrm_esp(lab, a, b, helpers)  # NotAvailable here when the kernel has no ESP
            pair = _kernel_vxlan(lab, a, b, esp_wire.inner_mtu(underlay_mtu))
            pair.mode, pair.helpers = mode, helpers
            return pair
        if mode in ("overlaynet-kernel", "overlaynet-userspace"):
            return _overlaynet(lab, a, b, mode.split("-")[1], underlay_mtu - 50)
        if mode == "overlaynet-userspace-encrypted":
            return _overlaynet(lab, a, b, "userspace", esp_wire.inner_mtu(underlay_mtu), encrypted=True)
        raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    except BaseException:
        _stop(helpers)
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


# ---- the kernel reference with ESP: VXLAN in xfrm transport mode, as Docker's encrypted overlay ------


def _ip_xfrm(lab: Lab, host: Host, *args: str) -> None:
    r = lab.run(host.netns, ["ip", "xfrm", *args])
    if r.returncode != 0:
        raise NotAvailable(f"kernel xfrm: `ip xfrm {args[0]} {args[1]} ... proto esp aead rfc4106(gcm(aes))` says "
                           f"\"{(r.stderr.strip().splitlines() or ['?'])[-1]}\"")


# Holds an RFC 3948 ESP-in-UDP socket on 4500 (what an IKE daemon does): the kernel decapsulates
# espinudp only for datagrams that reach a socket with UDP_ENCAP_ESPINUDP.
ESPINUDP_SOCKET = ("import socket, time\n"
                   "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                   "s.setsockopt(socket.IPPROTO_UDP, 100, 2)  # UDP_ENCAP, UDP_ENCAP_ESPINUDP\n"
                   "s.bind(('0.0.0.0', 4500))\n"
                   "print('ready', flush=True)\n"
                   "time.sleep(86400)\n")


# overlayd's own probe (a throwaway rfc4106(gcm(aes)) SA over NETLINK_XFRM with pyroute2), run inside
# a lab namespace: xfrm state is per namespace.
XFRM_PROBE = "from overlaynet.kernel.xfrm import esp_gcm_missing\nprint(esp_gcm_missing() or 'ok')\n"


def _xfrm_esp(lab: Lab, a: Host, b: Host, helpers: list[subprocess.Popen[str]]) -> None:
    """Transport-mode ESP (AES-GCM-128, UDP-encapsulated on 4500) for VXLAN between the two VTEPs, with
    the keys overlaynet would derive. xfrm state is per namespace: nothing outside the lab changes."""
    probe = lab.run(a.netns, [sys.executable, "-c", XFRM_PROBE])
    answer = probe.stdout.strip() or (probe.stderr.strip().splitlines() or ["no answer"])[-1]
    if answer != "ok":
        raise NotAvailable(f"kernel xfrm (probe over NETLINK_XFRM): {answer}")
    secret = os.urandom(32)
    for host, peer in ((a, b), (b, a)):
        for src, dst in ((host, peer), (peer, host)):
            sa = esp_keys.derive_sa(secret, VNI, 1, src.address, dst.address)
            _ip_xfrm(lab, host, "state", "add", "src", src.address, "dst", dst.address, "proto", "esp",
                     "spi", f"0x{sa.spi:08x}", "reqid", "1", "mode", "transport",
                     "aead", "rfc4106(gcm(aes))", "0x" + (sa.key + sa.salt).hex(), "128",
                     "encap", "espinudp", "4500", "4500", "0.0.0.0")
        for d, src, dst in (("out", host, peer), ("in", peer, host)):
            _ip_xfrm(lab, host, "policy", "add", "src", src.address, "dst", dst.address, "proto", "udp",
                     "dport", "4789", "dir", d, "tmpl", "src", src.address, "dst", dst.address, "proto", "esp",
                     "reqid", "1", "mode", "transport", "level", "required")
        holder = lab.popen(host.netns, [sys.executable, "-c", ESPINUDP_SOCKET], stdout=subprocess.PIPE, text=True)
        helpers.append(holder)
        if holder.stdout is None or holder.stdout.readline().strip() != "ready":
            raise NotAvailable("cannot hold an ESP-in-UDP socket on port 4500")


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


def _overlaynet(lab: Lab, a: Host, b: Host, dataplane: str, mtu: int, encrypted: bool = False) -> Pair:
    common = ["--dataplane", dataplane, "--resync-interval", "5"]
    if encrypted:  # encrypted networks need encrypted gossip: one shared cluster key
        key_file = os.path.join(lab.workdir, "gossip.key")
        Keyring([generate_key()]).save(key_file)
        common += ["--key-file", key_file]
    else:
        common.append("--plaintext")
    for host, extra in ((a, []), (b, ["--join", a.address])):
        try:
            lab.start_daemon(host, *common, *extra, timeout=30)
        except (RuntimeError, TimeoutError) as e:
            raise NotAvailable(f"overlayd --dataplane {dataplane} did not start: "
                               f"{_first_line(lab.daemon_log(host) or str(e))}") from None
    create = ["network", "create", NETWORK, "--subnet", f"{OVERLAY_NET}.0/24", "--vni", str(VNI), "--mtu", str(mtu)]
    try:
        lab.overlayctl(a, *create, *(["--encrypted"] if encrypted else []))
    except RuntimeError as e:
        if not encrypted:
            raise
        raise NotAvailable(f"encrypted networks: {str(e).splitlines()[-1]}") from None
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
    return Pair(f"overlaynet-{dataplane}" + ("-encrypted" if encrypted else ""), lab, containers["a"], containers["b"], eps["a"]["ifname"],
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
