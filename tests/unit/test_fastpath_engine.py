"""The engine's workers: whichever poll set a worker has, it serves it, also after stop() and start()."""

from __future__ import annotations

import socket
import time

import pytest

from overlaynet.dataplane import fastpath

pytestmark = pytest.mark.unit

INNER = bytes.fromhex("020000000002" "020000000001" "0800") + bytes(46)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_count(engine: fastpath.Engine, name: str, at_least: int) -> int:
    deadline = time.monotonic() + 10
    while (n := engine.global_counters()[name]) < at_least:
        assert time.monotonic() < deadline, f"{name} stayed at {n}"
        time.sleep(0.01)
    return n


@pytest.mark.parametrize("workers", [1, 2])
def test_workers_serve_the_socket_again_after_a_restart(workers: int) -> None:
    port = free_udp_port()
    engine = fastpath.Engine(bind="127.0.0.1", port=port, ntx=1, workers=workers)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            for _ in range(3):
                engine.start()
                seen = engine.global_counters()["rx_drop_unknown_vni"]
                tx.sendto(fastpath.encapsulate(77, INNER), ("127.0.0.1", port))  # no such network
                assert wait_for_count(engine, "rx_drop_unknown_vni", seen + 1) == seen + 1
                engine.stop()
    finally:
        engine.close()
