"""Replicated endpoint records for tests of what is derived from the `endpoints` table."""

from __future__ import annotations

from collections.abc import Iterable

from overlaynet.model import EndpointRecord, mac_for


def endpoint_record(network: str, ip: str, names: Iterable[str] = (), *, vtep: str = "198.18.0.2",
                    ep_id: str | None = None, mac: str | None = None) -> EndpointRecord:
    """A record as its host would publish it; id and MAC derived from the address unless given."""
    ep_id = ep_id or f"{network}-{ip}"
    return EndpointRecord(id=ep_id, network=network, ip=ip, prefixlen=24, mac=mac or mac_for(ep_id),
                          host=f"h-{vtep}", vtep=vtep, names=tuple(names))
