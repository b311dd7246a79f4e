"""Real container engines for the docker/cni tests: install them, run each inside a lab "host"
namespace next to that host's overlayd, and remove every trace afterwards.

How two engines share one machine:
- dockerd runs in the host's network namespace and in a private mount namespace of its own
  (`unshare -m --propagation slave` + `nsenter --net`). In it, a fresh sysfs shows the host
  namespace's devices (the cgroup hierarchies are carried over), and a bind mount puts this engine's
  plugin directory on /run/docker/plugins, where dockerd discovers plugins — so each engine finds
  its own `overlaynet.sock`. Own --data-root/--exec-root/-H; dockerd supervises its own containerd
  (own --address, root and state): the machine's /run/containerd is hidden under a tmpfs there.
  Its overlay2 and sandbox mounts live and die in that mount namespace.
- podman runs in the host's network namespace (so the CNI plugin, and overlayd, see the same
  namespace files under /run/netns) with its own CONTAINERS_CONF (ulimits this sandbox allows, the
  CNI bin and config dirs), its own --root/--runroot/--tmpdir, and the vfs storage driver (no mounts
  that could outlive it).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any, NoReturn

import pytest

from overlaynet.lab import Host, Lab, enter_netns, stop_process
from overlaynet.lab import wait_until as lab_wait_until

# Tests keep every overlay address in 198.19.0.0/16 (TESTING.md), so the plugin's default pool for
# networks made without --subnet is moved there instead of the product default (10.213.0.0/16).
TEST_DEFAULT_POOL = "198.19.192.0/18"

APT_PACKAGES = ["docker.io", "containerd", "docker-compose", "busybox-static", "podman",
                "containernetworking-plugins"]
# The binary each package brings (Debian paths: a newer docker client may come first in PATH).
REQUIRED = {
    "/usr/sbin/dockerd": "docker.io",
    "/usr/bin/docker": "docker.io",
    "/usr/bin/containerd": "containerd",
    "/usr/bin/docker-compose": "docker-compose",
    "/bin/busybox": "busybox-static",
    "/usr/bin/podman": "podman",
    "/usr/lib/cni/loopback": "containernetworking-plugins",
}
DOCKER = "/usr/bin/docker"
IMAGE = "overlaynet-test/busybox:latest"


class EngineUnavailable(Exception):
    """The engine truly cannot run here; see engine_unavailable() for what the tests do then."""


def engine_unavailable(what: str) -> NoReturn:
    """An engine cannot start: skip, saying why, on a developer's machine; FAIL under CI=true.

    A green CI that skipped every Docker and podman test proves nothing, so there an engine that
    does not start is a failure `.ci/run` reports, not a skip.
    """
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} (CI=true: engine tests must run, not skip)", pytrace=False)
    pytest.skip(what)


def _missing() -> list[str]:
    return sorted({pkg for path, pkg in REQUIRED.items() if not os.path.exists(path)})


def ensure_packages() -> None:
    """Install the engines from Debian if any is missing; EngineUnavailable if that fails."""
    missing = _missing()
    if not missing:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    steps = [
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *APT_PACKAGES],
    ]
    for argv in steps:
        try:
            result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise EngineUnavailable(f"cannot install {' '.join(missing)}: {' '.join(argv)}: {e}") from None
        if result.returncode != 0:
            raise EngineUnavailable(
                f"cannot install {' '.join(missing)}: `{' '.join(argv)}` failed: {result.stderr.strip()[-800:]}"
            )
    still = _missing()
    if still:
        raise EngineUnavailable(f"packages {' '.join(still)} still missing after apt-get install")


def build_busybox_rootfs(dest: str) -> str:
    """A minimal image root: static busybox and its applets, passwd/group for `id`/`ps`."""
    busybox = "/bin/busybox"
    os.makedirs(dest, exist_ok=True)
    for d in ("bin", "etc", "tmp", "proc", "sys", "dev", "root", "var/www"):
        os.makedirs(os.path.join(dest, d), exist_ok=True)
    shutil.copy2(busybox, os.path.join(dest, "bin", "busybox"))
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        link = os.path.join(dest, "bin", applet)
        if applet != "busybox" and not os.path.lexists(link):
            os.symlink("busybox", link)
    with open(os.path.join(dest, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    with open(os.path.join(dest, "etc", "group"), "w") as f:
        f.write("root:x:0:\nnogroup:x:65534:\n")
    with open(os.path.join(dest, "var", "www", "index.html"), "w") as f:
        f.write("overlaynet-ok\n")
    return dest


def rootfs_tar(rootfs: str) -> bytes:
    return subprocess.run(["tar", "-C", rootfs, "-c", "."], capture_output=True, check=True).stdout


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            pids.append(int(entry))
    return pids


def kill_processes_mentioning(text: str, timeout: float = 10.0) -> None:
    """TERM, then KILL, every process whose command line names `text` (our per-run work dir)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = _processes_mentioning(text)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if os.path.exists(f"/proc/{p}") and not _is_zombie(p)]
            time.sleep(0.05)
        if not pids:
            return


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def unmount_under(path: str) -> None:
    """Detach any mount left under `path` in our mount namespace (deepest first)."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in sorted((p for p in points if p == path or p.startswith(path + "/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    """lab.wait_until, failing as an assertion (the engine tests catch AssertionError to skip)."""
    try:
        return lab_wait_until(predicate, timeout, interval, what)
    except TimeoutError as e:
        raise AssertionError(str(e)) from None


def http_get_unix(sock_path: str, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    return http_unix(sock_path, "GET", path, timeout=timeout)


def http_unix(sock_path: str, method: str, path: str, body: bytes = b"", timeout: float = 2.0) -> tuple[int, bytes]:
    """One HTTP/1.0 request over a unix socket: (status, body)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(sock_path)
        s.sendall(f"{method} {path} HTTP/1.0\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


class DockerEngine:
    """dockerd + our overlaynet-docker plugin for one lab host."""

    def __init__(self, label: str, netns: str, workdir: str, api_socket: str) -> None:
        self.label = label
        self.netns = netns
        self.dir = workdir
        self.api_socket = api_socket
        self.sock = os.path.join(workdir, "docker.sock")
        self.plugin_dir = os.path.join(workdir, "plugins")
        self.plugin_socket = os.path.join(self.plugin_dir, "overlaynet.sock")
        self.plugin_state = os.path.join(workdir, "plugin-state")
        self.log_path = os.path.join(workdir, "dockerd.log")
        self.plugin_log_path = os.path.join(workdir, "plugin.log")
        self.process: subprocess.Popen[bytes] | None = None
        self.plugin: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"unix://{self.sock}"

    def start(self, timeout: float = 60.0) -> None:
        os.makedirs(self.plugin_dir, exist_ok=True)
        # The bind-mount target must exist. It is left in place afterwards (dockerd creates it
        # anyway): removing a directory that is a mount point in another mount namespace detaches
        # that mount, which would break a concurrent run's engine.
        os.makedirs("/run/docker/plugins", exist_ok=True)
        script = os.path.join(self.dir, "dockerd.sh")
        cg = os.path.join(self.dir, "cgroup")
        os.makedirs(cg, exist_ok=True)
        with open(script, "w") as f:
            f.write(f"""#!/bin/sh
set -e
# Private mount namespace, host network namespace: show this namespace's devices in /sys, keep the
# cgroup hierarchies, and give this engine its own plugin directory.
mount --rbind /sys/fs/cgroup {cg}
mount -t sysfs sysfs /sys
mount --rbind {cg} /sys/fs/cgroup
umount -l {cg}
mount --bind {self.plugin_dir} /run/docker/plugins
# Hide the machine's /run/containerd: dockerd would use a containerd.sock it finds there (a stale
# one makes it fail). With it hidden, dockerd starts and supervises its own containerd, with its
# own --address, root and state under this engine's --exec-root and --data-root.
mkdir -p /run/containerd
mount -t tmpfs -o size=1m,mode=0711 overlaynet-test-containerd /run/containerd
# Docker's own defaults otherwise (iptables, masquerading, forwarding, docker0): published ports
# and egress through docker_gwbridge are tested against a stock engine.
exec /usr/sbin/dockerd --host {self.host} --data-root {self.dir}/data --exec-root {self.dir}/exec \\
  --pidfile {self.dir}/dockerd.pid --storage-driver=overlay2 --log-level=info
""")
        log = open(self.log_path, "ab")
        # unshare, nsenter and sh all exec: the child's PID is dockerd's.
        self.process = subprocess.Popen(
            ["unshare", "-m", "--propagation", "slave", "nsenter", f"--net=/run/netns/{self.netns}",
             "sh", script],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EngineUnavailable(f"dockerd on {self.label} exited with {self.process.returncode}: "
                                        + self.log()[-1500:])
            try:
                if http_get_unix(self.sock, "/_ping")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise EngineUnavailable(f"dockerd on {self.label} not answering after {timeout}s: " + self.log()[-1500:])

    def restart(self, sig: int = signal.SIGTERM) -> None:
        """Stop dockerd with `sig` (SIGTERM: a clean shutdown that stops the containers; SIGKILL: a
        crash) and start it again on the same data root; the plugin keeps running throughout."""
        assert self.process is not None
        self.process.send_signal(sig)
        self.process.wait(60)
        # dockerd's own containerd dies with it; here PID 1 may leave it a zombie, whose pid file
        # would make the next dockerd wait for a containerd that never answers (a host's init
        # reaps it, so this is the harness standing in for init, not a product workaround).
        pid_file = os.path.join(self.dir, "exec", "containerd", "containerd.pid")
        try:
            with open(pid_file) as f:
                if _is_zombie(int(f.read().strip())):
                    os.unlink(pid_file)
        except (OSError, ValueError):
            pass
        self.start()

    def start_plugin(self, timeout: float = 20.0) -> None:
        log = open(self.plugin_log_path, "ab")
        self.plugin = subprocess.Popen(
            [sys.executable, "-m", "overlaynet.plugins.docker", "--socket", self.plugin_socket,
             "--api-socket", self.api_socket, "--docker-host", self.host, "--state-dir", self.plugin_state,
             "--log-level", "debug", "--default-pool", TEST_DEFAULT_POOL],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        log.close()
        wait_until(lambda: os.path.exists(self.plugin_socket) or self.plugin.poll() is not None,  # type: ignore[union-attr]
                   timeout, f"plugin socket {self.plugin_socket}")
        if self.plugin.poll() is not None:
            raise RuntimeError(f"overlaynet-docker exited with {self.plugin.returncode}: {self.plugin_log()[-2000:]}")

    def stop_plugin(self, sig: int = signal.SIGTERM) -> int | None:
        proc, self.plugin = self.plugin, None
        return None if proc is None else stop_process(proc, sig, 15)

    def docker(self, *args: str, check: bool = True, timeout: float = 120.0,
               input: bytes | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([DOCKER, "-H", self.host, *args], capture_output=True, timeout=timeout,
                                input=input)
        out = subprocess.CompletedProcess(result.args, result.returncode,
                                          result.stdout.decode(errors="replace"),
                                          result.stderr.decode(errors="replace"))
        if check and out.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} on {self.label} failed ({out.returncode}): "
                                 f"{out.stderr.strip()}\n--- plugin log tail ---\n{self.plugin_log()[-2500:]}")
        return out

    def docker_json(self, *args: str) -> Any:
        return json.loads(self.docker(*args).stdout)

    def compose(self, project_dir: str, *args: str, check: bool = True,
                timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "DOCKER_HOST": self.host, "COMPOSE_INTERACTIVE_NO_CLI": "1"}
        result = subprocess.run(["/usr/bin/docker-compose", *args], cwd=project_dir, env=env,
                                capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)} on {self.label} failed: "
                                 f"{result.stderr.strip()[-2000:]}\n--- plugin log ---\n{self.plugin_log()[-2500:]}")
        return result

    def import_image(self, tar: bytes, tag: str = IMAGE) -> None:
        self.docker("import", "-c", 'CMD ["/bin/sh"]', "-", tag, input=tar)

    def log(self) -> str:
        return _read(self.log_path)

    def plugin_log(self) -> str:
        return _read(self.plugin_log_path)

    def stop(self) -> None:
        """Containers and networks first (through the plugin, which must still run), then dockerd,
        its containerd and shims, the plugin, and the work dir."""
        if self.process is not None and self.process.poll() is None:
            ids = self.docker("ps", "-aq", check=False, timeout=30).stdout.split()
            if ids:
                self.docker("rm", "-f", *ids, check=False, timeout=60)
            nets = self.docker("network", "ls", "-q", "--filter", "driver=overlaynet", check=False,
                               timeout=30).stdout.split()
            if nets:
                self.docker("network", "rm", *nets, check=False, timeout=60)
            stop_process(self.process, timeout=20)
        self.process = None
        self.stop_plugin()
        kill_processes_mentioning(self.dir)
        unmount_under(self.dir)
        shutil.rmtree(self.dir, ignore_errors=True)


class PodmanEngine:
    """podman (CNI backend) for one lab host, with our CNI plugin installed for it."""

    def __init__(self, label: str, netns: str, workdir: str, api_socket: str) -> None:
        self.label = label
        self.netns = netns
        self.dir = workdir
        self.api_socket = api_socket
        self.cni_bin = os.path.join(workdir, "cni-bin")
        self.cni_conf = os.path.join(workdir, "cni-conf")
        self.conf_path = os.path.join(workdir, "containers.conf")
        os.makedirs(self.cni_conf, exist_ok=True)
        with open(self.conf_path, "w") as f:
            f.write(f"""[containers]
# No CAP_SYS_RESOURCE here: podman's default rlimits for root (1048576) would fail.
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[network]
network_backend = "cni"
cni_plugin_dirs = ["{self.cni_bin}", "/usr/lib/cni"]
network_config_dir = "{self.cni_conf}"
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
""")

    def install_plugin(self) -> str:
        result = subprocess.run([sys.executable, "-m", "overlaynet.plugins.cni", "install", "--dir", self.cni_bin],
                                capture_output=True, text=True, check=True)
        assert "installed" in result.stdout
        return os.path.join(self.cni_bin, "overlaynet-cni")

    def add_network(self, name: str, network: str | None = None, subnet: str | None = None,
                    cni_version: str = "1.0.0", egress: bool = False, portmap: bool = False) -> str:
        """A conflist for overlaynet-cni; with `portmap`, the standard portmap plugin chained after it."""
        plugin: dict[str, Any] = {"type": "overlaynet-cni", "socket": self.api_socket,
                                  "capabilities": {"ips": True, "aliases": True}}
        if network:
            plugin["network"] = network
        if subnet:
            plugin["subnet"] = subnet
        if egress:
            plugin["egress"] = True
        plugins = [plugin]
        if portmap:
            plugins.append({"type": "portmap", "capabilities": {"portMappings": True}})
        conf = {"cniVersion": cni_version, "name": name, "plugins": plugins}
        path = os.path.join(self.cni_conf, f"{name}.conflist")
        with open(path, "w") as f:
            json.dump(conf, f)
        return path

    def podman(self, *args: str, check: bool = True, timeout: float = 120.0,
               input: bytes | None = None) -> subprocess.CompletedProcess[str]:
        argv = ["/usr/bin/podman", "--root", f"{self.dir}/storage", "--runroot", f"{self.dir}/run",
                "--tmpdir", f"{self.dir}/tmp", "--storage-driver", "vfs", *args]
        env = {**os.environ, "CONTAINERS_CONF": self.conf_path}
        result = subprocess.run(argv, capture_output=True, timeout=timeout, input=input, env=env,
                                preexec_fn=enter_netns(self.netns))
        out = subprocess.CompletedProcess(result.args, result.returncode,
                                          result.stdout.decode(errors="replace"),
                                          result.stderr.decode(errors="replace"))
        if check and out.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} on {self.label} failed ({out.returncode}): "
                                 f"{out.stderr.strip()[-2500:]}")
        return out

    def import_image(self, tar: bytes, tag: str = IMAGE) -> None:
        self.podman("import", "-q", "-", tag, input=tar)

    def stop(self) -> None:
        if os.path.isdir(self.dir):
            self.podman("rm", "-f", "-a", "-t", "0", check=False, timeout=120)
        kill_processes_mentioning(self.dir)
        unmount_under(self.dir)
        shutil.rmtree(self.dir, ignore_errors=True)


def _read(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def run_in(netns: str, argv: Sequence[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                          preexec_fn=enter_netns(netns))


def fetch_from(netns: str, url: str) -> str:
    """What an HTTP GET from a lab namespace (a host, not a container) returns ("" on failure)."""
    return run_in(netns, ["/bin/busybox", "timeout", "5", "/bin/busybox", "wget", "-qO-", url]).stdout.strip()


# Quicker repairs and address claims than production defaults: tests wait on convergence.
FAST_DAEMON_ARGS = ["--resync-interval", "5", "--settle-time", "0.3"]


def start_hosts(lab: Lab, labels: Sequence[str]) -> list[Host]:
    """Lab hosts whose overlayds form one cluster over encrypted gossip (the first is the seed);
    each host keeps its own copy of the key file, as real hosts do."""
    key = base64.b64encode(os.urandom(32)).decode() + "\n"
    hosts = []
    for i, label in enumerate(labels):
        host = lab.add_host(label)
        key_file = os.path.join(lab.workdir, f"{label}.key")
        with open(os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(key)
        join = ["--join", hosts[0].address] if i else []
        lab.start_daemon(host, "--key-file", key_file, *FAST_DAEMON_ARGS, *join)
        hosts.append(host)
    return hosts
