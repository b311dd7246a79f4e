"""Side-by-side measurement: kernel VXLAN vs the userspace fast path, on one topology, in one run.

    .venv/bin/python dataplane/tools/fp_measure.py [--repeats 3] [--seconds 5] [--only tcp,ping,pps]
                                                  [--fastpath-arg=--spin-us=50 ...] [--json FILE]

One underlay switch namespace with four hosts: ka/kb use kernel VXLAN (VNI 100), ua/ub run
fastpathd (VNI 200), one container per host. Every repeat measures kernel then userspace back to back
(the machine is shared: compare only within a run, report medians):

- tcp:  iperf3 single stream a -> b; Gbit/s, plus CPU seconds per Gbit moved (fastpathd's threads;
        the whole machine's busy time for both, which includes other people's load).
- ping: 200 pings at 5 ms intervals a -> b; p50/p90 RTT in ms.
- pps:  64-byte Ethernet frames (UDP, 18 payload bytes, 16 flows) from trafgen (netsniff-ng) on a's
        container eth0, counted as datagrams at b's UDP layer; offered and received kpps.

Needs root, iperf3 and (for pps) trafgen. Everything created is named with --prefix and removed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".."))
from benchmarks.dataplane import UDP_SINK, udp_datagrams_in  # noqa: E402  (one way of counting for both tools)
from tests.support.fastpath import Container, Lab, link_stats, nsexec, nspopen, ping_until  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


class Namespaces:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.created: list[str] = []

    def __call__(self, label: str) -> str:
        from pyroute2 import IPRoute
        from pyroute2 import netns as pnetns

        name = f"{self.prefix}-{label}{len(self.created) + 1}"
        pnetns.create(name)
        self.created.append(name)
        with IPRoute(netns=name) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        return name

    def remove_all(self) -> None:
        from pyroute2 import netns as pnetns

        for name in reversed(self.created):
            try:
                pnetns.remove(name)
            except OSError:
                pass


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of all threads of pid."""
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / CLK_TCK


def machine_busy() -> float:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return (sum(v[:8]) - idle) / CLK_TCK


def tcp(lab: Lab, a: Container, b: Container, seconds: int, port: int) -> dict[str, float]:
    srv = nspopen(b.ns, "iperf3", "-s", "-1", "-B", b.ip, "-p", str(port), stdout=subprocess.DEVNULL,
                  stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        hosts = (a.host, b.host)  # type: ignore[attr-defined]
        pids = [h.proc.pid for h in lab.hosts.values() if h.name in hosts and h.proc is not None]
        c0 = sum(proc_cpu(p) for p in pids)
        m0 = machine_busy()
        r = nsexec(a.ns, "iperf3", "-c", b.ip, "-p", str(port), "-t", str(seconds), "-J", timeout=seconds + 30,
                   check=False)
        m1 = machine_busy()
        c1 = sum(proc_cpu(p) for p in pids)
        j = json.loads(r.stdout or b"{}")
        if "error" in j or "end" not in j:
            raise RuntimeError(f"iperf3 failed: {j.get('error', r.stderr.decode()[-200:])}")
        gbit = j["end"]["sum_received"]["bits_per_second"] / 1e9
        moved = gbit * j["end"]["sum_received"]["seconds"]  # Gbit
        return {"gbit": gbit, "fp_cpu_s_per_gbit": (c1 - c0) / moved if pids else 0.0,
                "machine_cpu_s_per_gbit": (m1 - m0) / moved,
                "retransmits": j["end"]["sum_sent"].get("retransmits", 0)}
    finally:
        srv.wait(10) if srv.poll() is None else None


def ping_rtt(a: Container, b: Container, count: int) -> dict[str, float]:
    r = nsexec(a.ns, "ping", "-c", str(count), "-i", "0.005", "-W", "1", b.ip, timeout=count * 0.1 + 30, check=False)
    rtts = sorted(float(x) for x in re.findall(rb"time=([0-9.]+) ms", r.stdout))
    if not rtts:
        raise RuntimeError("no ping replies")
    return {"p50_ms": rtts[len(rtts) // 2], "p90_ms": rtts[int(len(rtts) * 0.9)],
            "p99_ms": rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))], "min_ms": rtts[0],
            "lost": count - len(rtts)}


def pps(a: Container, b: Container, seconds: int, tmp: str, cpus: int) -> dict[str, float]:
    conf = os.path.join(tmp, f"trafgen-{a.ip}.cfg")
    with open(conf, "w") as f:
        # 14 Ethernet + 20 IPv4 + 8 UDP + 18 payload = 60 bytes (64 with the FCS); 16 flows
        f.write(f"{{\n  eth(da={b.mac}, sa={a.mac}),\n  ipv4(saddr={a.ip}, daddr={b.ip}, ttl=64, df),\n"
                "  udp(sport=dinc(1000, 1015), dport=9),\n  fill(0x41, 18)\n}\n")
    # A socket on port 9 that never reads: every datagram is counted at b's UDP layer (after GSO
    # segmentation; a device counter would count a coalesced train once) and none draws an ICMP error.
    sink = nspopen(b.ns, sys.executable, "-c", UDP_SINK, b.ip, stdout=subprocess.PIPE)
    try:
        assert sink.stdout is not None and sink.stdout.readline().strip() == b"ready"
        tx0 = link_stats(a.ns, "eth0")["tx_packets"]
        rx0 = udp_datagrams(b.ns)
        t0 = time.monotonic()
        nsexec(a.ns, "timeout", "-s", "INT", str(seconds), "trafgen", "-i", conf, "-o", "eth0", "-q", "-P", str(cpus),
               timeout=seconds + 30, check=False)
        time.sleep(0.3)  # let queues drain
        dt = time.monotonic() - t0 - 0.3
        tx = link_stats(a.ns, "eth0")["tx_packets"] - tx0
        rx = udp_datagrams(b.ns) - rx0
    finally:
        sink.kill()
        sink.wait()
    return {"offered_kpps": tx / dt / 1e3, "received_kpps": rx / dt / 1e3}


def udp_datagrams(ns: str) -> int:
    return udp_datagrams_in(nsexec(ns, "cat", "/proc/net/snmp").stdout.decode())


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--only", default="tcp,ping,pps")
    p.add_argument("--pings", type=int, default=200)
    p.add_argument("--kinds", default="", help="measure only these (comma-separated: kernel, userspace, variants)")
    p.add_argument("--mtu", type=int, default=1500, help="underlay MTU (inner = MTU - 50)")
    p.add_argument("--fastpath-arg", action="append", default=[], help="extra fastpathd argument (repeatable)")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=ARGS",
                   help="also measure fastpathd started with these (space-separated) arguments (repeatable)")
    p.add_argument("--trafgen-cpus", type=int, default=1)
    p.add_argument("--prefix", default="pfm" + secrets.token_hex(2))
    p.add_argument("--json", help="write all samples here")
    p.add_argument("--stats", action="store_true", help="print fastpathd counters and drop counters at the end")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("fp_measure: needs root (network namespaces); run it with sudo", file=sys.stderr)
        return 2
    only = set(args.only.split(","))
    if "pps" in only and not shutil.which("trafgen"):
        print("fp_measure: trafgen not found (apt-get install netsniff-ng); skipping pps", file=sys.stderr)
        only.discard("pps")
    tmp = tempfile.mkdtemp(prefix=args.prefix)
    ns = Namespaces(args.prefix)
    lab = None
    samples: dict[str, dict[str, list[dict[str, float]]]] = {}
    try:
        lab = Lab(args.prefix, ns, tmp, args.mtu)
        for name in ("ka", "kb"):
            lab.add_host(name, "kernel")
        lab.add_network(100, ["ka", "kb"])
        pairs = {"kernel": (lab.add_container(100, "ka"), lab.add_container(100, "kb"))}
        variants = [("userspace", tuple(args.fastpath_arg))]
        variants += [(v.split("=", 1)[0], tuple(v.split("=", 1)[1].split())) for v in args.variant]
        for i, (vname, vargs) in enumerate(variants):
            ha, hb = f"u{i}a", f"u{i}b"
            lab.add_host(ha, "userspace", vargs)
            lab.add_host(hb, "userspace", vargs)
            lab.add_network(200 + i, [ha, hb])
            pairs[vname] = (lab.add_container(200 + i, ha), lab.add_container(200 + i, hb))
        lab.program()
        for a, b in pairs.values():
            ping_until(a, b.ip, timeout=20)
            ping_until(b, a.ip, timeout=20)
        for rep in range(args.repeats):
            for kind, (a, b) in pairs.items():
                if args.kinds and kind not in args.kinds.split(","):
                    continue
                s = samples.setdefault(kind, {})
                if "tcp" in only:
                    s.setdefault("tcp", []).append(tcp(lab, a, b, args.seconds, 5201 + rep))
                if "ping" in only:
                    s.setdefault("ping", []).append(ping_rtt(a, b, args.pings))
                if "pps" in only:
                    s.setdefault("pps", []).append(pps(a, b, args.seconds, tmp, args.trafgen_cpus))
                print(f"repeat {rep + 1} {kind}: " + json.dumps({k: v[-1] for k, v in s.items()}), flush=True)
        if args.stats:
            for h in lab.hosts.values():
                if h.kind == "userspace":
                    with h.client() as c:
                        st = c.stats()
                    print(h.name, json.dumps({"global": {k: v for k, v in st["global"].items() if v},
                                              "net": {k: v for n in st["networks"].values() for k, v in n.items() if v}}))
            for kind, (a, b) in pairs.items():
                for side in (a, b):
                    r = nsexec(side.ns, "cat", "/proc/net/snmp", check=False).stdout.decode().split("\n")
                    udp = [x for x in r if x.startswith("Udp:")]
                    print(kind, side.ip, "udp", udp[1] if len(udp) > 1 else "")
                    hostns = lab.hosts[side.host].ns  # type: ignore[attr-defined]
                    r = nsexec(hostns, "cat", "/proc/net/snmp", check=False).stdout.decode().split("\n")
                    udp = [x for x in r if x.startswith("Udp:")]
                    print(kind, "host", side.host, "udp", udp[1] if len(udp) > 1 else "")  # type: ignore[attr-defined]
                for sb in a.net.sandboxes.values():
                    print(kind, sb, nsexec(sb, "ip", "-s", "-o", "link", check=False).stdout.decode()[-2000:])
    finally:
        if lab:
            lab.close()
        ns.remove_all()
        shutil.rmtree(tmp, ignore_errors=True)
    summary: dict[str, Any] = {}
    for kind, s in samples.items():
        summary[kind] = {f"{test}.{key}": round(median([x[key] for x in rows]), 4)
                         for test, rows in s.items() for key in rows[0]}
    k = summary.get("kernel", {})
    ratios = {}
    for vname, u in summary.items():
        if vname == "kernel":
            continue
        if "tcp.gbit" in k:
            ratios[f"tcp {vname}/kernel"] = round(u["tcp.gbit"] / k["tcp.gbit"], 3)
        if "ping.p50_ms" in k:
            ratios[f"ping p50 {vname}/kernel"] = round(u["ping.p50_ms"] / k["ping.p50_ms"], 3)
            ratios[f"ping p99 {vname}/kernel"] = round(u["ping.p99_ms"] / k["ping.p99_ms"], 3)
        if "pps.received_kpps" in k:
            ratios[f"pps {vname}/kernel"] = round(u["pps.received_kpps"] / max(k["pps.received_kpps"], 1e-9), 3)
    summary["ratios"] = ratios
    print(json.dumps(summary, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": summary, "samples": samples, "args": vars(args)}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
