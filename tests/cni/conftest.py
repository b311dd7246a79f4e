"""Two podman "hosts": lab host namespaces a and b, each with its own overlayd, podman (CNI backend)
and our CNI plugin installed into a per-host CNI bin dir; the busybox image imported into both."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from overlaynet.lab import Host, Lab
from tests.support.engines import (
    PodmanEngine,
    engine_unavailable,
    start_hosts,
)

NETWORK = "cninet"
SUBNET = "198.19.40.0/24"


@dataclass
class PodmanHost:
    host: Host
    engine: PodmanEngine
    plugin: str  # the installed plugin executable


@dataclass
class PodmanCluster:
    lab: Lab
    a: PodmanHost
    b: PodmanHost


@pytest.fixture(scope="module")
def podman_cluster(prefix: str, busybox_tar: bytes) -> Iterator[PodmanCluster]:
    lab = Lab(f"{prefix}p")
    engines: list[PodmanEngine] = []
    try:
        hosts = {}
        for host in start_hosts(lab, ["a", "b"]):
            label = host.label
            engine = PodmanEngine(label, host.netns, os.path.join(lab.workdir, f"podman-{label}"), host.socket)
            engines.append(engine)
            plugin = engine.install_plugin()
            # "subnet" lets the first ADD anywhere create the network; later ones (any host) find it.
            engine.add_network(NETWORK, subnet=SUBNET)
            try:
                engine.import_image(busybox_tar)
            except AssertionError as e:
                engine_unavailable(f"podman cannot run here: {e}")
            hosts[label] = PodmanHost(host, engine, plugin)
        yield PodmanCluster(lab, hosts["a"], hosts["b"])
    finally:
        for engine in engines:
            try:
                engine.stop()
            except (OSError, subprocess.SubprocessError, AssertionError) as e:
                print(f"podman teardown on {engine.label}: {e}")
        lab.close()
