"""Dataplane cases: TCP throughput (1 and 4 streams), 64-byte UDP frames per second, ping RTT, and
CPU per Gbit/s — every mode on its own two-host lab, alternating between modes repeat by repeat.

CPU accounting: during each TCP run we read /proc/stat (all CPUs: user+nice+system+irq+softirq+steal)
before and after. On veth/bridge/VXLAN paths the kernel does the forwarding in softirq context on
whichever CPU sent the packet, so it cannot be attributed to one process; whole-machine busy CPU is
the honest number. It includes iperf3's own work, which is the same in every mode, so differences
between modes are the overlay's cost. For the userspace dataplane we also report the overlayd
processes' own CPU (utime+stime from /proc/PID/stat) per Gbit/s.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from benchmarks.core import NotAvailable, Progress, Results, percentile
from benchmarks.topology import MODES, REFERENCE, Pair, _mac, build

CLK_TCK = os.sysconf("SC_CLK_TCK")
IPERF_PORT = 5201


def busy_cpu_seconds() -> float:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def process_cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                parts = f.read().rsplit(")", 1)[1].split()
            total += (int(parts[11]) + int(parts[12])) / CLK_TCK  # utime, stime (all threads)
        except (OSError, IndexError, ValueError):
            pass
    return total


def dataplane_pids(pair: Pair, names: tuple[bytes, ...] = (b"overlaynet.dataplane.fastpathd", b"overlaynet.daemon")
                   ) -> list[int]:
    """overlayd and fastpathd processes of the pair's two hosts (or those of `names`): every process
    whose command line names one of them and whose network namespace is one of the lab's host
    namespaces."""
    hosts = set()
    for host in pair.lab.hosts.values():
        try:
            hosts.add(os.stat(f"/run/netns/{host.netns}").st_ino)
        except OSError:
            pass
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
            if not any(name in cmdline for name in names):
                continue
            named = any(f"/run/netns/{h.netns}".encode() + b"\0" in cmdline for h in pair.lab.hosts.values())
            if named or os.stat(f"/proc/{entry}/ns/net").st_ino in hosts:
                found.append(int(entry))
        except OSError:
            continue
    return found


def tcp(pair: Pair, streams: int, duration: float) -> dict[str, float]:
    """iperf3 from src to dst; Gbit/s received, and CPU seconds per Gbit transferred."""
    server = pair.lab.popen(pair.dst_ns, ["iperf3", "-s", "-1", "-B", pair.dst_ip, "-p", str(IPERF_PORT)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # wait for the listener instead of sleeping
            ss = pair.lab.run(pair.dst_ns, ["ss", "-ltnH", f"sport = :{IPERF_PORT}"]).stdout
            if ss.strip():
                break
            time.sleep(0.02)
        pids = dataplane_pids(pair) if pair.daemon_pids else []
        cpu0, dp0, t0 = busy_cpu_seconds(), process_cpu_seconds(pids), time.monotonic()
        result = pair.lab.run(pair.src_ns, ["iperf3", "-c", pair.dst_ip, "-p", str(IPERF_PORT), "-J",
                                            "-t", f"{duration:g}", "-P", str(streams)],
                              timeout=duration + 30)
        wall = time.monotonic() - t0
        cpu, dp = busy_cpu_seconds() - cpu0, process_cpu_seconds(pids) - dp0
    finally:
        server.kill()
        server.wait()
    try:
        data = json.loads(result.stdout)
    except ValueError:
        raise RuntimeError(f"iperf3 gave no JSON: {result.stderr.strip()[-200:]}") from None
    if "error" in data:
        raise RuntimeError(f"iperf3: {data['error']}")
    end = data["end"]
    gbit_s = end["sum_received"]["bits_per_second"] / 1e9
    gbits = gbit_s * end["sum_received"]["seconds"]
    out = {"gbit_s": gbit_s, "cpu_s_per_gbit": cpu / gbits if gbits else float("nan"),
           "cores_busy": cpu / wall, "retransmits": float(end.get("sum_sent", {}).get("retransmits", 0))}
    if pair.daemon_pids:
        out["daemon_cpu_s_per_gbit"] = dp / gbits if gbits else float("nan")
    return out


def _rx_packets(pair: Pair, ns: str, dev: str, what: str = "rx_packets") -> int:
    """A device counter read from /proc/net/dev inside `ns` (/sys/class/net would show the root netns)."""
    out = pair.lab.run(ns, ["cat", "/proc/net/dev"], check=True).stdout
    for line in out.splitlines():
        name, _, counters = line.partition(":")
        if name.strip() == dev:
            values = counters.split()
            return int(values[1] if what == "rx_packets" else values[9])
    raise RuntimeError(f"no device {dev} in {ns}")


def udp_datagrams_in(snmp: str) -> int:
    """Datagrams that reached the UDP layer, from a namespace's /proc/net/snmp: InDatagrams + NoPorts
    + InErrors (the last includes a full socket buffer's drops). Counted after GSO segmentation, so a
    coalesced train counts as the datagrams it carries, unlike a device counter. (Also used by
    dataplane/tools/fp_measure.py: both count the same way.)"""
    rows = [line.split() for line in snmp.splitlines() if line.startswith("Udp:")]
    values = dict(zip(rows[0][1:], rows[1][1:], strict=True))
    return int(values["InDatagrams"]) + int(values["NoPorts"]) + int(values["InErrors"])


def _udp_datagrams(pair: Pair, ns: str) -> int:
    return udp_datagrams_in(pair.lab.run(ns, ["cat", "/proc/net/snmp"], check=True).stdout)


# Binds port 9 and never reads: every datagram is counted at the UDP layer (delivered, or dropped at
# the full socket buffer) and none is answered with an ICMP port-unreachable error.
UDP_SINK = ("import socket, sys, time\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "s.bind((sys.argv[1], 9))\n"
            "print('ready', flush=True)\n"
            "time.sleep(86400)\n")


def trafgen_config(pair: Pair, flows: int = 1) -> str:
    """One 64-byte Ethernet frame (60 bytes + 4 FCS): 14 Ethernet + 20 IPv4 + 8 UDP + 18 padding.
    One flow: a fixed source port (trafgen's per-packet randomisation costs it a third of its rate);
    more: the source port counts up frame by frame (dinc), so the flows interleave round-robin."""
    src_mac = _mac(pair.src_ns, pair.src_dev)
    sport = "4000" if flows <= 1 else f"dinc(4000, {4000 + flows - 1})"
    return (f"{{ eth(da={pair.dst_mac}, sa={src_mac}, type=0x0800), "
            f"ipv4(saddr={pair.src_ip}, daddr={pair.dst_ip}, ttl=64, df), "
            f"udp(sport={sport}, dport=9), fill(0x00, 18) }}\n")


def pps(pair: Pair, duration: float, flows: int = 1, warmup: float = 0.5) -> dict[str, float]:
    """trafgen sends 64-byte frames as fast as it can on every CPU; we count the datagrams that reach
    the UDP layer in dst_ns (a sink socket holds port 9)."""
    with tempfile.NamedTemporaryFile("w", prefix="btrafgen", suffix=".cfg", delete=False) as f:
        f.write(trafgen_config(pair, flows))
        conf = f.name
    sink = pair.lab.popen(pair.dst_ns, [sys.executable, "-c", UDP_SINK, pair.dst_ip],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if sink.stdout is None or sink.stdout.readline().strip() != "ready":
        sink.kill()
        sink.wait()
        os.unlink(conf)
        raise RuntimeError(f"UDP sink in {pair.dst_ns} did not start: {sink.stderr.read().strip()[-200:] if sink.stderr else ''}")
    gen = pair.lab.popen(pair.src_ns, ["trafgen", "--dev", pair.src_dev, "--conf", conf, "--cpus", str(os.cpu_count() or 1),
                                       "--no-sock-mem"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        time.sleep(warmup)  # ramp-up is not steady state: count only after it
        if gen.poll() is not None:
            raise RuntimeError(f"trafgen exited: {gen.stderr.read().decode(errors='replace').strip()[-200:]}")
        rx0, tx0 = _udp_datagrams(pair, pair.dst_ns), _rx_packets(pair, pair.src_ns, pair.src_dev, "tx_packets")
        t0 = time.monotonic()
        time.sleep(duration)
        rx1, tx1 = _udp_datagrams(pair, pair.dst_ns), _rx_packets(pair, pair.src_ns, pair.src_dev, "tx_packets")
        wall = time.monotonic() - t0
    finally:
        stop_group(gen)
        sink.kill()
        sink.wait()
        os.unlink(conf)
    return {"delivered_pps": (rx1 - rx0) / wall, "offered_pps": (tx1 - tx0) / wall}


def stop_group(proc: subprocess.Popen[Any]) -> None:
    """trafgen forks one worker per CPU and only the parent hears a signal sent to it: signal the
    whole process group (its own session), as ^C in a terminal would."""
    for sig, wait in ((signal.SIGINT, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue
    try:  # the workers may outlive the parent by a moment
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


PING_RE = re.compile(r"time=([0-9.]+) ms")


def rtt(pair: Pair, count: int, interval: float = 0.005) -> list[float]:
    """Round-trip times in ms of `count` pings (one every `interval` s, 56-byte payload), idle path."""
    result = pair.lab.run(pair.src_ns, ["ping", "-n", "-c", str(count), "-i", f"{interval:g}", "-W", "1",
                                        pair.dst_ip], timeout=count * interval + 30)
    times = [float(m) for m in PING_RE.findall(result.stdout)]
    if not times:
        raise RuntimeError(f"ping got no answers: {result.stdout.strip()[-200:]} {result.stderr.strip()[-200:]}")
    return times


# ---- the case runner ---------------------------------------------------------------------------------


def step_cost(duration: float, pings: int) -> float:
    """Rough seconds one repeat of one mode takes (two TCP runs, two pps runs, the pings), for the ETA."""
    return 4 * duration + 0.02 * pings + 4


def plan(progress: Progress, modes: list[str], mtus: list[int], repeats: int, duration: float, pings: int) -> None:
    progress.plan(len(mtus) * repeats * len(modes), step_cost(duration, pings))


def idle_fastpathd(results: Results, progress: Callable[[str], None], pair: Pair, seconds: float) -> None:
    """fastpathd's CPU with no traffic, right after the repeats stopped: the adaptive polling must have
    gone back to sleeping (% of one core per fastpathd, both hosts)."""
    pids = dataplane_pids(pair, (b"overlaynet.dataplane.fastpathd",))
    if not pids:
        results.mark("idle", IDLE_FASTPATHD, pair.mode, "cpu", "% of a core", "failed", "no fastpathd found", "lower")
        return
    time.sleep(1.0)  # the last repeat's queues drain
    before, t0 = [process_cpu_seconds([p]) for p in pids], time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - t0
    for pid, b in zip(pids, before, strict=True):
        results.add("idle", IDLE_FASTPATHD, pair.mode, "cpu", "% of a core", 100 * (process_cpu_seconds([pid]) - b) / wall,
                    "lower")
    fig = results.figures[("idle", IDLE_FASTPATHD, pair.mode, "cpu")]
    progress(f"dataplane: fastpathd with no traffic for {seconds:g}s: {max(fig.values):.2f}% of a core (max of "
             f"{len(pids)})")


IDLE_FASTPATHD = "fastpathd, no traffic"


def run(results: Results, progress: Progress, prefix: str, modes: list[str], mtus: list[int],
        repeats: int, duration: float, pings: int, register: Callable[[Any], None], idle_seconds: float = 0.0
        ) -> None:
    for underlay_mtu in mtus:
        inner = underlay_mtu - 50
        tag = f"mtu{inner}"
        pairs: dict[str, Pair] = {}
        try:
            for i, mode in enumerate(modes):
                progress(f"dataplane {tag}: building {mode}")
                try:
                    pair = build(mode, f"{prefix}{underlay_mtu // 1000}{i}", underlay_mtu)
                except NotAvailable as e:
                    progress(f"dataplane {tag}: {mode} not available: {e}")
                    _mark_all(results, tag, mode, "not available", str(e))
                    continue
                except Exception as e:
                    progress(f"dataplane {tag}: {mode} failed to build: {e}")
                    _mark_all(results, tag, mode, "failed", f"setup: {type(e).__name__}: {e}")
                    continue
                pairs[mode] = pair
                register(pair)
            for rep in range(1, repeats + 1):
                for pair in pairs.values():
                    _one_repeat(results, progress, pair, tag, rep, repeats, duration, pings)
                    progress.step_done(step_cost(duration, pings))
            for _ in range(repeats * (len(modes) - len(pairs))):  # modes that could not be built
                progress.step_done(step_cost(duration, pings))
            if idle_seconds and underlay_mtu == mtus[0] and "overlaynet-userspace" in pairs:
                idle_fastpathd(results, progress, pairs["overlaynet-userspace"], idle_seconds)
        finally:
            for pair in pairs.values():
                pair.close()


CASES = [  # (case name, metric, unit, better)
    ("tcp-1", "throughput", "Gbit/s", "higher"),
    ("tcp-4", "throughput", "Gbit/s", "higher"),
    ("tcp-1", "cpu per Gbit", "CPU s/Gbit", "lower"),
    ("udp-64B", "delivered", "kpps", "higher"),
    ("udp-64B-16flows", "delivered", "kpps", "higher"),
    ("ping", "rtt p50", "µs", "lower"),
    ("ping", "rtt p99", "µs", "lower"),
]


def _mark_all(results: Results, tag: str, mode: str, status: str, reason: str) -> None:
    for case, metric, unit, better in CASES:
        results.mark("dataplane", f"{case} {tag}", mode, metric, unit, status, reason, better)


def _one_repeat(results: Results, progress: Callable[[str], None], pair: Pair, tag: str, rep: int,
                repeats: int, duration: float, pings: int) -> None:
    mode, step = pair.mode, f"dataplane {tag} {pair.mode} [{rep}/{repeats}]"
    for streams in (1, 4):
        case = f"tcp-{streams} {tag}"
        try:
            r = tcp(pair, streams, duration)
        except Exception as e:
            results.mark("dataplane", case, mode, "throughput", "Gbit/s", "failed", str(e))
            progress(f"{step} tcp-{streams}: failed: {e}")
            continue
        results.add("dataplane", case, mode, "throughput", "Gbit/s", r["gbit_s"], retransmits=r["retransmits"])
        extra = ""
        if streams == 1:
            results.add("dataplane", case, mode, "cpu per Gbit", "CPU s/Gbit", r["cpu_s_per_gbit"], "lower",
                        cores_busy=r["cores_busy"])
            if "daemon_cpu_s_per_gbit" in r:
                results.add("dataplane", case, mode, "daemon cpu per Gbit", "CPU s/Gbit",
                            r["daemon_cpu_s_per_gbit"], "lower")
            extra = f", {r['cpu_s_per_gbit']:.3f} CPU s/Gbit"
        progress(f"{step} tcp-{streams}: {r['gbit_s']:.2f} Gbit/s{extra}")
    for flows, name in ((1, "udp-64B"), (16, "udp-64B-16flows")):
        case = f"{name} {tag}"
        try:
            r = pps(pair, duration, flows)
            results.add("dataplane", case, mode, "delivered", "kpps", r["delivered_pps"] / 1e3,
                        offered_kpps=r["offered_pps"] / 1e3)
            progress(f"{step} {name}: {r['delivered_pps'] / 1e3:.0f} kpps delivered "
                     f"({r['offered_pps'] / 1e3:.0f} kpps offered)")
        except Exception as e:
            results.mark("dataplane", case, mode, "delivered", "kpps", "failed", str(e))
            progress(f"{step} {name}: failed: {e}")
    case = f"ping {tag}"
    try:
        times = rtt(pair, pings)
        us = [t * 1000 for t in times]
        results.add("dataplane", case, mode, "rtt p50", "µs", percentile(us, 50), "lower")
        results.add("dataplane", case, mode, "rtt p99", "µs", percentile(us, 99), "lower",
                    lost=pings - len(times))
        results.samples.setdefault("rtt_us", {}).setdefault(tag, {}).setdefault(mode, []).extend(us)
        progress(f"{step} ping: p50 {percentile(us, 50):.0f} µs, p99 {percentile(us, 99):.0f} µs")
    except Exception as e:
        results.mark("dataplane", case, mode, "rtt p50", "µs", "failed", str(e), "lower")
        results.mark("dataplane", case, mode, "rtt p99", "µs", "failed", str(e), "lower")
        progress(f"{step} ping: failed: {e}")


# An encrypted mode and the same mode in the clear: their ratio is what encryption costs.
PLAIN_OF = {"overlaynet-userspace-encrypted": "overlaynet-userspace", "kernel-vxlan-esp": "kernel-vxlan"}


def ratios(results: Results) -> None:
    """Each mode's median over the reference's median, same case, same run; an encrypted mode's also
    over its plain twin's."""
    for fig in list(results.of_group("dataplane")):
        ref = results.figures.get(("dataplane", fig.case, REFERENCE, fig.metric))
        if ref is not None and ref.median and fig.median is not None:
            fig.extra["ratio_to_reference"] = fig.median / ref.median
        plain = results.figures.get(("dataplane", fig.case, PLAIN_OF.get(fig.mode, ""), fig.metric))
        if plain is not None and plain.median and fig.median is not None:
            fig.extra["ratio_to_plain"] = fig.median / plain.median


__all__ = ["MODES", "run"]
