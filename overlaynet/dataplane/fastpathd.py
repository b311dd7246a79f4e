"""fastpathd: the userspace VXLAN fast path as its own process, controlled over a unix socket.

    python -m overlaynet.dataplane.fastpathd --control /run/overlaynet/fastpath.sock \
        --bind 198.18.0.1 --port 4789 [--state /var/lib/overlaynet/fastpath.state] [--netns /run/netns/X]

It runs in the host network namespace (or the one given by --netns), owns the VXLAN UDP socket and
one TAP per overlay network (created inside that network's sandbox namespace), and forwards with C
threads. overlayd only programs it; when overlayd dies forwarding continues, and when it comes back
it reconnects, reads `networks` and re-syncs (every sync is a full, idempotent replacement).

With --state the desired configuration is written atomically after every change and the TAPs are
persistent: a restarted fastpathd re-attaches to them (bridge membership survives) and resumes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
import sys
from typing import Any

import msgpack

from overlaynet import __version__, logs, model
from overlaynet.atomic import write_atomic
from overlaynet.dataplane import protocol

log = logging.getLogger("fastpathd")


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

    # ---- state file
    def save(self) -> None:
        """Write the state file; a failure (a full disk) is logged and retried at the next change.

        The tables in memory are what forwards: an operation never fails, and a TAP is never
        dropped, because its copy on disk could not be updated. overlayd re-syncs everything anyway;
        the file only matters if fastpathd restarts while overlayd is away.
        """
        if not self.state_path:
            return
        data = protocol.pack({"v": protocol.VERSION, "networks": self.nets, "peers": self.peers,
                              "peer_bum_rate": self.peer_bum_rate})
        try:
            write_atomic(self.state_path, data)
        except OSError as e:
            if self.save_error is None:
                log.error("event=state-save-failed path=%s error=\"%s\" action=retry-on-next-change",
                          self.state_path, e.strerror or e)
            self.save_error = f"{self.state_path}: {e.strerror or e}"
            return
        if self.save_error is not None:
            log.info("event=state-saved path=%s after=save-failures", self.state_path)
        self.save_error = None

    def restore(self) -> None:
        if not self.state_path or not os.path.exists(self.state_path):
            return
        try:
            with open(self.state_path, "rb") as f:
                state = msgpack.unpackb(f.read(), raw=False, strict_map_key=False)
            nets = dict(state.get("networks") or {})
            peers = list(state.get("peers") or [])
            peer_bum_rate = int(state.get("peer_bum_rate") or 0)
        except (OSError, ValueError, msgpack.ExtraData, msgpack.FormatError, AttributeError, TypeError) as e:
            log.warning("event=state-unreadable path=%s error=%s action=ignored", self.state_path, e)
            return
        self.op_sync_peers({"vteps": peers, "bum_rate": peer_bum_rate})
        for vni, net in nets.items():
            try:
                self.op_add_network({"vni": vni, "netns": net["netns"], "tap": net["tap"], "mtu": net["mtu"]})
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
        if netns and not os.path.exists(netns):
            raise RequestError(f"network namespace {netns} does not exist")
        have = self.nets.get(vni)
        if have:
            if (have["netns"], have["tap"], have["mtu"]) == (netns, tap, mtu):
                return dict(self.engine.networks[vni])  # idempotent re-sync
            raise RequestError(f"network {vni} exists with another TAP/netns/MTU: remove_network it first")
        try:
            info = self.engine.add_network(vni, netns, tap, mtu, persist=bool(self.state_path))
        except OSError as e:
            raise RequestError(str(e)) from None
        self.nets[vni] = {"netns": netns, "tap": tap, "mtu": mtu, "fdb": {}, "flood": [], "arp": {}}
        self.save()
        log.info("event=network-added vni=%d tap=%s netns=%s offload=0x%x", vni, tap, netns or "own", info["offload"])
        return info

    def op_remove_network(self, args: dict[str, Any]) -> Any:
        vni = _vni(args)
        existed = self.engine.remove_network(vni)
        self.nets.pop(vni, None)
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
        return {"global": self.engine.global_counters(), "networks": nets}

    def op_offloads(self, args: dict[str, Any]) -> Any:
        return self.engine.offloads()

    def op_networks(self, args: dict[str, Any]) -> Any:
        return {"networks": self.nets, "peers": self.peers}

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
    async with server:
        await stop.wait()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(control)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fastpathd", description="overlaynet userspace VXLAN fast path")
    p.add_argument("--control", required=True, help="unix socket path for the control protocol")
    p.add_argument("--bind", default="0.0.0.0", help="local VTEP address (outer source), default any")
    p.add_argument("--port", type=int, default=4789, help="VXLAN UDP port (default 4789)")
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
                   help="busy-poll this many microseconds after traffic before sleeping (0: never spin)")
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
    if not 1 <= a.port <= 65535:
        print(f"fastpathd: --port {a.port} out of range 1..65535", file=sys.stderr)
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
                                 gro_flows=max(0, min(a.gro_flows, 32)))
    except (OSError, ValueError, ImportError) as e:
        print(f"fastpathd: cannot start: {e}", file=sys.stderr)
        return 1
    engine.start()
    daemon = Fastpathd(engine, a.state)
    daemon.restore()
    off = engine.offloads()
    log.info("event=forwarding bind=%s port=%d udp_gso=%s udp_gro=%s outer_csum_steering=%s checksum=%s "
             "tx_source_ports=%s", a.bind, a.port, off["udp_gso"], off["udp_gro"], off["outer_csum_steering"], off["checksum"],
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
