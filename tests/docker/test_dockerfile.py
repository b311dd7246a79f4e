"""The repository's Dockerfile, built and run for real, with no registry.

The base image is made here with `docker import` from this machine's own Debian Python (interpreter,
standard library and the shared libraries they and libnftables load) on top of static busybox; the
wheelhouse is built from the checkout. The container then runs overlayd as the host's daemon
(--net=host --pid=host --privileged, the state dir bind-mounted rshared): it answers on its socket,
and a network's sandbox mount, made inside the container, reaches the engine's mount namespace.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from overlaynet.api.client import Client
from overlaynet.lab import Lab, wait_until
from tests.support.engines import (
    DockerEngine,
    EngineUnavailable,
    build_busybox_rootfs,
    engine_unavailable,
    rootfs_tar,
    unmount_under,
)

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
PYTHON = "/usr/bin/python3.11"
# --privileged asks for every capability. Where this machine's own sandbox withholds one
# (CAP_SYS_RESOURCE, here), the same privileges are asked for one by one, without it.
_BOUNDING = int(open("/proc/self/status").read().split("CapBnd:")[1].split()[0], 16)
PRIVILEGED = ["--privileged"] if _BOUNDING >> 24 & 1 else [
    "--cap-add=ALL", "--cap-drop=SYS_RESOURCE", "--security-opt", "seccomp=unconfined",
    "--security-opt", "apparmor=unconfined", "--security-opt", "systempaths=unconfined", "--device", "/dev/net/tun"]
BASE, IMAGE = "overlaynet-test/pybase:latest", "overlaynet-test/overlayd:latest"


def _copy_into(rootfs: str, path: str) -> None:
    """Copy a file to the same path under rootfs (following symlinks; /lib is /usr/lib here)."""
    real = os.path.realpath(path)
    for name in {path, real}:
        dest = os.path.join(rootfs, name.lstrip("/"))
        if name.startswith("/lib/"):
            dest = os.path.join(rootfs, "usr", name.lstrip("/"))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if not os.path.exists(dest):
            shutil.copy2(real, dest)


def build_python_rootfs(dest: str) -> str:
    if not os.path.exists(PYTHON) or not os.path.exists("/usr/lib/x86_64-linux-gnu/libnftables.so.1"):
        engine_unavailable("needs Debian's python3.11 and libnftables1 to make a base image offline")
    build_busybox_rootfs(dest)
    os.symlink("usr/lib", os.path.join(dest, "lib"))
    shutil.copytree("/usr/lib/python3.11", os.path.join(dest, "usr/lib/python3.11"), symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__", "test", "idlelib", "tkinter",
                                                  # python:3.11-slim, which this base stands in for,
                                                  # is not marked externally managed (PEP 668)
                                                  "EXTERNALLY-MANAGED"))
    elves = [PYTHON, "/usr/lib/x86_64-linux-gnu/libnftables.so.1",
             *glob.glob("/usr/lib/python3.11/lib-dynload/*.so")]
    # What a manylinux wheel may link against (PEP 600's base libraries), as any glibc image has.
    manylinux = [f"/usr/lib/x86_64-linux-gnu/{lib}" for lib in (
        "libpthread.so.0", "libdl.so.2", "librt.so.1", "libutil.so.1", "libgcc_s.so.1", "libstdc++.so.6",
        "libresolv.so.2", "libm.so.6", "libc.so.6")]
    needed = set(elves) | {lib for lib in manylinux if os.path.exists(lib)} | {"/lib64/ld-linux-x86-64.so.2"}
    for elf in elves:
        out = subprocess.run(["ldd", elf], capture_output=True, text=True).stdout
        needed |= set(re.findall(r"=> (/\S+)", out))
    for path in needed:
        _copy_into(dest, path)
    os.makedirs(os.path.join(dest, "usr/bin"), exist_ok=True)
    os.symlink("python3.11", os.path.join(dest, "usr/bin/python3"))
    shutil.copy2("/etc/ld.so.cache", os.path.join(dest, "etc/ld.so.cache"))
    return dest


@pytest.fixture(scope="module")
def engine(prefix: str, tmp_path_factory) -> Iterator[tuple[Lab, DockerEngine]]:
    with Lab(prefix=f"{prefix}i") as lab:
        host = lab.add_host("h1")
        work = str(tmp_path_factory.mktemp("dockerfile"))
        engine = DockerEngine("h1", host.netns, os.path.join(work, "engine"), host.socket)
        os.makedirs(engine.dir)
        try:
            engine.start()
        except EngineUnavailable as e:
            engine_unavailable(str(e))
        try:
            yield lab, engine
        finally:
            engine.stop()


def test_dockerfile_builds_from_a_local_base_and_runs_overlayd(engine, tmp_path):
    lab, docker = engine
    host = lab.hosts["h1"]
    docker.import_image(rootfs_tar(build_python_rootfs(str(tmp_path / "rootfs"))), BASE)
    context = tmp_path / "context"
    context.mkdir()
    shutil.copy(REPO / "Dockerfile", context / "Dockerfile")
    wheels = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "-w",
                             str(context / "wheelhouse"), str(REPO), "pip"], capture_output=True, text=True,
                            timeout=600)
    assert wheels.returncode == 0, wheels.stderr[-2000:]
    built = docker.docker("build", "-q", "--build-arg", f"BASE={BASE}", "-t", IMAGE, str(context), check=False,
                          timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]

    state, run = tmp_path / "state", tmp_path / "run"
    state.mkdir()
    run.mkdir()
    # rshared needs a shared mount at the source, in the engine's mount namespace (as `/` is on a
    # systemd host); the sandbox mounts made in the container then appear there.
    dockerd = docker.process.pid
    subprocess.run(["nsenter", "-t", str(dockerd), "-m", "sh", "-c",
                    f"mount --bind {state} {state} && mount --make-shared {state}"], check=True)
    try:
        started = docker.docker("run", "-d", "--name", "overlayd", "--net=host", "--pid=host", *PRIVILEGED,
                                "-v", f"{state}:/var/lib/overlaynet:rshared", "-v", f"{run}:/run/overlaynet",
                                "-v", "/run/netns:/run/netns:rslave",
                                IMAGE, "--config", "/dev/null", "--name", "h1", "--advertise", host.address,
                                "--plaintext", check=False)
        assert started.returncode == 0, started.stderr
        api = Client(str(run / "overlayd.sock"), timeout=10)
        wait_until(lambda: os.path.exists(run / "overlayd.sock") and api.health(), timeout=60,
                   what="overlayd in the container answering")
        assert api.status()["name"] == "h1"
        api.create_network("boxed", "198.19.70.0/24")
        ns = lab.add_container("boxed")
        api.create_endpoint("boxed", netns=f"/run/netns/{ns}")
        # The network's sandbox is a bind mount made in the container; it reached the engine's mounts.
        with open(f"/proc/{dockerd}/mountinfo") as f:
            assert "/netns/vni-" in f.read()
        assert api.health()["status"] == "ok"
        version = docker.docker("exec", "overlayd", "overlayctl", "--version").stdout
        assert version.startswith("overlayctl ")
    finally:
        logs = docker.docker("logs", "overlayd", check=False).stderr
        docker.docker("rm", "-f", "overlayd", check=False)
        subprocess.run(["nsenter", "-t", str(dockerd), "-m", "sh", "-c",
                        f"umount -R {state} || umount -l {state}"], check=False)
        unmount_under(str(state))
        print(logs[-3000:])
