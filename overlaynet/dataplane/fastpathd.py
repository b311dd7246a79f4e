"""fastpathd: the userspace VXLAN fast path as its own process, controlled over a unix socket.

    python -m overlaynet.dataplane.fastpathd --control /run/overlaynet/fastpath.sock \
        --bind 198.18.0.1 --port 4789 [--state /var/lib/overlaynet/fastpath.state] [--netns /run/netns/X]

It runs in the host network namespace (or the one given by --netns), owns the VXLAN UDP socket and
one TAP per overlay network (created inside that network's sandbox namespace), and forwards with C
threads. overlayd only programs it; when overlayd dies forwarding continues, and when it comes back
it reconnects, reads `networks` and re-syncs (every sync is a full, idempotent replacement).

With --state the desired configuration is written atomically after every change and the TAPs are
persistent: a restarted fastpathd re-attaches to them (bridge membership survives) and resumes.

Encrypted networks (docs/encryption.md) need --state: the file holds their SAs and, per SA, the
highest ESP sequence number reserved for sending (written and fsynced before the fast path may use
it), so a restarted fastpathd never sends a (key, IV) pair twice.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import ipaddress
import logging
import os
import signal
import sys
import time
from typing import Any

import msgpack

from overlaynet import __version__, logs, model
from overlaynet.atomic import write_atomic
from overlaynet.dataplane import esp_wire, protocol

log = logging.getLogger("fastpathd")

# Outbound ESP sequence numbers are reserved in blocks: the state file records the top of the block
# (fsynced) before the fast path may send with it, and a restart starts above it. A crash wastes at
# most one block of the 2**32 numbers of an SA.
SEQ_BLOCK = 1 << 21
MAX_SEQ = 2**32 - 1
SEQ_RECORDS = 4096  # reservations kept for SAs that are gone (re-added later, they still start above)
ESP_TICK_S = 0.05  # how often reservations are topped up (well before a block runs out at ~10 Mpps)
RX_SAVE_S = 1.0  # how often the highest received sequence numbers are recorded while they move


ESP_NET_COUNTERS = ("tx_esp", "rx_esp", "tx_drop_no_sa", "tx_drop_seq_exhausted", "tx_drop_seq_unreserved",
                    "rx_drop_cleartext", "rx_drop_replay", "rx_drop_auth", "rx_drop_esp_mismatch")


class RequestError(Exception):
    """A bad request: answered with one line, never a traceback."""


def _vni(args: dict[str, Any]) -> int:
    vni = args.get("vni")
    if not isinstance(vni, int) or isinstance(vni, bool) or not 0 <= vni <= model.MAX_VNI:
        raise RequestError(f"vni must be an integer 0..{model.MAX_VNI}, got {vni!r}")
    return vni


def _ipv4(value: Any, what: str) -> str:
    try:
        addr = ipaddress.IPv4Address(value)
    except (ValueError, TypeError):
        raise RequestError(f"{what} {value!r} is not an IPv4 address") from None
    if int(addr) == 0:
        raise RequestError(f"{what} 0.0.0.0 is not usable")
    return str(addr)


def _sa_fingerprint(sa: dict[str, Any]) -> str:
    """Names an SA in the state file's sequence records: its identity (dir, peer, SPI, key, salt)."""
    h = hashlib.sha256(b"overlaynet-esp-seq-v1\0" + sa["dir"].encode() + b"\0" + sa["peer"].encode() + b"\0"
                       + sa["spi"].to_bytes(4, "big") + sa["key"] + sa["salt"])
    return h.hexdigest()[:32]


def _sa(value: Any) -> dict[str, Any]:
    """One SA of sync_sas, checked (one line for anything wrong)."""
    if not isinstance(value, dict):
        raise RequestError("an SA is a map {peer, dir, epoch, spi, key, salt}")
    d, epoch, spi, key, salt = (value.get(k) for k in ("dir", "epoch", "spi", "key", "salt"))
    if d not in ("out", "in"):
        raise RequestError(f"SA dir must be 'out' or 'in', got {d!r}")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch <= MAX_SEQ:
        raise RequestError(f"SA epoch must be an integer 0..2**32-1, got {epoch!r}")
    if isinstance(spi, bool) or not isinstance(spi, int) or not esp_wire.MIN_SPI <= spi <= MAX_SEQ:
        raise RequestError(f"SA spi must be an integer {esp_wire.MIN_SPI}..2**32-1, got {spi!r}")
    if not isinstance(key, bytes) or len(key) != esp_wire.KEY_LEN:
        raise RequestError(f"SA key must be {esp_wire.KEY_LEN} bytes")
    if not isinstance(salt, bytes) or len(salt) != esp_wire.SALT_LEN:
        raise RequestError(f"SA salt must be {esp_wire.SALT_LEN} bytes")
    return {"peer": _ipv4(value.get("peer"), "SA peer"), "dir": d, "epoch": epoch, "spi": spi, "key": key,
            "salt": salt}


def _mac(value: Any) -> str:
    try:
        return model.parse_mac(value)
    except ValueError as e:
        raise RequestError(str(e)) from None


class Fastpathd:
    """Desired state + the engine that realises it."""

    def __init__(self, engine: Any, state_path: str | None) -> None:
        self.engine = engine
        self.state_path = state_path
        self.nets: dict[int, dict[str, Any]] = {}
        self.peers: list[str] = []
        self.peer_bum_rate = 0  # broadcast/multicast frames per second per peer; 0: no limit
        self.save_error: str | None = None  # why the state file is behind, while it is
        # ESP sequence records by SA fingerprint: the top of the reserved block of an outbound SA,
        # the highest sequence number received on an inbound one (restored as "already seen")
        self.esp_seq: dict[str, int] = {}
        self.esp_rx: dict[str, int] = {}
        self.sa_ids: dict[int, dict[str, int]] = {}  # vni -> {fingerprint: engine SA id}, installed now
        self.rx_saved = 0.0
        self.reserve_error: str | None = None

    # ---- state file
    def save(self) -> None:
        """Write the state file; a failure (a full disk) is logged and retried at the next change.

        The tables in memory are what forwards: an operation never fails, and a TAP is never
        dropped, because its copy on disk could not be updated. overlayd re-syncs everything anyway;
        the file only matters if fastpathd restarts while overlayd is away.
        """
        if not self.state_path:
            return
        try:
            self.save_strict()
        except OSError as e:
            if self.save_error is None:
                log.error("event=state-save-failed path=%s error=\"%s\" action=retry-on-next-change",
                          self.state_path, e.strerror or e)
            self.save_error = f"{self.state_path}: {e.strerror or e}"
            return
        if self.save_error is not None:
            log.info("event=state-saved path=%s after=save-failures", self.state_path)
        self.save_error = None

    def save_strict(self) -> None:
        """Write the state file (mode 0600: it holds SA keys) or raise OSError."""
        if not self.state_path:
            raise OSError("no --state file")
        data = protocol.pack({"v": protocol.VERSION, "networks": self.nets, "peers": self.peers,
                              "peer_bum_rate": self.peer_bum_rate, "esp_seq": self.esp_seq, "esp_rx": self.esp_rx})
        write_atomic(self.state_path, data)

    def restore(self) -> None:
        if not self.state_path or not os.path.exists(self.state_path):
            return
        try:
            with open(self.state_path, "rb") as f:
                state = msgpack.unpackb(f.read(), raw=False, strict_map_key=False)
            nets = dict(state.get("networks") or {})
            peers = list(state.get("peers") or [])
            peer_bum_rate = int(state.get("peer_bum_rate") or 0)
            self.esp_seq = {str(k): int(v) for k, v in (state.get("esp_seq") or {}).items()}
            self.esp_rx = {str(k): int(v) for k, v in (state.get("esp_rx") or {}).items()}
        except (OSError, ValueError, msgpack.ExtraData, msgpack.FormatError, AttributeError, TypeError) as e:
            log.warning("event=state-unreadable path=%s error=%s action=ignored", self.state_path, e)
            return
        self.op_sync_peers({"vteps": peers, "bum_rate": peer_bum_rate})
        for vni, net in nets.items():
            try:
                encrypted = bool(net.get("encrypted"))
                self.op_add_network({"vni": vni, "netns": net["netns"], "tap": net["tap"], "mtu": net["mtu"],
                                     "encrypted": encrypted})
                if encrypted:  # before any frame can go: the network's first frames need its SAs
                    self.op_sync_sas({"vni": vni, "sas": net.get("sas", [])})
                self.op_sync_fdb({"vni": vni, "fdb": net.get("fdb", {})})
                self.op_sync_flood({"vni": vni, "vteps": net.get("flood", [])})
                self.op_sync_arp({"vni": vni, "arp": net.get("arp", {})})
            except (RequestError, OSError, KeyError) as e:
                log.warning("event=restore-failed vni=%s error=%s", vni, e)
        log.info("event=restored networks=%d path=%s", len(self.nets), self.state_path)

    # ---- operations (each returns a msgpack-able result)
    def op_ping(self, args: dict[str, Any]) -> Any:
        return {"pid": os.getpid(), "version": protocol.VERSION}

    def op_add_network(self, args: dict[str, Any]) -> Any:
        vni = _vni(args)
        netns, tap, mtu = args.get("netns") or "", args.get("tap"), args.get("mtu", 0)
        if not isinstance(tap, str) or not 0 < len(tap) < 16:
            raise RequestError(f"tap must be a device name of 1..15 characters, got {tap!r}")
        if not isinstance(mtu, int) or not (mtu == 0 or 68 <= mtu <= 65521):
            raise RequestError(f"mtu must be 68..65521 (or 0 to keep), got {mtu!r}")
        encrypted = args.get("encrypted", False)
        if not isinstance(encrypted, bool):
            raise RequestError(f"encrypted must be true or false, got {encrypted!r}")
        if netns and not os.path.exists(netns):
            raise RequestError(f"network namespace {netns} does not exist")
        have = self.nets.get(vni)
        if have:
            if bool(have.get("encrypted")) != encrypted:
                raise RequestError(f"network {vni} exists {'encrypted' if have.get('encrypted') else 'unencrypted'}: "
                                   "remove_network it first to change that")
            if (have["netns"], have["tap"], have["mtu"]) == (netns, tap, mtu):
                return dict(self.engine.networks[vni])  # idempotent re-sync
            raise RequestError(f"network {vni} exists with another TAP/netns/MTU: remove_network it first")
        if encrypted and not self.state_path:
            raise RequestError("encrypted networks need fastpathd --state FILE: ESP sequence numbers must survive "
                               "a restart (a repeated one under the same key breaks AES-GCM)")
        try:
            info = self.engine.add_network(vni, netns, tap, mtu, persist=bool(self.state_path), encrypted=encrypted)
        except OSError as e:
            raise RequestError(str(e)) from None
        self.nets[vni] = {"netns": netns, "tap": tap, "mtu": mtu, "fdb": {}, "flood": [], "arp": {}}
        if encrypted:
            self.nets[vni].update(encrypted=True, sas=[])
            self.sa_ids[vni] = {}
        self.save()
        log.info("event=network-added vni=%d tap=%s netns=%s offload=0x%x", vni, tap, netns or "own", info["offload"])
        return info

    def op_remove_network(self, args: dict[str, Any]) -> Any:
        vni = _vni(args)
        existed = self.engine.remove_network(vni)
        self.nets.pop(vni, None)
        self.sa_ids.pop(vni, None)
        self.save()
        return existed

    def _net(self, vni: int) -> dict[str, Any]:
        if vni not in self.nets:
            raise RequestError(f"unknown network {vni}: add_network it first")
        return self.nets[vni]

    def op_sync_fdb(self, args: dict[str, Any]) -> Any:
        vni = _vni(args)
        net = self._net(vni)
        fdb = args.get("fdb") or {}
        if not isinstance(fdb, dict):
            raise RequestError("fdb must be a map {mac: vtep}")
        clean = {_mac(m): v if v == protocol.LOCAL_VTEP else _ipv4(v, "vtep") for m, v in fdb.items()}
        self.engine.set_fdb(vni, clean)
        net["fdb"] = clean
        self.save()
        return len(clean)

    def op_sync_flood(self, args: dict[str, Any]) -> Any:
        vni = _vni(args)
        net = self._net(vni)
        vteps = args.get("vteps") or []
        if not isinstance(vteps, list):
            raise RequestError("vteps must be a list of IPv4 addresses")
        clean = list(dict.fromkeys(_ipv4(v, "vtep") for v in vteps))
        self.engine.set_flood(vni, clean)
        net["flood"] = clean
        self.save()
        return len(clean)

    def op_sync_arp(self, args: dict[str, Any]) -> Any:
        vni = _vni(args)
        net = self._net(vni)
        arp = args.get("arp") or {}
        if not isinstance(arp, dict):
            raise RequestError("arp must be a map {ip: mac}")
        clean = {_ipv4(ip, "ip"): _mac(m) for ip, m in arp.items()}
        self.engine.set_arp(vni, clean)
        net["arp"] = clean
        self.save()
        return len(clean)

    def op_sync_sas(self, args: dict[str, Any]) -> Any:
        vni = _vni(args)
        net = self._net(vni)
        if not net.get("encrypted"):
            raise RequestError(f"network {vni} is not encrypted: add_network it with encrypted=true")
        sas = args.get("sas")
        if not isinstance(sas, list):
            raise RequestError("sas must be a list of {peer, dir, epoch, spi, key, salt}")
        clean = [_sa(x) for x in sas]
        outs = [x["peer"] for x in clean if x["dir"] == "out"]
        if len(outs) != len(set(outs)):
            raise RequestError("at most one outbound SA per peer")
        installed = self.sa_ids.get(vni, {})
        specs, fresh = [], []
        for sa in clean:
            fp = _sa_fingerprint(sa)
            spec = dict(sa)
            if fp not in installed and sa["dir"] == "out":
                # a new outbound SA starts above anything a previous life of it may have sent
                start = self.esp_seq.get(fp, 0)
                spec.update(seq=start, seq_limit=min(start + SEQ_BLOCK, MAX_SEQ))
                fresh.append((fp, spec["seq_limit"]))
            elif fp not in installed:
                spec["seq"] = self.esp_rx.get(fp, 0)
            specs.append((fp, spec))
        if fresh:
            for fp, limit in fresh:
                self._record(self.esp_seq, fp, limit)
            try:
                self.save_strict()  # durable before the fast path may send with it
            except OSError as e:
                raise RequestError(f"cannot record ESP sequence numbers in {self.state_path}: {e.strerror or e}; "
                                   "SAs not changed") from None
        try:
            count = self.engine.sync_sas(vni, [spec for _, spec in specs])
        except (OSError, ValueError) as e:
            raise RequestError(str(e)) from None
        by_key = {(x["dir"], x["peer"], x["spi"]): x["id"] for x in self.engine.sas(vni)}
        self.sa_ids[vni] = {fp: by_key[(x["dir"], x["peer"], x["spi"])] for fp, x in specs
                            if (x["dir"], x["peer"], x["spi"]) in by_key}
        if net.get("sas") != clean:
            net["sas"] = clean
            self.save()
        return count

    @staticmethod
    def _record(records: dict[str, int], fp: str, value: int) -> None:
        records.pop(fp, None)
        records[fp] = value  # most recent last: the oldest go first
        while len(records) > SEQ_RECORDS:
            del records[next(iter(records))]

    def esp_tick(self) -> None:
        """Top up the sequence reservations of outbound SAs before they run out (durably first, then
        the fast path may use them), and record how far inbound SAs got."""
        grow: list[tuple[int, str, int]] = []
        moved: dict[str, int] = {}
        for vni, ids in self.sa_ids.items():
            fps = {i: fp for fp, i in ids.items()}
            with contextlib.suppress(KeyError):
                for sa in self.engine.sas(vni):
                    fp = fps.get(sa["id"])
                    if fp is None:
                        continue
                    if sa["dir"] == "out":
                        if sa["seq_limit"] < MAX_SEQ and sa["seq_limit"] - sa["seq"] < SEQ_BLOCK // 2:
                            grow.append((sa["id"], fp, min(sa["seq_limit"] + SEQ_BLOCK, MAX_SEQ)))
                    elif sa["seq"] > self.esp_rx.get(fp, 0):
                        moved[fp] = sa["seq"]
        now = time.monotonic()
        if not grow and not (moved and now - self.rx_saved >= RX_SAVE_S):
            return
        for _, fp, limit in grow:
            self._record(self.esp_seq, fp, limit)
        for fp, top in moved.items():
            self._record(self.esp_rx, fp, top)
        try:
            self.save_strict()
        except OSError as e:
            if self.reserve_error is None:
                log.error("event=esp-seq-record-failed path=%s error=\"%s\" action=tx-stops-at-reserved-limit",
                          self.state_path, e.strerror or e)
            self.reserve_error = str(e)
            return
        self.reserve_error = None
        self.rx_saved = now
        for sa_id, _, limit in grow:
            self.engine.set_sa_limit(sa_id, limit)

    def op_sync_peers(self, args: dict[str, Any]) -> Any:
        vteps = args.get("vteps") or []
        if not isinstance(vteps, list):
            raise RequestError("vteps must be a list of IPv4 addresses")
        clean = list(dict.fromkeys(_ipv4(v, "vtep") for v in vteps))
        bum_rate = args.get("bum_rate", 0)
        if isinstance(bum_rate, bool) or not isinstance(bum_rate, int) or not 0 <= bum_rate < 1 << 32:
            raise RequestError("bum_rate must be a whole number of frames per second (0: no limit)")
        self.engine.set_peers(clean, bum_rate)
        self.peers, self.peer_bum_rate = clean, bum_rate
        self.save()
        return len(clean)

    def op_stats(self, args: dict[str, Any]) -> Any:
        nets = {}
        for vni in list(self.nets):
            with contextlib.suppress(KeyError):
                nets[vni] = self.engine.network_counters(vni)
        totals = self.engine.global_counters()
        for name in ESP_NET_COUNTERS:  # per-network ESP counters, summed
            totals[name] = sum(n.get(name, 0) for n in nets.values())
        return {"global": totals, "networks": nets}

    def op_offloads(self, args: dict[str, Any]) -> Any:
        return self.engine.offloads()

    def op_networks(self, args: dict[str, Any]) -> Any:
        """What is programmed; for encrypted networks the SAs as the fast path has them, never keys."""
        nets = {}
        for vni, net in self.nets.items():
            view = {k: v for k, v in net.items() if k != "sas"}
            view["encrypted"] = bool(net.get("encrypted"))
            if view["encrypted"]:
                with contextlib.suppress(KeyError):
                    view["sas"] = [{k: sa[k] for k in ("peer", "dir", "epoch", "spi", "seq", "seq_limit")}
                                   for sa in self.engine.sas(vni)]
            nets[vni] = view
        return {"networks": nets, "peers": self.peers}

    def dispatch(self, msg: Any) -> bytes:
        req_id = msg.get("id") if isinstance(msg, dict) else None
        try:
            if not isinstance(msg, dict):
                raise RequestError("a request is a map {v, id, op, args}")
            if msg.get("v") != protocol.VERSION:
                raise RequestError(f"protocol version {msg.get('v')!r} unsupported: this fastpathd speaks 1")
            op = msg.get("op")
            args = msg.get("args") or {}
            if op not in protocol.OPS or not isinstance(args, dict):
                raise RequestError(f"unknown operation {op!r}: one of {', '.join(protocol.OPS)}")
            return protocol.ok(req_id, getattr(self, f"op_{op}")(args))
        except RequestError as e:
            return protocol.error(req_id, str(e))
        except Exception as e:  # a bug: keep forwarding, log it, answer in one line
            log.exception("event=request-failed request=%r", msg)
            return protocol.error(req_id, f"internal error: {e}")


async def serve(daemon: Fastpathd, control: str) -> None:
    requests_done = asyncio.Event()  # wakes the ESP ticker when a request may have installed SAs

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        unpacker = protocol.unpacker()
        try:
            while True:
                data = await reader.read(1 << 16)
                if not data:
                    break
                unpacker.feed(data)
                for msg in unpacker:
                    writer.write(daemon.dispatch(msg))
                requests_done.set()
                await writer.drain()
        except (ConnectionError, msgpack.UnpackException, ValueError) as e:
            log.info("event=control-connection-dropped error=%s", e)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    with contextlib.suppress(FileNotFoundError):
        os.unlink(control)
    os.makedirs(os.path.dirname(os.path.abspath(control)), exist_ok=True)
    old = os.umask(0o177)  # socket mode 0600: root only
    try:
        server = await asyncio.start_unix_server(handle, path=control)
    finally:
        os.umask(old)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("event=control-ready socket=%s", control)

    async def esp_ticks() -> None:
        while True:
            if not any(daemon.sa_ids.values()):
                # No SA, nothing to top up: sleep until a request (sync_sas) may have added one,
                # instead of 20 wake-ups a second on every host without encrypted networks. A new
                # SA starts with a reserved block, so the first tick after it is in time.
                requests_done.clear()
                await requests_done.wait()
                continue
            await asyncio.sleep(ESP_TICK_S)
            try:
                daemon.esp_tick()
            except Exception:  # a bug: keep forwarding (the fast path stops at the reserved limit)
                log.exception("event=esp-tick-failed")

    ticker = asyncio.create_task(esp_ticks())
    async with server:
        await stop.wait()
    ticker.cancel()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(control)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fastpathd", description="overlaynet userspace VXLAN fast path")
    p.add_argument("--control", required=True, help="unix socket path for the control protocol")
    p.add_argument("--bind", default="0.0.0.0", help="local VTEP address (outer source), default any")
    p.add_argument("--port", type=int, default=4789, help="VXLAN UDP port (default 4789)")
    p.add_argument("--esp-port", type=int, default=esp_wire.PORT,
                   help=f"ESP-in-UDP port of encrypted networks, RFC 3948 (default {esp_wire.PORT})")
    p.add_argument("--state", help="persist desired state here; TAPs survive a fastpathd restart")
    p.add_argument("--netns", help="run in this network namespace (path), e.g. /run/netns/host-a")
    p.add_argument("--tx-sockets", type=int, default=16, help="outer source ports to spread flows over")
    p.add_argument("--no-gso", action="store_true", help="do not use UDP GSO on transmit")
    p.add_argument("--no-gro", action="store_true", help="do not use UDP GRO on receive")
    p.add_argument("--no-verify-csum", action="store_true",
                   help="trust inner TCP checksums when coalescing (faster, unsafe without outer checksums)")
    p.add_argument("--verify-inner-csum", action="store_true",
                   help="verify inner checksums even when the outer UDP checksum (verified by the kernel) covers them")
    p.add_argument("--no-avx2", action="store_true", help="portable checksum loop even if the CPU has AVX2")
    p.add_argument("--spin-us", type=int, default=0,
                   help="busy-poll this many microseconds after traffic before sleeping: a fixed window that "
                        "replaces --poll-us (0: use --poll-us)")
    p.add_argument("--poll-us", type=int, default=0,
                   help="adaptive polling: after sending, poll this many microseconds for the answer unless "
                        "another task wants the CPU (0: off, the default; measured in docs/performance.md)")
    p.add_argument("--rt-prio", type=int, default=0,
                   help="run the forwarding threads SCHED_FIFO at this priority 1..99 (0: normal scheduling)")
    p.add_argument("--nice", type=int, default=0, help="nice value of the forwarding threads when not real-time")
    p.add_argument("--cpu-tx", type=int, default=-1, help="pin the transmit thread to this CPU (-1: no pinning)")
    p.add_argument("--cpu-rx", type=int, default=-1, help="pin the receive thread to this CPU (-1: no pinning)")
    p.add_argument("--workers", type=int, choices=(1, 2), default=1,
                   help="1: one thread for both directions (fewer wake-ups per round trip); 2: tx + rx threads")
    p.add_argument("--no-spin-yield", action="store_true",
                   help="busy-poll without sched_yield() between empty polls (hogs the CPU while spinning)")
    p.add_argument("--rcvbuf-kib", type=int, default=0,
                   help="VXLAN receive socket buffer in KiB (0: the built-in default)")
    p.add_argument("--gro-flows", type=int, default=0,
                   help="slots for flows coalesced at once on receive, 1..32 (0: 32)")
    p.add_argument("--log-level", default="INFO")
    logs.add_argument(p)
    p.add_argument("--version", action="version", version=f"fastpathd {__version__}")
    a = p.parse_args(argv)
    logs.setup(a.log_level, a.log_format)
    for flag, port in (("--port", a.port), ("--esp-port", a.esp_port)):
        if not 1 <= port <= 65535:
            print(f"fastpathd: {flag} {port} out of range 1..65535", file=sys.stderr)
            return 2
    if a.esp_port == a.port:
        print(f"fastpathd: --esp-port must differ from the VXLAN --port {a.port}", file=sys.stderr)
        return 2
    try:
        from overlaynet.dataplane import fastpath  # type: ignore[attr-defined]

        if a.netns:
            fastpath.setns(a.netns)  # before any thread exists: everything runs in that namespace
        if a.no_avx2:
            fastpath.checksum_allow_avx2(False)
        engine = fastpath.Engine(bind=a.bind, port=a.port, ntx=a.tx_sockets, gso=not a.no_gso,
                                 gro=not a.no_gro, verify_csum=not a.no_verify_csum,
                                 spin_us=max(0, a.spin_us), rt_prio=max(0, min(99, a.rt_prio)),
                                 nice=max(-20, min(19, a.nice)), cpu_tx=a.cpu_tx, cpu_rx=a.cpu_rx,
                                 workers=a.workers, spin_yield=not a.no_spin_yield,
                                 trust_outer_csum=not a.verify_inner_csum,
                                 rcvbuf=max(0, min(a.rcvbuf_kib, 1 << 20)) * 1024,
                                 gro_flows=max(0, min(a.gro_flows, 32)), esp_port=a.esp_port,
                                 poll_us=max(0, min(a.poll_us, 1_000_000)))
    except (OSError, ValueError, ImportError) as e:
        print(f"fastpathd: cannot start: {e}", file=sys.stderr)
        return 1
    engine.start()
    daemon = Fastpathd(engine, a.state)
    daemon.restore()
    off = engine.offloads()
    if off["esp"] != "ready":  # plain networks still work; encrypted ones are refused with this reason
        log.warning("event=esp-unavailable port=%d reason=\"%s\" action=encrypted-networks-refused", a.esp_port,
                    off["esp"])
    log.info("event=forwarding bind=%s port=%d esp_port=%d udp_gso=%s udp_gro=%s outer_csum_steering=%s checksum=%s "
             "tx_source_ports=%s", a.bind, a.port, a.esp_port, off["udp_gso"], off["udp_gro"], off["outer_csum_steering"], off["checksum"],
             off["tx_source_ports"])
    try:
        asyncio.run(serve(daemon, a.control))
    except OSError as e:
        print(f"fastpathd: control socket {a.control}: {e}", file=sys.stderr)
        return 1
    finally:
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
