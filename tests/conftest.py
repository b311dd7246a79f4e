"""Shared fixtures: a per-run name prefix, namespaces that are always removed, and a leak check.

Everything a test creates (namespaces, devices in the root namespace, processes) carries the run's
prefix, so concurrent runs never collide and the session-end leak check can tell ours apart.
"""

from __future__ import annotations

import itertools
import os
import secrets
import subprocess
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from overlaynet.lab import Lab

# Short: Linux device names are at most 15 characters and the prefix is only their start.
RUN_PREFIX = os.environ.get("OVERLAYNET_TEST_PREFIX") or "t" + secrets.token_hex(2)


def is_root() -> bool:
    return os.geteuid() == 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    needs_root = {"integration", "cluster", "docker", "cni", "soak"}
    for item in items:
        markers = {m.name for m in item.iter_markers()}
        if markers & needs_root and not is_root():
            item.add_marker(pytest.mark.skip(reason="needs root (network namespaces, devices)"))


@pytest.fixture(scope="session")
def prefix() -> str:
    """The run's unique name prefix (e.g. 't3fa0'); start every created object's name with it."""
    return RUN_PREFIX


@pytest.fixture
def netns(prefix: str) -> Iterator[NetnsFactory]:
    """Create named network namespaces (under /run/netns) that are removed after the test."""
    factory = NetnsFactory(prefix)
    try:
        yield factory
    finally:
        factory.remove_all()


class NetnsFactory:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.created: list[str] = []
        self._counter = 0

    def __call__(self, label: str = "ns") -> str:
        from pyroute2 import netns as pyroute2_netns

        self._counter += 1
        name = f"{self.prefix}-{label}{self._counter}"
        pyroute2_netns.create(name)
        self.created.append(name)
        # Loopback up: many tools (and the kernel's own local delivery) expect it.
        from pyroute2 import IPRoute

        with IPRoute(netns=name) as ipr:
            idx = ipr.link_lookup(ifname="lo")[0]
            ipr.link("set", index=idx, state="up")
        return name

    def remove_all(self) -> None:
        from pyroute2 import netns as pyroute2_netns

        for name in reversed(self.created):
            try:
                pyroute2_netns.remove(name)
            except OSError:
                pass
        self.created.clear()


_lab_numbers = itertools.count(1)


@pytest.fixture
def lab(prefix: str) -> Iterator[Lab]:
    """A multi-host lab (overlaynet/lab.py) named with the run's prefix, removed even on failure."""
    from overlaynet.lab import Lab

    lab = Lab(prefix=f"{prefix}l{next(_lab_numbers)}")
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture(scope="session")
def busybox_tar(prefix: str) -> bytes:
    """A busybox-static root filesystem as a tar stream, for `docker import` / `podman import`.

    Installs the container engines' Debian packages first; skips (saying why) if that fails, or
    fails under CI=true (tests/support/engines.py: engine_unavailable).
    """
    import shutil

    from tests.support.engines import (
        EngineUnavailable,
        build_busybox_rootfs,
        engine_unavailable,
        ensure_packages,
        rootfs_tar,
    )

    try:
        ensure_packages()
    except EngineUnavailable as e:
        engine_unavailable(f"container engines unavailable: {e}")
    rootfs = f"/tmp/{prefix}-rootfs"
    try:
        return rootfs_tar(build_busybox_rootfs(rootfs))
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)


def _leftovers(prefix: str) -> list[str]:
    found: list[str] = []
    if os.path.isdir("/run/netns"):
        found += [f"namespace /run/netns/{n}" for n in os.listdir("/run/netns") if n.startswith(prefix)]
    try:
        with open("/proc/net/dev") as f:
            devs = [line.split(":")[0].strip() for line in f.readlines()[2:]]
        found += [f"device {d}" for d in devs if d.startswith(prefix)]
    except OSError:
        pass
    with open("/proc/self/mountinfo") as f:
        found += [f"mount {line.split()[4]}" for line in f if prefix in line.split()[4]]
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    found += [f"process {line.strip()}" for line in ps.splitlines() if prefix in line and "pytest" not in line]
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not is_root() or os.environ.get("OVERLAYNET_SKIP_LEAK_CHECK"):
        return
    leftovers = _leftovers(RUN_PREFIX)
    if leftovers:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        text = "LEAK CHECK FAILED — tests left these behind:\n  " + "\n  ".join(leftovers)
        if reporter:
            reporter.write_line(text, red=True, bold=True)
        session.exitstatus = 1
