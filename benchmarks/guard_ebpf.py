"""The `tc-ebpf` stand-in of benchmarks/guard_alternatives.py: the guard's and the members-only
filter's checks as eBPF tc programs, priced the way a product version would have to work: hash-map
lookups for the known MACs, the MACs living on the receiving host and the members, per-reason drop
counters in an array map, and the headers pulled into the linear part when they sit in page
fragments (trafgen's frames do). Still missing against the product: the token buckets, touched
only by broadcast, multicast and unknown unicast.

Measurement code: the programs are assembled here and loaded with bpf(2) through ctypes (no
compiler on the machine; x86-64 and arm64 syscall numbers), and attached with pyroute2.
"""

from __future__ import annotations

import ctypes
import os
import struct

from pyroute2 import IPRoute

NR_BPF = {"x86_64": 321, "aarch64": 280}.get(os.uname().machine, 321)
MAP_CREATE, MAP_LOOKUP, MAP_UPDATE, PROG_LOAD = 0, 1, 2, 5
HASH, ARRAY = 1, 2
SCHED_CLS = 3
REASONS = ("mac_spoof", "ip_spoof", "arp_spoof", "ethertype", "overlay_spoof", "non_member")
TC_OK, TC_SHOT = 0, 2

_libc = ctypes.CDLL(None, use_errno=True)


def _bpf(cmd: int, attr: bytes) -> int:
    buf = ctypes.create_string_buffer(attr, 128)
    result = _libc.syscall(NR_BPF, cmd, buf, 128)
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(result)


def _map(kind: int, key_size: int, value_size: int, entries: int) -> int:
    return _bpf(MAP_CREATE, struct.pack("IIIII", kind, key_size, value_size, entries, 0))


def _map_op(cmd: int, fd: int, key: bytes, value: ctypes.Array[ctypes.c_char]) -> None:
    k = ctypes.create_string_buffer(key, len(key))
    _bpf(cmd, struct.pack("IIQQQ", fd, 0, ctypes.addressof(k), ctypes.addressof(value), 0))


def _load(insns: bytes) -> int:
    license_, code = ctypes.create_string_buffer(b"GPL"), ctypes.create_string_buffer(insns, len(insns))
    log = ctypes.create_string_buffer(65536)
    attr = struct.pack("IIQQIIQII16s", SCHED_CLS, len(insns) // 8, ctypes.addressof(code),
                       ctypes.addressof(license_), 1, len(log), ctypes.addressof(log), 0, 0, b"bench_guard")
    try:
        return _bpf(PROG_LOAD, attr)
    except OSError as e:
        raise OSError(f"the verifier refused a stand-in ({e}): {log.value.decode(errors='replace')[-1500:]}") from None


# ---- an assembler with labels -------------------------------------------------------------------------

LDXW, LDXH, LDXB = 0x61, 0x69, 0x71
STW, STH, STW_IMM, STDW_IMM = 0x63, 0x6B, 0x62, 0x7A
MOV_IMM, MOV_REG, ADD_IMM = 0xB7, 0xBF, 0x07
JA, JGT_REG, JEQ_IMM, JNE_IMM, JSET_IMM = 0x05, 0x2D, 0x15, 0x55, 0x45
JEQ32, JNE32 = 0x16, 0x56
CALL, EXIT, ATOMIC_ADD_DW, LD_IMM64 = 0x85, 0x95, 0xDB, 0x18
MAP_LOOKUP_ELEM, SKB_PULL_DATA = 1, 39  # helpers
SKB_DATA, SKB_DATA_END = 76, 80  # offsets in struct __sk_buff


class _Asm:
    def __init__(self) -> None:
        self.items: list[str | tuple[int, int, int, int, int, str | None]] = []

    def op(self, code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0, to: str | None = None) -> None:
        self.items.append((code, dst, src, off, imm, to))

    def label(self, name: str) -> None:
        self.items.append(name)

    def map_fd(self, dst: int, fd: int) -> None:
        self.op(LD_IMM64, dst, 1, 0, fd)  # src 1: BPF_PSEUDO_MAP_FD
        self.op(0)

    def ok(self) -> None:
        self.op(MOV_IMM, 0, imm=TC_OK)
        self.op(EXIT)

    def code(self) -> bytes:
        labels, pc = {}, 0
        for item in self.items:
            if isinstance(item, str):
                labels[item] = pc
            else:
                pc += 1
        out, pc = b"", 0
        for item in self.items:
            if isinstance(item, str):
                continue
            code, dst, src, off, imm, to = item
            out += struct.pack("<BBhi", code, (src << 4) | dst, labels[to] - pc - 1 if to else off, imm)
            pc += 1
        return out


def _le16(raw: bytes) -> int:
    return int(struct.unpack("<H", raw)[0])


def _le32(raw: bytes) -> int:
    return int(struct.unpack("<i", raw)[0])


def _mac(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def _ip(ip: str) -> bytes:
    return bytes(int(x) for x in ip.split("."))


def _headers(a: _Asm, need: int) -> None:
    """r6 = the skb, r2 = its data with `need` bytes readable (pulled in if they are not)."""
    a.op(MOV_REG, 6, 1)
    for pulled in (False, True):
        if pulled:
            a.label("pull")
            a.op(MOV_REG, 1, 6)
            a.op(MOV_IMM, 2, imm=need)
            a.op(CALL, imm=SKB_PULL_DATA)
            a.op(JNE_IMM, 0, imm=0, to="short")
        a.op(LDXW, 2, 6, SKB_DATA)
        a.op(LDXW, 3, 6, SKB_DATA_END)
        a.op(MOV_REG, 4, 2)
        a.op(ADD_IMM, 4, imm=need)
        a.op(JGT_REG, 4, 3, to="short" if pulled else "pull")
        a.op(JA, to="checks")
    a.label("checks")


def _lookup_mac(a: _Asm, fd: int, offset: int) -> None:
    """r0 = the entry of the 6 bytes at packet offset `offset` (zero-padded to 8) in map `fd`, or 0."""
    a.op(STDW_IMM, 10, 0, -8, 0)
    a.op(LDXW, 5, 2, offset)
    a.op(STW, 10, 5, -8)
    a.op(LDXH, 5, 2, offset + 4)
    a.op(STH, 10, 5, -4)
    a.map_fd(1, fd)
    a.op(MOV_REG, 2, 10)
    a.op(ADD_IMM, 2, imm=-8)
    a.op(CALL, imm=MAP_LOOKUP_ELEM)


def _drops(a: _Asm, counters: int, reasons: tuple[str, ...]) -> None:
    """One label per reason: count it in `counters`, drop the frame."""
    for reason in reasons:
        a.label(reason)
        a.op(STW_IMM, 10, 0, -12, REASONS.index(reason))
        a.op(JA, to="count")
    a.label("count")
    a.map_fd(1, counters)
    a.op(MOV_REG, 2, 10)
    a.op(ADD_IMM, 2, imm=-12)
    a.op(CALL, imm=MAP_LOOKUP_ELEM)
    a.op(JEQ_IMM, 0, imm=0, to="shot")
    a.op(MOV_IMM, 1, imm=1)
    a.op(ATOMIC_ADD_DW, 0, 1, 0, 0)
    a.label("shot")
    a.op(MOV_IMM, 0, imm=TC_SHOT)
    a.op(EXIT)


def port_program(mac: str, ip: str, known: int, counters: int) -> bytes:
    m, own = _mac(mac), _le32(_ip(ip))
    a = _Asm()
    _headers(a, 42)
    a.op(LDXH, 5, 2, 6)
    a.op(JNE32, 5, imm=_le16(m[:2]), to="mac_spoof")
    a.op(LDXW, 5, 2, 8)
    a.op(JNE32, 5, imm=_le32(m[2:]), to="mac_spoof")
    a.op(LDXH, 5, 2, 12)
    a.op(JEQ32, 5, imm=_le16(b"\x08\x00"), to="ipv4")
    a.op(JEQ32, 5, imm=_le16(b"\x08\x06"), to="arp")
    a.op(JEQ32, 5, imm=_le16(b"\x86\xdd"), to="destination")
    a.op(JA, to="ethertype")
    a.label("ipv4")
    a.op(LDXW, 5, 2, 26)
    a.op(JNE32, 5, imm=own, to="ip_spoof")
    a.op(JA, to="destination")
    a.label("arp")
    a.op(LDXH, 5, 2, 22)
    a.op(JNE32, 5, imm=_le16(m[:2]), to="arp_spoof")
    a.op(LDXW, 5, 2, 24)
    a.op(JNE32, 5, imm=_le32(m[2:]), to="arp_spoof")
    a.op(LDXW, 5, 2, 28)
    a.op(JEQ32, 5, imm=own, to="destination")
    a.op(JNE32, 5, imm=0, to="arp_spoof")
    a.label("destination")
    a.op(LDXB, 5, 2, 0)
    a.op(JSET_IMM, 5, imm=1, to="flooded")
    _lookup_mac(a, known, 0)
    a.op(JEQ_IMM, 0, imm=0, to="flooded")
    a.ok()
    a.label("flooded")  # the product's token bucket goes here
    a.ok()
    a.label("short")
    a.op(JA, to="shot")
    _drops(a, counters, ("mac_spoof", "ip_spoof", "arp_spoof", "ethertype"))
    return a.code()


def overlay_program(claimed: int, gateway_ip: str, counters: int) -> bytes:
    a = _Asm()
    _headers(a, 42)
    a.op(LDXH, 5, 2, 12)
    a.op(JNE32, 5, imm=_le16(b"\x08\x06"), to="source")
    a.op(LDXW, 5, 2, 28)
    a.op(JEQ32, 5, imm=_le32(_ip(gateway_ip)), to="overlay_spoof")
    a.label("source")
    _lookup_mac(a, claimed, 6)
    a.op(JNE_IMM, 0, imm=0, to="overlay_spoof")
    a.label("short")
    a.ok()
    _drops(a, counters, ("overlay_spoof",))
    return a.code()


def vxlan_program(members: int, port: int, counters: int) -> bytes:
    a = _Asm()
    _headers(a, 51)  # Ethernet, IPv4 without options, UDP, VXLAN, the inner destination's first byte
    a.op(LDXH, 5, 2, 12)
    a.op(JNE32, 5, imm=_le16(b"\x08\x00"), to="short")
    a.op(LDXB, 5, 2, 14)
    a.op(JNE32, 5, imm=0x45, to="short")  # IPv4 options: not in this stand-in
    a.op(LDXB, 5, 2, 23)
    a.op(JNE32, 5, imm=17, to="short")
    a.op(LDXH, 5, 2, 36)
    a.op(JNE32, 5, imm=_le16(struct.pack(">H", port)), to="short")
    a.op(LDXB, 7, 2, 50)  # the inner destination MAC's first byte (r7 outlives the call)
    a.op(LDXW, 5, 2, 26)
    a.op(STW, 10, 5, -4)
    a.map_fd(1, members)
    a.op(MOV_REG, 2, 10)
    a.op(ADD_IMM, 2, imm=-4)
    a.op(CALL, imm=MAP_LOOKUP_ELEM)
    a.op(JEQ_IMM, 0, imm=0, to="non_member")
    a.op(JSET_IMM, 7, imm=1, to="short")  # broadcast/multicast: the product's per-peer bucket goes here
    a.label("short")
    a.ok()
    _drops(a, counters, ("non_member",))
    return a.code()


class Programs:
    """Maps and programs for one path. Attached programs keep their maps alive: close() after attaching."""

    def __init__(self, sender_mac: str, sender_ip: str, known: tuple[str, ...], claimed: tuple[str, ...],
                 gateway_ip: str, members: tuple[str, ...], vxlan_port: int) -> None:
        self.fds: list[int] = []
        self.counters = self._new(_map(ARRAY, 4, 8, len(REASONS)))
        maps = {}
        for name, key_size, keys in (("known", 8, [_mac(m) + b"\0\0" for m in known]),
                                     ("claimed", 8, [_mac(m) + b"\0\0" for m in claimed]),
                                     ("members", 4, [_ip(m) for m in members])):
            maps[name] = self._new(_map(HASH, key_size, 1, 4096))
            for key in keys:
                _map_op(MAP_UPDATE, maps[name], key, ctypes.create_string_buffer(b"\1", 1))
        self.port = self._new(_load(port_program(sender_mac, sender_ip, maps["known"], self.counters)))
        self.overlay = self._new(_load(overlay_program(maps["claimed"], gateway_ip, self.counters)))
        self.vxlan = self._new(_load(vxlan_program(maps["members"], vxlan_port, self.counters)))

    def _new(self, fd: int) -> int:
        self.fds.append(fd)
        return fd

    def drops(self) -> dict[str, int]:
        out = {}
        for index, reason in enumerate(REASONS):
            value = ctypes.create_string_buffer(8)
            _map_op(MAP_LOOKUP, self.counters, struct.pack("I", index), value)
            out[reason] = int(struct.unpack("Q", value.raw)[0])
        return out

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []


def attach(netns: str, dev: str, prog_fd: int) -> None:
    """The program as the only direct-action filter of `dev`'s clsact ingress."""
    with IPRoute(netns=netns) as ipr:
        index = ipr.link_lookup(ifname=dev)[0]
        if not any(q.get_attr("TCA_KIND") == "clsact" for q in ipr.get_qdiscs(index)):
            ipr.tc("add", "clsact", index)
        ipr.tc("replace-filter", "bpf", index, ":1", fd=prog_fd, name="bench_guard", parent="ffff:fff2", classid=1,
               direct_action=True)
