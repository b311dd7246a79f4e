"""The records of the replicated tables as the agent reads them: the endpoint record
(model.EndpointRecord) and the network record (model.Network). Their wire form is what hosts
running other versions write and read, and what is already stored, so it must not change; a
peer's row that is not a record is left out rather than programmed or raised on."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator

import msgpack
import pytest
import uvloop

from overlaynet.agent.cluster import ENDPOINTS, NETWORKS, Cluster
from overlaynet.agent.state import StateStore
from overlaynet.gossip.transport import GossipNode
from overlaynet.model import Endpoint, EndpointRecord, Network
from tests.support.waiting import wait_for

pytestmark = pytest.mark.unit

ENDPOINT = Endpoint(id="3f2a" * 16, network="blue", ip="198.19.1.20", prefixlen=24, mac="02:3f:2a:3f:2a:3f",
                    ifname="eth0", netns="/proc/4242/ns/net", mtu=1450, host="h1", vtep="198.18.0.1",
                    created_at=1764547200.25, labels={"owner": "cni"}, names=["web", "front"])
# Exactly what overlayd published for ENDPOINT before the record was typed (cluster.put_endpoint).
PUBLISHED = {"id": ENDPOINT.id, "network": "blue", "ip": "198.19.1.20", "prefixlen": 24, "mac": "02:3f:2a:3f:2a:3f",
             "host": "h1", "vtep": "198.18.0.1", "names": ["web", "front"]}
# Exactly the state files that code wrote for ENDPOINT and its network.
ENDPOINT_FILE = """{
 "created_at": 1764547200.25,
 "host": "h1",
 "id": "3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a",
 "ifname": "eth0",
 "ip": "198.19.1.20",
 "labels": {
  "owner": "cni"
 },
 "mac": "02:3f:2a:3f:2a:3f",
 "mtu": 1450,
 "names": [
  "web",
  "front"
 ],
 "netns": "/proc/4242/ns/net",
 "network": "blue",
 "prefixlen": 24,
 "vtep": "198.18.0.1"
}"""
NETWORK_FILE = """{
 "created_at": 1764547100.5,
 "egress": false,
 "gateway": "198.19.1.1",
 "mtu": 1450,
 "name": "blue",
 "options": {},
 "owner": "h1",
 "subnet": "198.19.1.0/24",
 "vni": 4242
}"""


def test_the_published_record_is_byte_for_byte_what_it_was() -> None:
    record = ENDPOINT.record
    assert record.to_record() == PUBLISHED
    assert msgpack.packb(record.to_record()) == msgpack.packb(PUBLISHED)  # the key order too
    assert msgpack.packb(EndpointRecord.from_record(PUBLISHED).to_record()) == msgpack.packb(PUBLISHED)


def test_a_record_from_before_dns_names_reads_as_one_without_names() -> None:
    old = {k: v for k, v in PUBLISHED.items() if k != "names"}
    record = EndpointRecord.from_record(old)
    assert record.names == () and (record.id, record.ip, record.mac, record.vtep) == \
        (ENDPOINT.id, "198.19.1.20", "02:3f:2a:3f:2a:3f", "198.18.0.1")


@pytest.mark.parametrize("broken", [
    {k: v for k, v in PUBLISHED.items() if k != "mac"},
    {**PUBLISHED, "ip": 7},
    {**PUBLISHED, "vtep": None},
    {**PUBLISHED, "prefixlen": "24"},
    {**PUBLISHED, "names": "web"},
    {**PUBLISHED, "names": ["web", 3]},
    {"id": "x"},
])
def test_what_is_not_an_endpoint_record_is_refused(broken: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="not an endpoint record"):
        EndpointRecord.from_record(broken)


def test_a_state_dir_written_before_the_change_loads_and_is_written_back_unchanged(tmp_path) -> None:
    old = tmp_path / "old"
    (old / "endpoints").mkdir(parents=True)
    (old / "networks").mkdir()
    (old / "endpoints" / f"{ENDPOINT.id}.json").write_text(ENDPOINT_FILE)
    (old / "networks" / "blue.json").write_text(NETWORK_FILE)
    store = StateStore(str(old))
    endpoints = [Endpoint.from_dict(data) for _, data in store.items("endpoints")]
    networks = [Network.from_dict(data) for _, data in store.items("networks")]
    assert endpoints == [ENDPOINT] and store.quarantined == {}
    assert endpoints[0].record.to_record() == PUBLISHED
    again = StateStore(str(tmp_path / "new"))
    again.write(endpoints[0].to_dict(), "endpoints", f"{ENDPOINT.id}.json")
    again.write(networks[0].to_dict(), "networks", "blue.json")
    assert (tmp_path / "new" / "endpoints" / f"{ENDPOINT.id}.json").read_text() == ENDPOINT_FILE
    assert (tmp_path / "new" / "networks" / "blue.json").read_text() == NETWORK_FILE
    assert json.loads(NETWORK_FILE) == networks[0].to_dict()


@contextlib.asynccontextmanager
async def two_hosts() -> AsyncIterator[tuple[Cluster, GossipNode]]:
    """h0's view of the cluster (what its agent reads) and a peer h1 that writes rows into it."""
    nodes = [GossipNode(f"h{i}", "127.0.0.1", "127.0.0.1", 0, None, {}) for i in range(2)]
    try:
        for n in nodes:
            await n.start()
        assert await nodes[1].join([("127.0.0.1", nodes[0].port)]) == 1
        yield Cluster(nodes[0], "h0"), nodes[1]
    finally:
        for n in nodes:
            await n.stop()


def test_peers_records_old_new_and_broken_over_real_gossip() -> None:
    """A peer of an older version (no names) is read; a peer's broken record is left out, the rest
    of the table is still read."""
    async def main() -> None:
        async with two_hosts() as (cluster, peer):
            old = {k: v for k, v in PUBLISHED.items() if k != "names"}
            peer.set(ENDPOINTS, "old", {**old, "id": "old"})
            peer.set(ENDPOINTS, "new", {**PUBLISHED, "id": "new"})
            peer.set(ENDPOINTS, "broken", {"id": "broken", "network": "blue", "ip": 7})
            await wait_for(lambda: len(cluster.node.table(ENDPOINTS)) == 3)
            seen = cluster.endpoints()
            assert sorted(seen) == ["new", "old"]
            assert seen["old"].names == () and seen["new"].names == ("web", "front")
            assert cluster.endpoints() == seen  # read again: the same, from the decoded cache
            assert cluster.unreadable_rows() == {"endpoints": 1, "networks": 0}
            assert sorted(r.id for r in cluster.endpoints_of({"h1"})) == ["new", "old"]
            peer.delete(ENDPOINTS, "new")
            await wait_for(lambda: sorted(cluster.endpoints()) == ["old"])

    uvloop.run(main())  # the transport runs on uvloop, as in overlayd


def test_a_peers_broken_network_row_is_left_out_and_the_rest_still_read() -> None:
    async def main() -> None:
        async with two_hosts() as (cluster, peer):
            good = json.loads(NETWORK_FILE)
            peer.set(NETWORKS, "blue", good)
            peer.set(NETWORKS, "nameless", {k: v for k, v in good.items() if k != "name"})
            peer.set(NETWORKS, "odd", {**good, "name": "odd", "subnet": 24})
            await wait_for(lambda: len(cluster.node.table(NETWORKS)) == 3)
            assert cluster.networks() == {"blue": Network.from_dict(good)}
            assert cluster.unreadable_rows() == {"endpoints": 0, "networks": 2}
            peer.delete(NETWORKS, "odd")
            await wait_for(lambda: cluster.unreadable_rows()["networks"] == 1)

    uvloop.run(main())
