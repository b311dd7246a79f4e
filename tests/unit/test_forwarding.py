"""`forwarding_for`: the entries one network needs on this host, from the replicated endpoint table."""

from __future__ import annotations

import pytest

from overlaynet.agent.cluster import in_network
from overlaynet.agent.forwarding import Forwarding, forwarding_for
from overlaynet.model import EndpointRecord
from tests.support.records import endpoint_record

pytestmark = pytest.mark.unit

LOCAL = "198.18.0.1"


def record(ep_id: str, network: str, ip: str, mac: str, vtep: str) -> EndpointRecord:
    return endpoint_record(network, ip, vtep=vtep, ep_id=ep_id, mac=mac)


def test_remote_endpoints_of_the_network_become_fdb_neigh_and_flood_entries() -> None:
    records = [
        record("a", "blue", "198.19.0.2", "02:00:00:00:00:02", "198.18.0.2"),
        record("b", "blue", "198.19.0.3", "02:00:00:00:00:03", "198.18.0.3"),
        record("c", "blue", "198.19.0.4", "02:00:00:00:00:04", "198.18.0.3"),
    ]
    fwd = forwarding_for("blue", LOCAL, records)
    assert fwd.fdb == {"02:00:00:00:00:02": "198.18.0.2", "02:00:00:00:00:03": "198.18.0.3",
                       "02:00:00:00:00:04": "198.18.0.3"}
    assert fwd.neigh == {"198.19.0.2": "02:00:00:00:00:02", "198.19.0.3": "02:00:00:00:00:03",
                         "198.19.0.4": "02:00:00:00:00:04"}
    assert fwd.flood == {"198.18.0.2", "198.18.0.3"}  # one flood entry per remote VTEP


def test_local_endpoints_other_networks_and_vtepless_records_are_left_out() -> None:
    records = [
        record("local", "blue", "198.19.0.2", "02:00:00:00:00:02", LOCAL),  # the bridge delivers these
        record("red", "red", "198.19.1.2", "02:00:00:00:01:02", "198.18.0.2"),
        record("novtep", "blue", "198.19.0.6", "02:00:00:00:00:06", ""),
    ]
    assert forwarding_for("blue", LOCAL, records) == Forwarding()


def test_nothing_to_program_without_remote_endpoints() -> None:
    fwd = forwarding_for("blue", LOCAL, [])
    assert (fwd.fdb, fwd.neigh, fwd.flood) == ({}, {}, set())


def test_in_network_keeps_only_that_networks_records() -> None:
    records = [record("a", "blue", "198.19.0.2", "02:00:00:00:00:02", "198.18.0.2"),
               record("b", "red", "198.19.1.2", "02:00:00:00:01:02", "198.18.0.2")]
    assert [r.id for r in in_network(records, "blue")] == ["a"]
    assert in_network(records, "green") == []
