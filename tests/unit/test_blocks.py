"""`BlockAllocator`: cluster-wide address allocation through per-host blocks, over real gossip
nodes on loopback (plaintext, no kernel objects)."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from overlaynet import ipam
from overlaynet.agent.blocks import BlockAllocator
from overlaynet.agent.cluster import Cluster
from overlaynet.errors import Conflict
from overlaynet.gossip.transport import GossipNode
from overlaynet.model import Network
from tests.support.waiting import wait_for

pytestmark = pytest.mark.unit

SETTLE = 0.3
NET = Network(name="blue", vni=4242, subnet="198.19.7.0/26", mtu=1450)  # 4 blocks of /28


@asynccontextmanager
async def hosts(*names: str) -> AsyncIterator[list[BlockAllocator]]:
    nodes = [GossipNode(name, "127.0.0.1", "127.0.0.1", 0) for name in names]
    try:
        for node in nodes:
            await node.start()
        for node in nodes[1:]:
            assert await node.join([("127.0.0.1", nodes[0].port)]) == 1
        await wait_for(lambda: all(len([m for m in n.members() if m.state == "alive"]) == len(nodes)
                                   for n in nodes))
        yield [BlockAllocator(Cluster(node, node.name), node.name, SETTLE, 300.0) for node in nodes]
    finally:
        for node in nodes:
            await node.stop()


def test_a_lone_host_allocates_lowest_free_addresses_in_its_first_block_and_releases_it() -> None:
    async def main() -> None:
        async with hosts("h0") as (alloc,):
            used: set[str] = set()
            first = await alloc.allocate(NET, lambda: used, None)
            block = ipam.block_order(NET.subnet, "h0")[0]
            assert ipaddress.IPv4Address(first) in ipaddress.IPv4Network(block)
            assert alloc.cluster.my_blocks(NET.name) == {block}
            assert alloc.holder(NET, block) == "h0"
            used.add(first)
            second = await alloc.allocate(NET, lambda: used, None)
            assert second not in used and ipam.block_of(NET.subnet, second) == block
            alloc.release_unused(NET, [second])
            assert alloc.cluster.my_blocks(NET.name) == {block}  # still holds an address there
            alloc.release_unused(NET, [])
            assert alloc.cluster.my_blocks(NET.name) == set()
            assert alloc.holder(NET, block) is None
    asyncio.run(main())


def test_a_full_subnet_is_a_conflict_that_says_what_to_do() -> None:
    async def main() -> None:
        async with hosts("h0") as (alloc,):
            small = Network(name="tiny", vni=4243, subnet="198.19.8.0/30", mtu=1450)
            used = {str(ip) for ip in ipaddress.IPv4Network(small.subnet).hosts()}
            with pytest.raises(Conflict, match="no free address.*larger subnet"):
                await alloc.allocate(small, lambda: used, None)
    asyncio.run(main())


def test_two_hosts_claiming_one_block_at_once_agree_on_one_winner() -> None:
    async def main() -> None:
        async with hosts("h0", "h1") as allocs:
            block = ipam.blocks(NET.subnet)[2]
            won = await asyncio.gather(*(a.claim(NET, block) for a in allocs))
            assert sorted(won) == [False, True]
            winner = "h0" if won[0] else "h1"
            await wait_for(lambda: all(a.holder(NET, block) == winner for a in allocs))
            loser = allocs[1] if won[0] else allocs[0]
            assert block not in loser.cluster.my_blocks(NET.name)  # the losing claim was withdrawn
    asyncio.run(main())


def test_hosts_allocate_from_different_blocks_and_a_requested_address_may_sit_in_anothers() -> None:
    async def main() -> None:
        async with hosts("h0", "h1") as (a0, a1):
            used: set[str] = set()
            ip0 = await a0.allocate(NET, lambda: used, None)
            used.add(ip0)
            block0 = ipam.block_of(NET.subnet, ip0)
            await wait_for(lambda: a1.holder(NET, block0) == "h0")
            ip1 = await a1.allocate(NET, lambda: used, None)
            assert ipam.block_of(NET.subnet, ip1) != block0  # never inside a block h0 holds
            used.add(ip1)
            inside = str(ipaddress.IPv4Address(ip0) + 1)
            assert await a1.allocate(NET, lambda: used, inside) == inside
            assert block0 not in a1.cluster.my_blocks(NET.name)  # no claim on a held block
            with pytest.raises(Conflict, match="already in use"):
                await a1.allocate(NET, lambda: used, ip0)
    asyncio.run(main())
