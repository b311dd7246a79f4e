"""Cluster-wide address allocation through per-host address blocks (the rules are in ipam.py).

A host hands out addresses only from blocks it holds. To hold a new block it writes a claim to the
replicated `ipam` table and, when other hosts are alive, waits `settle_time` for concurrent claims
before trusting it: every host computes the same winner (earliest claim, then host name). Blocks
of a host that has been dead for `reclaim_after` seconds are free again.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable, Iterable

from overlaynet import ipam
from overlaynet.agent.cluster import Cluster
from overlaynet.errors import Conflict
from overlaynet.ipam import AddressPool
from overlaynet.model import Network

log = logging.getLogger("overlaynet.blocks")


class BlockAllocator:
    def __init__(self, cluster: Cluster, host: str, settle_time: float, reclaim_after: float) -> None:
        self.cluster = cluster
        self.host = host
        self.settle_time = settle_time
        self.reclaim_after = reclaim_after

    def holder(self, net: Network, block: str) -> str | None:
        """Who holds a block now: the winning live claim, or a dead host's within the reclaim delay."""
        now = time.time()
        valid = [(c.claimed_at, c.host) for c in self.cluster.block_claims(net.name)
                 if c.block == block
                 and (c.live or (c.dead_since is not None and now - c.dead_since < self.reclaim_after))]
        return ipam.claim_winner(valid) if valid else None

    async def allocate(self, net: Network, used: Callable[[], set[str]], requested: str | None) -> str:
        """An address no other endpoint in the cluster has or will get; `used()` lists the taken ones."""
        pool = AddressPool(net.subnet, net.gateway)
        if requested:
            ip = pool.check_requested(requested, used())
            block = ipam.block_of(net.subnet, ip)
            if self.holder(net, block) is None:
                await self.claim(net, block)
            return ip
        order = ipam.blocks(net.subnet)
        for block in sorted(self.cluster.my_blocks(net.name), key=order.index):
            if self.holder(net, block) != self.host:
                continue
            addr = pool.first_free(used(), within=ipaddress.IPv4Network(block))
            if addr is not None:
                return addr
        for block in ipam.block_order(net.subnet, self.host):
            if self.holder(net, block) is not None:
                continue
            if pool.first_free(used(), within=ipaddress.IPv4Network(block)) is None:
                continue
            if await self.claim(net, block):
                addr = pool.first_free(used(), within=ipaddress.IPv4Network(block))
                if addr is not None:
                    return addr
        raise Conflict(
            f"network {net.name!r} ({net.subnet}) has no free address for this host: every address "
            "block is full or held by another host; use a larger subnet"
        )

    async def claim(self, net: Network, block: str) -> bool:
        """Claim a block; with other hosts alive, wait out concurrent claims and keep it only if we win."""
        for old in self.cluster.block_claims(net.name):
            if old.block == block and not old.live and old.host != self.host:
                log.info("event=block-reclaimed network=%s block=%s from=%s", net.name, block, old.host)
                self.cluster.withdraw_claim(net.name, block, old.host)
        self.cluster.claim_block(net.name, block)
        if self.cluster.others_alive():
            await asyncio.sleep(self.settle_time)
        winner = self.holder(net, block)
        if winner == self.host:
            log.info("event=block-claimed network=%s block=%s", net.name, block)
            return True
        self.cluster.release_block(net.name, block)
        log.info("event=block-lost network=%s block=%s winner=%s", net.name, block, winner)
        return False

    def release_unused(self, net: Network, in_use: Iterable[str]) -> None:
        """Give back blocks that hold none of this host's addresses any more."""
        busy = {ipam.block_of(net.subnet, ip) for ip in in_use}
        for block in self.cluster.my_blocks(net.name) - busy:
            self.cluster.release_block(net.name, block)
