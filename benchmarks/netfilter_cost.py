"""python -m benchmarks.netfilter_cost: what kernel mode's nftables tables (the first-hop guard and the
members-only VXLAN filter, docs/security.md) cost per 64-byte packet.

pps alone cannot show it on a shared 2-core machine: other work moves it by more than the tables
cost. So this counts CPU per packet with `perf record -a -e cpu-clock` while trafgen sends 64-byte
frames over the benchmark's overlaynet-kernel pair: the samples of trafgen and ksoftirqd (the whole
path runs in their softirq context) per delivered packet, and of those the samples in netfilter.
Rounds alternate between the tables as overlayd programmed them and no tables at all (both overlayds
stopped meanwhile, so nothing puts them back); the tables are saved with `nft list table` and
restored with `nft -f`. Needs root, trafgen and perf (linux-perf).

`--variants` adds cheaper equivalents of the tables to the rotation (benchmarks/guard_alternatives.py:
tc programs, netdev-family chains, the bridge's locked ports) and prints, for each, the median of
its per-round difference from "none" (the rounds' spread moves all variants of a round together).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

from pyroute2 import IPRoute

from benchmarks import guard_alternatives
from benchmarks.dataplane import pps
from benchmarks.topology import VNI, Pair, _mac, build
from overlaynet.kernel import list_sandboxes
from overlaynet.kernel.names import HOST_VETH_PREFIX
from overlaynet.model import gateway_mac

SAMPLE_HZ = 4000
PATH_COMMS = ("trafgen", "ksoftirqd")
NETFILTER = ("nft_", "__nft", "nf_hook", "nf_tables", "jhash")
TC = ("tc_run", "tcx_", "__tcf_", "tcf_", "cls_bpf", "bpf_prog_", "0xffffffff",  # JIT-ed classic BPF
      "htab_", "__htab_", "lookup_nulls_elem_raw", "bpf_skb_pull_data", "skb_ensure_writable")  # eBPF maps, pulls
TABLES = (("bridge", "overlaynet_ports"), ("ip", "overlaynet_vxlan"))
VARIANTS = ("nft", "none", *guard_alternatives.VARIANTS)


def _nft(netns: str, *args: str, stdin: str | None = None) -> str:
    return subprocess.run(["nsenter", f"--net={netns}", "nft", *args], input=stdin, capture_output=True,
                          text=True, check=True).stdout


def _namespaces(pair: Pair) -> list[str]:
    hosts = list(pair.lab.hosts.values())
    return [f"/run/netns/{h.netns}" for h in hosts] + [s for h in hosts for s in list_sandboxes(h.state_dir)]


def _saved(namespaces: list[str]) -> dict[str, str]:
    """Each namespace's overlaynet tables as nft text."""
    out: dict[str, str] = {}
    for ns in namespaces:
        tables = _nft(ns, "list", "tables").split("\n")
        out[ns] = "".join(_nft(ns, "list", "table", family, name) for family, name in TABLES
                          if f"table {family} {name}" in tables)
    return out


def _set_tables(saved: dict[str, str], present: bool) -> None:
    for ns, text in saved.items():
        for family, name in TABLES:
            if f"table {family} {name} " in text:
                subprocess.run(["nsenter", f"--net={ns}", "nft", "delete", "table", family, name], capture_output=True)
        if present and text:
            _nft(ns, "-f", "-", stdin=text)


def _vxlan_filters(saved: dict[str, str]) -> dict[str, str]:
    """netns -> the members-only table alone, as nft text."""
    marker = "table ip overlaynet_vxlan"
    return {ns: text[text.index(marker):] for ns, text in saved.items() if marker in text}


def _path(pair: Pair) -> guard_alternatives.Path:
    a, b = pair.lab.hosts.values()
    sandbox_a, sandbox_b = list_sandboxes(a.state_dir)[0], list_sandboxes(b.state_dir)[0]
    with IPRoute(netns=sandbox_a) as ipr:
        port = next(name for link in ipr.get_links() if (name := link.get_attr("IFLA_IFNAME")).startswith(HOST_VETH_PREFIX))
    src_mac = _mac(pair.src_ns, pair.src_dev)
    gateway = pair.src_ip.rsplit(".", 1)[0] + ".1"
    return guard_alternatives.Path(
        sender_sandbox=sandbox_a, sender_port=port, sender_mac=src_mac, sender_ip=pair.src_ip,
        receiver_sandbox=sandbox_b, receiver_overlay_port=f"ovx{VNI}", receiver_host=f"/run/netns/{b.netns}",
        known_macs=(pair.dst_mac, src_mac, gateway_mac(VNI)), claimed_macs=(pair.dst_mac, gateway_mac(VNI)),
        gateway_ip=gateway, members=(a.address, b.address))


class NoPackets(Exception):
    """Nothing reached the receiving container during a measurement."""


def _per_packet(pair: Pair, duration: float, out: str) -> tuple[float, float, float]:
    """(µs of CPU on the path, µs of it in netfilter, µs of it in tc) per delivered packet."""
    window = duration - 0.2

    def record() -> None:
        time.sleep(0.4)  # after pps()'s warm-up: inside its counting window
        subprocess.run(["perf", "record", "-a", "-e", "cpu-clock", "-F", str(SAMPLE_HZ), "-o", out, "--",
                        "sleep", f"{window:g}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)

    recorder = threading.Thread(target=record)
    recorder.start()
    delivered = pps(pair, duration, warmup=0.3)["delivered_pps"]
    recorder.join()
    if not delivered:
        raise NoPackets()
    report = subprocess.run(["perf", "report", "-i", out, "--sort", "comm,sym", "-n", "--stdio"],
                            capture_output=True, text=True, check=True).stdout
    path = netfilter = tc = 0
    for line in report.splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[0].endswith("%") and fields[2].startswith(PATH_COMMS):
            path += int(fields[1])
            if fields[4].startswith(NETFILTER) or "hash_lookup" in fields[4]:
                netfilter += int(fields[1])
            elif fields[4].startswith(TC):
                tc += int(fields[1])
    us_per_sample = 1e6 / SAMPLE_HZ / (delivered * window)
    return path * us_per_sample, netfilter * us_per_sample, tc * us_per_sample


def _summary(results: dict[str, list[tuple[float, float, float]]]) -> None:
    base = results.get("none")
    for variant, rows in results.items():
        line = (f"median {variant:16s}: {statistics.median(r[0] for r in rows):5.2f} µs/packet, "
                f"{statistics.median(r[1] for r in rows):5.3f} µs in netfilter, "
                f"{statistics.median(r[2] for r in rows):5.3f} µs in tc")
        if base and variant != "none" and len(rows) == len(base):
            diffs = [row[0] - none[0] for row, none in zip(rows, base, strict=True)]
            quartiles = statistics.quantiles(diffs, n=4) if len(diffs) > 1 else diffs * 3
            line += f"; over none: median {statistics.median(diffs):+.2f} µs (quartiles {quartiles[0]:+.2f} .. {quartiles[2]:+.2f})"
        print(line)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.netfilter_cost", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=4, help="rounds, each measuring every variant once (default 4)")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per measurement (default 2)")
    parser.add_argument("--variants", default="nft,none",
                        help=f"what each round measures, in order (default nft,none); any of {', '.join(VARIANTS)}")
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        print(f"benchmarks.netfilter_cost: unknown variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}",
              file=sys.stderr)
        return 2
    missing = [tool for tool in ("perf", "trafgen", "nft", "nsenter", "tc", "bridge") if shutil.which(tool) is None]
    if os.geteuid() != 0 or missing:
        print("benchmarks.netfilter_cost: needs root and " + (", ".join(missing) or "nothing else")
              + " (apt-get install linux-perf netsniff-ng nftables)", file=sys.stderr)
        return 2
    pair = build("overlaynet-kernel", "n" + secrets.token_hex(2), 1500)
    out = f"/tmp/{pair.lab.prefix}-perf.data"
    results: dict[str, list[tuple[float, float, float]]] = {}
    try:
        for host in pair.lab.hosts.values():
            assert host.process is not None
            os.kill(host.process.pid, signal.SIGSTOP)
        saved = _saved(_namespaces(pair))
        path_objects = _path(pair)
        for rnd in range(1, args.rounds + 1):
            for variant in variants:
                guard_alternatives.clear(path_objects)
                _set_tables(saved, variant == "nft")
                if variant in guard_alternatives.VARIANTS:
                    guard_alternatives.apply(variant, path_objects, _vxlan_filters(saved))
                try:
                    path, netfilter, tc = _per_packet(pair, args.duration, out)
                except NoPackets:  # seen once on a loaded machine, never twice in a row: measure again
                    print(f"round {rnd} {variant}: nothing delivered, measuring again", flush=True)
                    path, netfilter, tc = _per_packet(pair, args.duration, out)
                results.setdefault(variant, []).append((path, netfilter, tc))
                print(f"round {rnd} {variant:16s}: {path:5.2f} µs/packet on the path, {netfilter:5.3f} µs in "
                      f"netfilter, {tc:5.3f} µs in tc", flush=True)
        guard_alternatives.clear(path_objects)
        _set_tables(saved, True)
    finally:
        for host in pair.lab.hosts.values():
            if host.process is not None:
                os.kill(host.process.pid, signal.SIGCONT)
        pair.close()
        for leftover in (out, out + ".old"):  # perf record keeps the previous recording as .old
            if os.path.exists(leftover):
                os.unlink(leftover)
    _summary(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
