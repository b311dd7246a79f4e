"""The asyncio transport on real loopback sockets: 3 encrypted nodes converge and share a table
entry; a node with the wrong key stays out; leave is seen as "left"."""

from __future__ import annotations

import asyncio
import struct

import msgpack
import pytest
import uvloop

from overlaynet.gossip import GossipConfig, Keyring, KeyringChange, MemberChange, TableChange, codec
from overlaynet.gossip.keyring import generate_key
from overlaynet.gossip.transport import GossipNode
from tests.support.waiting import wait_for

pytestmark = pytest.mark.unit


def alive_names(node: GossipNode) -> set[str]:
    return {m.name for m in node.members() if m.state == "alive"}


def test_three_encrypted_nodes_converge_and_share_tables(tmp_path) -> None:
    async def main() -> None:
        key = generate_key()
        keyfile = tmp_path / "keys"
        Keyring([key], path=keyfile).save()
        nodes = [GossipNode(f"h{i}", "127.0.0.1", "127.0.0.1", 0, Keyring.load(keyfile) if i == 0
                            else Keyring([key]), {"vtep": f"198.18.0.{i + 1}"}) for i in range(3)]
        events: list[object] = []
        nodes[2].subscribe(events.append)
        key_events: list[KeyringChange] = []
        nodes[0].subscribe(lambda e: key_events.append(e) if isinstance(e, KeyringChange) else None)
        try:
            for n in nodes:
                await n.start()
            assert nodes[0].port != 0 and len({n.port for n in nodes}) == 3
            assert await nodes[1].join([("127.0.0.1", nodes[0].port)]) == 1
            assert await nodes[2].join([("127.0.0.1", nodes[1].port)]) == 1
            await wait_for(lambda: all(alive_names(n) == {"h0", "h1", "h2"} for n in nodes))
            assert {m.name: m.meta["vtep"] for m in nodes[0].members()}["h2"] == "198.18.0.3"

            nodes[0].set("endpoints", "ep1", {"ip": "198.19.0.10", "mac": "02:00:00:00:00:0a"})
            await wait_for(lambda: all("ep1" in n.table("endpoints") for n in nodes))
            assert any(isinstance(e, TableChange) and e.key == "ep1" and e.owner == "h0" for e in events)
            assert nodes[1].record("endpoints", "ep1").owner == "h0"
            nodes[1].delete("endpoints", "ep1")
            await wait_for(lambda: all(n.table("endpoints") == {} for n in nodes))
            tomb = nodes[2].records("endpoints")  # the tombstone is still stored, with its deleter
            assert [(r.key, r.value, r.owner) for r in tomb] == [("ep1", None, "h1")]

            # Rotate the key cluster-wide from h1; h0 reports each change it applied.
            new = generate_key()
            nodes[1].key_op("install", new)
            await wait_for(lambda: all(new in n.keyring.keys for n in nodes if n.keyring))
            nodes[1].key_op("use", new)
            await wait_for(lambda: all(n.keyring.primary == new for n in nodes if n.keyring))
            await wait_for(lambda: [e.op for e in key_events] == ["install", "use"])
            # The key file has one owner, the daemon (on KeyringChange): the transport never writes it.
            assert Keyring.load(keyfile).keys == [key]
            nodes[2].set("networks", "blue", {"vni": 4242})
            await wait_for(lambda: all("blue" in n.table("networks") for n in nodes))

            stats = nodes[0].stats()
            assert stats["packets_in"] > 0 and stats["packets_out"] > 0 and stats["encrypted"] is True
            assert stats["auth_failed"] == 0 and stats["malformed"] == 0 and stats["internal_errors"] == 0

            await nodes[2].leave()
            await nodes[2].stop()
            await wait_for(lambda: all({m.name: m.state for m in n.members()}["h2"] == "left" for n in nodes[:2]))
            assert any(isinstance(e, MemberChange) and e.name == "h2" for e in events)
        finally:
            for n in nodes:
                await n.stop()

    uvloop.run(main())


def test_wrong_key_stays_out() -> None:
    async def main() -> None:
        key = generate_key()
        cfg = GossipConfig(push_pull_interval=0.5)
        good = [GossipNode(f"g{i}", "127.0.0.1", "127.0.0.1", 0, Keyring([key]), {}, cfg) for i in range(2)]
        bad = GossipNode("bad", "127.0.0.1", "127.0.0.1", 0, Keyring([generate_key()]), {}, cfg)
        try:
            for n in [*good, bad]:
                await n.start()
            assert await good[1].join([("127.0.0.1", good[0].port)]) == 1
            assert await bad.join([("127.0.0.1", good[0].port)]) == 0
            await wait_for(lambda: all(alive_names(n) == {"g0", "g1"} for n in good))
            bad.set("endpoints", "evil", {"ip": "198.19.9.9"})
            await asyncio.sleep(1.5)
            assert all("bad" not in alive_names(n) and n.table("endpoints") == {} for n in good)
            assert good[0].stats()["auth_failed"] > 0
        finally:
            for n in [*good, bad]:
                await n.stop()

    asyncio.run(main())


def test_join_counts_only_a_full_state_reply() -> None:
    """The core says whether a join worked: a seed that answers with a readable packet that is not a
    full-state reply (here: a lone ack) is no successful join, nor is one that answers garbage."""
    async def main() -> None:
        ack_only = msgpack.packb([codec.VERSION, "seed", [[3, 1]]])  # [version, sender, [ACK seq]]
        answers = [ack_only, b"\x00garbage"]

        async def fake_seed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            (n,) = struct.unpack("!I", await reader.readexactly(4))
            await reader.readexactly(n)
            answer = answers.pop(0)
            writer.write(struct.pack("!I", len(answer)) + answer)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(fake_seed, "127.0.0.1", 0)
        seed = ("127.0.0.1", server.sockets[0].getsockname()[1])
        real = GossipNode("real", "127.0.0.1", "127.0.0.1", 0)
        node = GossipNode("joiner", "127.0.0.1", "127.0.0.1", 0)
        try:
            await real.start()
            await node.start()
            assert await node.join([seed]) == 0  # readable, but not a full-state reply
            assert await node.join([seed]) == 0  # unreadable
            assert await node.join([("127.0.0.1", real.port)]) == 1
        finally:
            await node.stop()
            await real.stop()
            server.close()
            await server.wait_closed()

    asyncio.run(main())
