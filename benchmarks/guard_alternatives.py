"""Cheaper ways to enforce what the first-hop guard and the members-only VXLAN filter enforce, set up by
hand on a benchmark pair so `python -m benchmarks.netfilter_cost --variants ...` can price them.

These are measurement stand-ins, not product code (they use the `tc`, `nft` and `bridge` commands):

  tc-bpf          the three filters as tc clsact ingress programs (cls_bpf, direct action): on the
                  sender's container port (own MAC; IPv4 from its own IP; ARP as itself; IPv4/ARP/IPv6
                  only; unicast to a known MAC passes), on the receiver's VXLAN device (source MAC
                  living here or ARP claiming the gateway: drop), on the receiver's underlay device (UDP
                  to the VXLAN port only from members). Classic BPF, so the lower bound of what tc
                  costs: classic BPF cannot count drops by reason or keep a token bucket, the product
                  would need eBPF maps for both (touched only by the frames it drops or limits). This
                  kernel has no flower, matchall, gact or police, so cls_bpf is the only tc classifier
                  that can drop.
  tc-ebpf         the same checks as eBPF programs priced as a product would be (benchmarks/guard_ebpf.py):
                  hash-map lookups, per-reason counters, headers pulled into the linear part.
  tc-bpf+nft-vxlan  the guard as tc-bpf, the members-only filter as overlayd programmed it.
  nft-netdev      the same nftables rules, but in `netdev` family chains hooked to the ingress of the
                  sender's port and of the receiver's VXLAN device: no bridge hook, no dispatch on
                  the input interface's name. Members-only filter as programmed.
  bridge-locked   no tables; the sender's port `locked on`, `learning off`, with a static FDB entry
                  for its MAC: what the bridge itself can do (source MAC only: no IP, no ARP, no rate,
                  no counter).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from benchmarks import guard_ebpf

VARIANTS = ("tc-bpf", "tc-ebpf", "tc-bpf+nft-vxlan", "nft-netdev", "bridge-locked")
TC_SHOT, TC_OK = 2, 0
TABLE = "bench_guard"  # the nft-netdev variant's table


@dataclass(frozen=True)
class Path:
    """The objects a 64-byte frame crosses from the sending container to the receiving one."""

    sender_sandbox: str  # netns path
    sender_port: str  # the sending container's veth end on the bridge
    sender_mac: str
    sender_ip: str
    receiver_sandbox: str
    receiver_overlay_port: str  # the VXLAN device on the receiver's bridge
    receiver_host: str  # netns path of the receiving host (underlay device eth0)
    known_macs: tuple[str, ...]  # every endpoint's MAC and the gateway's
    claimed_macs: tuple[str, ...]  # MACs that live on the receiving host
    gateway_ip: str
    members: tuple[str, ...]  # VTEP addresses
    vxlan_port: int = 4789


def _run(netns: str, *argv: str, stdin: str | None = None, check: bool = True) -> None:
    result = subprocess.run(["nsenter", f"--net={netns}", *argv], input=stdin, capture_output=True, text=True)
    if check and result.returncode:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip()}")


# ---- classic BPF, assembled here (labels instead of jump offsets) ---------------------------------------

LDB, LDH, LDW, LDB_X, LDH_X, LDX_MSH = 0x30, 0x28, 0x20, 0x50, 0x48, 0xB1  # absolute / index loads
JEQ, JSET, RET = 0x15, 0x45, 0x06
Insn = tuple[int, ...] | tuple[int, int, int | str, int | str]


def assemble(program: list[Insn | str]) -> str:
    """tc's `bytecode` text for a program of (code, k[, jump-if-true, jump-if-false]) and label strings;
    a jump target is a label or a number of instructions to skip."""
    labels: dict[str, int] = {}
    flat: list[Insn] = []
    for item in program:
        if isinstance(item, str):
            labels[item] = len(flat)
        else:
            flat.append(item)

    def offset(pc: int, target: int | str) -> int:
        return labels[target] - pc - 1 if isinstance(target, str) else target

    out = []
    for pc, (code, k, *jumps) in enumerate(flat):
        jt, jf = (offset(pc, jumps[0]), offset(pc, jumps[1])) if jumps else (0, 0)
        out.append(f"{code} {jt} {jf} {k}")
    return f"{len(out)}," + ",".join(out)


def _mac(mac: str) -> tuple[int, int]:
    raw = bytes.fromhex(mac.replace(":", ""))
    return int.from_bytes(raw[:2], "big"), int.from_bytes(raw[2:], "big")


def _ip(ip: str) -> int:
    return int.from_bytes(bytes(int(x) for x in ip.split(".")), "big")


def _mac_is(offset: int, mac: str, yes: int | str, no: int | str) -> list[Insn | str]:
    """Jump to `yes` if the 6 bytes at `offset` are `mac`, else to `no` (both relative to the end)."""
    hi, lo = _mac(mac)
    return [(LDH, offset), (JEQ, hi, 0, no if isinstance(no, str) else no + 2), (LDW, offset + 2), (JEQ, lo, yes, no)]


def port_program(mac: str, ip: str, known: tuple[str, ...]) -> str:
    """A container port: its own source MAC; IPv4 from its own IP; ARP as itself (sender IP 0.0.0.0
    allowed); IPv4, ARP, IPv6 only. Broadcast, multicast and unknown unicast would meet a token bucket
    (eBPF); here they pass."""
    ipw = _ip(ip)
    program: list[Insn | str] = [
        *_mac_is(6, mac, 0, "drop"),
        (LDH, 12), (JEQ, 0x0800, 0, "not_ip"), (LDW, 26), (JEQ, ipw, "dst", "drop"),
        "not_ip", (JEQ, 0x0806, 0, "not_arp"), *_mac_is(22, mac, 0, "drop"),
        (LDW, 28), (JEQ, ipw, "dst", 0), (JEQ, 0, "dst", "drop"),
        "not_arp", (JEQ, 0x86DD, "dst", "drop"),
        "dst", (LDB, 0), (JSET, 1, "bum", 0),
    ]
    for other in known:  # an eBPF version would do one hash lookup instead
        program += _mac_is(0, other, "pass", 0)
    return assemble([*program, "bum", (RET, TC_OK), "pass", (RET, TC_OK), "drop", (RET, TC_SHOT)])


def overlay_program(claimed: tuple[str, ...], gateway_ip: str) -> str:
    """The VXLAN device: a frame whose source MAC lives on this host, or ARP claiming the gateway's
    address, is dropped; broadcast/multicast would meet a per-source bucket (eBPF); here it passes."""
    program: list[Insn | str] = []
    for mac in claimed:
        program += _mac_is(6, mac, "drop", 0)
    program += [(LDH, 12), (JEQ, 0x0806, 0, "pass"), (LDW, 28), (JEQ, _ip(gateway_ip), "drop", "pass"),
                "pass", (RET, TC_OK), "drop", (RET, TC_SHOT)]
    return assemble(program)


def vxlan_program(members: tuple[str, ...], port: int) -> str:
    """The underlay device: UDP to the VXLAN port only from a member (X = the IPv4 header's length)."""
    program: list[Insn | str] = [(LDH, 12), (JEQ, 0x0800, 0, "pass"), (LDB, 23), (JEQ, 17, 0, "pass"),
                                 (LDX_MSH, 14), (LDH_X, 16), (JEQ, port, 0, "pass"), (LDW, 26)]
    program += [(JEQ, _ip(member), "pass", 0) for member in members]
    return assemble([*program, (RET, TC_SHOT), "pass", (RET, TC_OK)])


def attach_tc_program(netns: str, dev: str, bytecode: str) -> None:
    _run(netns, "tc", "qdisc", "replace", "dev", dev, "clsact")
    _run(netns, "tc", "filter", "replace", "dev", dev, "ingress", "pref", "1", "handle", "1", "bpf", "da",
         "bytecode", bytecode)


# ---- the same nftables rules, hooked to the devices instead of the bridge --------------------------------


def netdev_port_table(path: Path) -> str:
    mac, ip = path.sender_mac, path.sender_ip
    return f"""table netdev {TABLE} {{
  set known {{ type ether_addr; elements = {{ {", ".join(path.known_macs)} }}; }}
  chain port {{
    type filter hook ingress device "{path.sender_port}" priority 0; policy accept;
    ether saddr {mac} ip saddr {ip} ether daddr @known accept
    ether saddr != {mac} counter drop
    ether type != {{ ip, arp, ip6 }} counter drop
    ip saddr != {ip} counter drop
    arp saddr ether != {mac} counter drop
    arp saddr ip != {{ {ip}, 0.0.0.0 }} counter drop
    ether daddr != @known limit rate over 1000/second burst 2000 packets counter drop
  }}
}}
"""


def netdev_overlay_table(path: Path) -> str:
    return f"""table netdev {TABLE} {{
  set known {{ type ether_addr; elements = {{ {", ".join(path.known_macs)} }}; }}
  set claimed {{ type ether_addr; elements = {{ {", ".join(path.claimed_macs)} }}; }}
  set remote_sources {{ type ether_addr; size 65535; flags dynamic,timeout; timeout 60s; }}
  chain overlay {{
    type filter hook ingress device "{path.receiver_overlay_port}" priority 0; policy accept;
    ether saddr @claimed counter drop
    arp saddr ip {path.gateway_ip} counter drop
    ether daddr != @known update @remote_sources {{ ether saddr limit rate over 1000/second burst 2000 packets }} counter drop
  }}
}}
"""


def apply(variant: str, path: Path, vxlan_filter: dict[str, str]) -> None:
    """Set `variant` up on `path` (after `clear`); vxlan_filter: netns -> the members-only table's nft text."""
    if variant in ("tc-bpf", "tc-bpf+nft-vxlan"):
        attach_tc_program(path.sender_sandbox, path.sender_port, port_program(path.sender_mac, path.sender_ip, path.known_macs))
        attach_tc_program(path.receiver_sandbox, path.receiver_overlay_port, overlay_program(path.claimed_macs, path.gateway_ip))
    if variant == "tc-bpf":
        attach_tc_program(path.receiver_host, "eth0", vxlan_program(path.members, path.vxlan_port))
    if variant == "tc-ebpf":
        programs = guard_ebpf.Programs(path.sender_mac, path.sender_ip, path.known_macs, path.claimed_macs,
                                       path.gateway_ip, path.members, path.vxlan_port)
        try:
            guard_ebpf.attach(path.sender_sandbox, path.sender_port, programs.port)
            guard_ebpf.attach(path.receiver_sandbox, path.receiver_overlay_port, programs.overlay)
            guard_ebpf.attach(path.receiver_host, "eth0", programs.vxlan)
        finally:
            programs.close()  # the attached programs hold their maps
    if variant == "nft-netdev":
        _run(path.sender_sandbox, "nft", "-f", "-", stdin=netdev_port_table(path))
        _run(path.receiver_sandbox, "nft", "-f", "-", stdin=netdev_overlay_table(path))
    if variant in ("tc-bpf+nft-vxlan", "nft-netdev"):
        for netns, text in vxlan_filter.items():
            _run(netns, "nft", "-f", "-", stdin=text)
    if variant == "bridge-locked":
        _run(path.sender_sandbox, "bridge", "fdb", "replace", path.sender_mac, "dev", path.sender_port, "master", "static")
        _run(path.sender_sandbox, "bridge", "link", "set", "dev", path.sender_port, "learning", "off", "locked", "on")


def clear(path: Path) -> None:
    """Undo every variant (the nftables tables overlayd programmed are the caller's business)."""
    for netns, dev in ((path.sender_sandbox, path.sender_port), (path.receiver_sandbox, path.receiver_overlay_port),
                       (path.receiver_host, "eth0")):
        _run(netns, "tc", "qdisc", "del", "dev", dev, "clsact", check=False)
    for netns in (path.sender_sandbox, path.receiver_sandbox):
        _run(netns, "nft", "delete", "table", "netdev", TABLE, check=False)
    _run(path.sender_sandbox, "bridge", "link", "set", "dev", path.sender_port, "locked", "off", "learning", "on")
    _run(path.sender_sandbox, "bridge", "fdb", "del", path.sender_mac, "dev", path.sender_port, "master", "static",
         check=False)
