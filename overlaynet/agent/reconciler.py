"""Reconcile: make the kernel match the desired state, level-triggered and idempotent.

Runs at start (adoption after a restart or crash), every `resync_interval` seconds (repairs drift)
and on demand; `program_on_change` pushes gossip's changes into the dataplane in between (coalesced).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from overlaynet import kernel, malloc
from overlaynet.agent.endpoints import Endpoints
from overlaynet.agent.host import Host
from overlaynet.agent.metrics import RECONCILE_ERRORS, RECONCILE_SECONDS
from overlaynet.agent.netkeys import ROTATE_AT_SEQ
from overlaynet.agent.programmer import Programmer
from overlaynet.kernel import KernelError

log = logging.getLogger("overlaynet.agent")


class Reconciler:
    def __init__(self, host: Host, local: Endpoints, programmer: Programmer) -> None:
        self.host = host
        self.local = local
        self.programmer = programmer
        self.last_reconcile: dict[str, Any] = {}
        self._resync_wakeup = asyncio.Event()  # the resync interval changed (config reload)

    async def reconcile(self) -> dict[str, Any]:
        """Make the kernel match the desired state; forget endpoints whose container is gone."""
        summary: dict[str, Any] = {"repaired": 0, "forgotten": 0, "stale_removed": 0, "errors": [],
                                   "devices_repaired": []}
        started = time.monotonic()
        async with self.host.lock:
            for net in self.host.cluster.orphaned_networks():
                self.host.cluster.put_network(net)
                log.info("event=network-adopted name=%s previous_writer=%s", net.name, net.owner)
            networks = self.host.networks
            kept = self.local.kept_prefixes()
            for ep in [e for e in self.local.endpoints.values() if e.network not in networks]:
                if self.host.cluster.network_deleted(ep.network):
                    # The network was removed cluster-wide (maybe while we were away).
                    await self.local.unplug(None, ep)
                    summary["forgotten"] += 1
                else:
                    # No record and no tombstone: our cached copy was lost (an unreadable file) and no
                    # peer has told us yet. Cutting the container off would turn a bad file into an
                    # outage; keep it, and say so until the record comes back or an operator decides.
                    summary["errors"].append(f"endpoint {ep.id[:12]}: network {ep.network!r} is unknown here; "
                                             f"kept as it is (overlayctl endpoint rm {ep.id} removes it)")
                    log.warning("event=endpoint-network-unknown endpoint=%s network=%s", ep.id[:12], ep.network)
                    kept.add(kernel.endpoint_prefix(ep.id))
            wanted_sandboxes = set()
            for net in networks.values():
                local = self.local.on_network(net.name)
                if not local and not any(u.network == net.name for u in self.local.unknown.values()):
                    continue
                sandbox = self.host.sandbox(net)
                wanted_sandboxes.add(sandbox)
                try:
                    for device in await self.host.kernel(self.host.dataplane.ensure_network, net, sandbox):
                        # A fast-path or VXLAN device that had gone missing: traffic of this network
                        # was cut until now. Say so loudly (status, the reconcile answer, the log).
                        summary["devices_repaired"].append(f"{net.name}: {device}")
                        summary["repaired"] += 1
                        self.programmer.forwarding_changed(net.name)
                        log.warning("event=device-repaired network=%s device=%s", net.name, device)
                    await self.programmer.sync_guard(net, force=True)  # before any port is repaired
                    present = await self.host.kernel(kernel.list_endpoint_links, sandbox)
                    for ep in local:
                        if kernel.endpoint_prefix(ep.id) in present:
                            continue
                        if ep.netns is not None and not os.path.exists(ep.netns):
                            # The container's namespace is gone, and its veth with it.
                            self.host.forget_endpoint(ep.id)
                            del self.local.endpoints[ep.id]
                            self.host.cluster.delete_endpoint(ep.id)
                            summary["forgotten"] += 1
                            log.info("event=endpoint-gone endpoint=%s network=%s ip=%s", ep.id[:12], net.name, ep.ip)
                            continue
                        await self.host.kernel(kernel.ensure_veth, sandbox, self.programmer.veth_spec(ep))
                        summary["repaired"] += 1
                        log.info("event=endpoint-repaired endpoint=%s network=%s", ep.id[:12], net.name)
                    known = {kernel.endpoint_prefix(ep.id) for ep in self.local.on_network(net.name)}
                    known |= kept
                    for key in present - known:
                        await self.host.kernel(kernel.remove_veth, sandbox, key)
                        summary["stale_removed"] += 1
                        log.info("event=stale-veth-removed key=%s network=%s", key, net.name)
                    self.local.release_empty_blocks(net)
                except (KernelError, OSError) as e:
                    summary["errors"].append(f"{net.name}: {e}")
                    log.error("event=reconcile-failed network=%s error=%s", net.name, e)
            for sandbox in await self.host.kernel(kernel.list_sandboxes, self.host.config.state_dir):
                if sandbox not in wanted_sandboxes and not (
                        await self.host.kernel(kernel.list_endpoint_links, sandbox) & kept):
                    await self.host.kernel(kernel.remove_sandbox, sandbox)
                    summary["stale_removed"] += 1
                    log.info("event=stale-sandbox-removed path=%s", sandbox)
        summary["programmed_changes"] = await self.programmer.program(force=True)
        RECONCILE_SECONDS.observe(time.monotonic() - started)
        RECONCILE_ERRORS.inc(len(summary["errors"]))
        summary["duration_ms"] = round((time.monotonic() - started) * 1000, 1)
        summary["at"] = time.time()
        self.last_reconcile = summary
        return summary


    async def program_on_change(self) -> None:
        while True:
            await self.host.dirty.wait()
            await asyncio.sleep(0.002)  # coalesce a burst of table changes into one pass
            self.host.dirty.clear()
            try:
                await self.programmer.program()
            except Exception:
                self.programmer.counters["program_errors"] += 1
                log.exception("event=program-failed")

    async def network_keys_forever(self) -> None:
        """Rotate encrypted networks' keys when due, and program the SAs again whenever a switch
        or overlap deadline passes (key_switch_delay, key_overlap)."""
        keys = self.programmer.keys
        ticks = 0
        while True:
            await asyncio.sleep(1.0)
            ticks += 1
            try:
                for net in keys.due(self.host.networks):
                    keys.rotate(net, "interval")
                if ticks % 10 == 0:
                    await self._rotate_by_volume()
                if self.programmer.keys_due():
                    self.host.dirty.set()
            except Exception:
                log.exception("event=network-keys-failed")

    async def _rotate_by_volume(self) -> None:
        """An outbound SA that used half its 32-bit sequence space: a new epoch long before it stops."""
        for name in sorted({ep.network for ep in self.local.endpoints.values()}):
            net = self.host.networks.get(name)
            if net is not None and net.encrypted:
                try:
                    seq = await self.host.kernel(self.host.dataplane.highest_tx_seq, net)
                except KernelError:
                    continue
                if seq >= ROTATE_AT_SEQ and self.programmer.keys.rotate_soon(net, "sequence-numbers"):
                    log.warning("event=network-key-rotate network=%s why=sequence-numbers seq=%d", name, seq)

    def resync_interval_changed(self) -> None:
        """Start the next wait with the new interval instead of finishing the old one."""
        self._resync_wakeup.set()

    async def resync_forever(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._resync_wakeup.wait(), self.host.config.resync_interval)
                self._resync_wakeup.clear()
                continue
            except TimeoutError:
                pass
            try:
                await self.reconcile()
            except Exception:
                log.exception("event=resync-failed")
            # On a wake-up that happens anyway: hand back to the kernel what this pass and the events
            # since the last one freed (~1 MiB of heap otherwise held; overlaynet/malloc.py).
            malloc.release_free_memory()
