"""Two Docker "hosts": lab host namespaces a and b, each with its own overlayd, dockerd and
overlaynet-docker plugin, and the test busybox image imported into both engines."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from overlaynet.lab import Host, Lab
from tests.support.engines import (
    DockerEngine,
    EngineUnavailable,
    engine_unavailable,
    start_hosts,
)


@dataclass
class DockerHost:
    host: Host
    engine: DockerEngine


@dataclass
class DockerCluster:
    lab: Lab
    a: DockerHost
    b: DockerHost

    def overlayctl_json(self, h: DockerHost, *args: str) -> object:
        return self.lab.overlayctl_json(h.host, *args)


@pytest.fixture(scope="module")
def docker_cluster(prefix: str, busybox_tar: bytes) -> Iterator[DockerCluster]:
    lab = Lab(f"{prefix}d")
    engines: list[DockerEngine] = []
    try:
        hosts = {}
        for host in start_hosts(lab, ["a", "b"]):
            label = host.label
            engine = DockerEngine(label, host.netns, os.path.join(lab.workdir, f"docker-{label}"), host.socket)
            os.makedirs(engine.dir, exist_ok=True)
            engines.append(engine)
            try:
                engine.start()
            except EngineUnavailable as e:
                engine_unavailable(f"dockerd cannot start here: {e}")
            engine.start_plugin()
            engine.import_image(busybox_tar)
            hosts[label] = DockerHost(host, engine)
        yield DockerCluster(lab, hosts["a"], hosts["b"])
    finally:
        for engine in engines:
            try:
                engine.stop()
            except (OSError, subprocess.SubprocessError, AssertionError) as e:
                print(f"docker teardown on {engine.label}: {e}")
        lab.close()
