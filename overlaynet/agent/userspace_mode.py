"""Userspace dataplane mode: a TAP per network on the sandbox bridge, frames moved by fastpathd.

fastpathd is its own process, in its own session, started by the first overlayd that needs it and
adopted by every later one (found by its control socket in the state dir). It keeps forwarding
while overlayd is down or restarting; each program pass re-syncs its tables completely (every
`sync_*` is a full, idempotent replacement), so a returning overlayd never has to know what it
missed. Methods block (unix socket + netlink): the agent calls them from its kernel thread.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
from typing import Any

from overlaynet import kernel
from overlaynet.agent.forwarding import Forwarding
from overlaynet.atomic import write_atomic
from overlaynet.dataplane import protocol
from overlaynet.dataplane.control import FastpathClient, FastpathControlError, start_fastpathd
from overlaynet.model import Network

log = logging.getLogger("overlaynet.userspace")


class UserspaceMode:
    name = "userspace"

    def __init__(self, state_dir: str, advertise: str, vxlan_port: int, spin_us: int = 0,
                 log_format: str = "logfmt", peer_bum_rate: int = 0, esp_port: int = 4500) -> None:
        self.esp_port = esp_port
        self.log_format = log_format
        self.peer_bum_rate = peer_bum_rate
        self.advertise = advertise
        self.vxlan_port = vxlan_port
        self.spin_us = spin_us
        self.control = os.path.join(state_dir, "fastpath.sock")
        self.state_file = os.path.join(state_dir, "fastpath.state")
        self.pid_file = os.path.join(state_dir, "fastpath.pid")
        self.log_file = os.path.join(state_dir, "fastpath.log")
        self.client = FastpathClient(self.control)
        self.pid: int | None = None

    # ---- the fastpathd process -------------------------------------------------------------

    def start(self) -> None:
        """Adopt a running fastpathd, or start one that outlives this overlayd."""
        try:
            self.pid = int(self.client.ping()["pid"])
            log.info("event=fastpathd-adopted pid=%d control=%s", self.pid, self.control)
            running = self.client.offloads().get("busy_poll_us", 0)
            if running != self.spin_us:
                # forwarding must not stop for a tuning change: the running fastpathd keeps its own
                log.warning("event=fastpathd-settings-differ busy_poll_us=%s configured=%d "
                            "hint=restart-fastpathd-to-apply", running, self.spin_us)
            return
        except FastpathControlError:
            self.client.close()
        if os.path.exists(self.control):
            os.unlink(self.control)  # left by a fastpathd that died
        with open(self.log_file, "ab") as logf:
            extra = ["--log-format", self.log_format] + (["--spin-us", str(self.spin_us)] if self.spin_us else [])
            if self.esp_port != 4500:  # fastpathd's default
                extra += ["--esp-port", str(self.esp_port)]
            proc = start_fastpathd(self.control, bind=self.advertise, port=self.vxlan_port,
                                   state=self.state_file, extra=extra, log=logf)
        self.pid = proc.pid
        try:
            write_atomic(self.pid_file, f"{proc.pid}\n".encode())
        except OSError as e:  # only tooling reads it; forwarding does not depend on it
            log.warning("event=pid-file-not-written path=%s error=\"%s\"", self.pid_file, e.strerror)
        log.info("event=fastpathd-started pid=%d control=%s", proc.pid, self.control)

    @staticmethod
    def stop_fastpathd(state_dir: str) -> None:
        """Stop the fastpathd of a state dir (tests and tooling; overlayd itself never does)."""
        try:
            with open(os.path.join(state_dir, "fastpath.pid")) as f:
                pid = int(f.read().strip())
            os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError):
            pass

    # ---- the mode interface ----------------------------------------------------------------

    def ensure_network(self, net: Network, sandbox: str) -> list[str]:
        """Make the network's sandbox, bridge and TAP exist; returns the devices that had to be repaired.

        fastpathd may hold a TAP whose device is gone (its sandbox was removed and made again, or
        someone deleted it): it would then accept the network as "already there" while nothing is
        plugged into the bridge. Such a network is removed from fastpathd and added again, which
        makes a new TAP; the next program pass refills its tables.
        """
        kernel.ensure_sandbox(sandbox)
        kernel.ensure_bridge(sandbox, net.mtu, mac=net.gateway_mac, address=net.gateway_cidr)
        tap = kernel.tap_name(net.vni)
        repaired = []
        if net.vni in self._call(self.client.networks)["networks"] and not kernel.device_exists(sandbox, tap) \
                and not kernel.device_exists(None, tap):
            log.warning("event=fastpath-device-missing network=%s tap=%s action=recreate", net.name, tap)
            self._call(lambda: self.client.remove_network(net.vni))
            repaired.append(tap)
        if net.encrypted:
            self._add_encrypted(net, sandbox, tap)
        else:
            self._call(lambda: self.client.add_network(net.vni, sandbox, tap, net.mtu))
        kernel.ensure_port(sandbox, tap, net.mtu)
        return repaired

    def _add_encrypted(self, net: Network, sandbox: str, tap: str) -> None:
        """Add an encrypted network and make sure fastpathd took it as such: from then on it sends
        and accepts nothing of this VNI in the clear, and drops what has no SA yet. A fastpathd
        that does not say so (built without ESP) gets the network removed again: fail closed."""
        self._call(lambda: self.client.add_network(net.vni, sandbox, tap, net.mtu, encrypted=True))
        state = self._call(self.client.networks)["networks"].get(net.vni) or {}
        if state.get("encrypted") is not True:
            self._call(lambda: self.client.remove_network(net.vni))
            raise kernel.KernelError(f"this host's fast path cannot encrypt network {net.name!r} (fastpathd has "
                                     "no ESP support); update overlaynet on this host")

    def encryption_unavailable(self) -> str | None:
        """Why this host cannot carry an encrypted network, or None: the fast path's ESP codec
        (OpenSSL libcrypto) and the key derivation (`cryptography`) must both load."""
        try:
            for module in ("overlaynet.dataplane.esp", "cryptography.hazmat.primitives.kdf.hkdf"):
                importlib.import_module(module)
        except ImportError as e:
            return (f"cannot load its crypto library ({e}): the crypto library is missing; install OpenSSL's "
                    "libcrypto (Debian: libssl3) and attach again")
        esp = self._call(self.client.offloads).get("esp", "ready")
        if esp != "ready":  # fastpathd could not open its ESP port (another IPsec daemon holds it?)
            return (f"has no ESP socket in its fast path ({esp}); free UDP port {self.esp_port} or give overlayd "
                    "another esp_port, then restart fastpathd")
        return None

    def sync_sas(self, net: Network, sas: list[dict[str, Any]]) -> int:
        """Replace the network's SAs (`sync_sas`, docs/dataplane.md): an SA that stays keeps its sequence state."""
        return int(self._call(lambda: self.client.sync_sas(net.vni, sas)))

    def highest_tx_seq(self, net: Network) -> int:
        """The highest sequence number any outbound SA of the network has used (rotate before 2**32)."""
        state = self._call(self.client.networks)["networks"].get(net.vni) or {}
        return max((int(sa.get("seq") or 0) for sa in state.get("sas") or [] if sa.get("dir") == "out"), default=0)

    def overlay_port(self, net: Network) -> str:
        """The sandbox bridge's port that frames from other hosts enter by."""
        return kernel.tap_name(net.vni)

    def fdb_to_program(self, net: Network, fwd: Forwarding) -> dict[str, str]:
        """The fast path's FDB for `fwd`: what `programmed` shows when all is in step."""
        fdb = dict(fwd.fdb)
        if net.gateway_mac:
            # The gateway (in fwd.neigh) is the bridge itself: marked local, the fast path neither
            # answers ARP for it (the bridge does; a second answer would enter the bridge with the
            # bridge's own MAC as source) nor sends frames for it across the underlay.
            fdb[net.gateway_mac] = protocol.LOCAL_VTEP
        return fdb

    def program(self, net: Network, sandbox: str, fwd: Forwarding) -> int:
        before = self._call(self.client.networks)["networks"].get(net.vni) or {}
        fdb = self.fdb_to_program(net, fwd)
        self._call(lambda: self.client.sync_fdb(net.vni, fdb))
        self._call(lambda: self.client.sync_arp(net.vni, fwd.neigh))
        self._call(lambda: self.client.sync_flood(net.vni, sorted(fwd.flood)))
        changed = _changes(before.get("fdb") or {}, fdb) + _changes(before.get("arp") or {}, fwd.neigh)
        return changed + len(set(before.get("flood") or []) ^ fwd.flood)

    def forget_programmed(self) -> None:
        """Nothing to forget: every pass replaces fastpathd's tables whole (in memory, cheap)."""

    def sync_peers(self, vteps: set[str]) -> None:
        """Only these VTEPs (live cluster members) may send us VXLAN packets, each at most
        `peer_bum_rate` broadcast/multicast frames per second."""
        self._call(lambda: self.client.sync_peers(sorted(vteps), self.peer_bum_rate))

    def remove_network(self, net: Network, sandbox: str) -> None:
        self._call(lambda: self.client.remove_network(net.vni))
        kernel.remove_sandbox(sandbox)

    def programmed(self, net: Network, sandbox: str) -> dict[str, Any]:
        state = self._call(self.client.networks)["networks"].get(net.vni) or {}
        return {
            "fdb": [{"mac": m, "vtep": v} for m, v in sorted((state.get("fdb") or {}).items())],
            "flood": sorted(state.get("flood") or []),
            "neigh": [{"ip": i, "mac": m} for i, m in sorted((state.get("arp") or {}).items())],
        }

    def stats(self) -> dict[str, Any]:
        return self._call(self.client.stats)

    def status(self) -> dict[str, Any]:
        try:
            return {"mode": self.name, "fastpathd_pid": self.pid, "offloads": self.client.offloads()}
        except FastpathControlError as e:
            return {"mode": self.name, "fastpathd_pid": self.pid, "error": str(e)}

    def health_error(self) -> str | None:
        """Why fastpathd does not answer, or None when it does (nothing forwards while it is down)."""
        try:
            self.client.ping()
            return None
        except FastpathControlError as e:
            self.client.close()
            return str(e)

    def _call(self, fn: Any) -> Any:
        """One fastpathd request; if fastpathd died, start it again (it restores its state file)."""
        try:
            return fn()
        except FastpathControlError as e:
            if not str(e).startswith(f"fastpathd at {self.control}"):  # it answered: a refusal
                raise kernel.KernelError(f"fast path refused: {e}") from None
            log.warning("event=fastpathd-unreachable error=%s action=restart", e)
            self.client.close()
            self.start()
            try:
                return fn()
            except FastpathControlError as e2:
                raise kernel.KernelError(f"fast path unavailable: {e2}") from None


def _changes(before: dict[str, str], after: dict[str, str]) -> int:
    return sum(1 for k in set(before) | set(after) if before.get(k) != after.get(k))
