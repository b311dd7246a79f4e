"""Network namespaces by path: sandboxes we own, and targets (containers) we are given.

A sandbox is a netns bind-mounted at a path inside the daemon's state dir. Namespaces are always
named by path, never by a fixed name under /run/netns, so several daemons on one machine never
collide. Switching namespaces happens only in short-lived private threads (setns affects just the
calling thread), so every function here is safe to call from an asyncio executor thread.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import threading
from collections.abc import Callable
from typing import TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from .errors import KernelError
from .names import sandbox_path

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MNT_DETACH = 2
NS_GET_NSTYPE = 0xB703  # _IO(0xb7, 0x3): which kind of namespace an nsfs fd is
NETNS_RUN_DIR = "/run/netns"

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _check(ret: int, what: str, path: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", path)


def _setns(fd: int, path: str) -> None:
    _check(_libc.setns(fd, CLONE_NEWNET), "setns", path)


def _umount(path: str) -> None:
    """Detach whatever is mounted at path; not being a mount point is fine."""
    if _libc.umount2(path.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            raise OSError(err, f"umount: {os.strerror(err)}", path)


def is_netns(path: str) -> bool:
    """True if path is a live network namespace (nsfs mount, /proc/PID/ns/net, ...)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return fcntl.ioctl(fd, NS_GET_NSTYPE) == CLONE_NEWNET
    except OSError:  # ENOTTY: a plain file, e.g. a mount point whose mount is gone
        return False
    finally:
        os.close(fd)


def _in_private_thread(fn: Callable[..., T], *args: object) -> T:
    """Run fn(*args) in a fresh thread that ends afterwards; return its result or raise its error.

    Whatever namespace the thread switches to dies with it, so no thread of the caller (or of an
    executor pool) is ever left in a foreign namespace.
    """
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["value"] = fn(*args)
        except BaseException as exc:  # handed over to the caller's thread below
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="overlaynet-netns", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


def _enter_and_call(path: str, fn: Callable[..., T], *args: object) -> T:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(fd, path)
    finally:
        os.close(fd)
    return fn(*args)


def call_in_netns(path: str, fn: Callable[..., T], *args: object) -> T:
    """Run fn(*args) inside the netns at path (in a private thread) and return its result.

    Sockets and devices fn creates stay in that namespace after the thread is gone.
    """
    return _in_private_thread(_enter_and_call, path, fn, *args)


def netns_identity(path: str) -> tuple[int, int]:
    """(st_dev, st_ino) of a netns: equal for /proc/PID/ns/net and a bind mount of the same netns."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise KernelError(f"network namespace {path!r} not found: {exc.strerror}") from None
    return st.st_dev, st.st_ino


def netns_matching(identity: tuple[int, int], paths: dict[str, str]) -> list[str]:
    """The keys of `paths` whose namespace is `identity` (paths that are gone match nothing)."""
    out = []
    for key, path in paths.items():
        try:
            if netns_identity(path) == identity:
                out.append(key)
        except KernelError:
            continue
    return out


def netns_attached(spec: str, attached: dict[str, str]) -> tuple[str, list[str]]:
    """The path of the netns a user gave (resolve_netns), and the keys of `attached` that are that
    same namespace (netns_matching): one call for what an attach or detach checks first."""
    path = resolve_netns(spec)
    return path, netns_matching(netns_identity(path), attached)


def current_netns_identity() -> tuple[int, int]:
    """Identity of the calling thread's netns (not the process's: threads may differ)."""
    return netns_identity("/proc/thread-self/ns/net")


def resolve_netns(spec: str) -> str:
    """A netns path from a user-given spec: a bare name means /run/netns/NAME, a path is kept.

    Raises KernelError if it does not exist or is not a network namespace.
    """
    path = spec if "/" in spec else os.path.join(NETNS_RUN_DIR, spec)
    if not os.path.exists(path):
        raise KernelError(
            f"network namespace {spec!r} not found: {path} does not exist "
            "(give a name under /run/netns, /proc/PID/ns/net or /var/run/docker/netns/ID)"
        )
    if not is_netns(path):
        raise KernelError(
            f"network namespace {spec!r} not found: {path} exists but is not a network namespace "
            "(a leftover file whose namespace is gone? give a live one)"
        )
    return path


def sandbox_exists(path: str) -> bool:
    """True if a live sandbox netns is mounted at path."""
    return is_netns(path)


def _loopback_up() -> None:
    with IPRoute() as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")


def _unshare_and_mount(path: str) -> None:
    # Runs in a private thread: unshare gives only this thread a new netns, the bind mount keeps it
    # alive after the thread ends.
    _check(_libc.unshare(CLONE_NEWNET), "unshare", path)
    _check(_libc.mount(b"/proc/thread-self/ns/net", path.encode(), b"none", MS_BIND, None), "mount", path)
    _loopback_up()


def ensure_sandbox(path: str) -> bool:
    """Make a netns bind-mounted at path exist, with lo up. Returns True if it was created.

    A live one is kept untouched (adopted after a restart). A leftover file that is no longer a
    netns (e.g. after a reboot) is replaced.
    """
    from . import mount_home  # it builds on this module
    from .links import converge_link, get_link  # likewise
    from .rtnl import rtnl

    if is_netns(path):
        with rtnl(path) as ipr:  # inside a batch, the handle the next verbs use too
            converge_link(ipr, get_link(ipr, "lo"))
        mount_home.pin(path)  # a no-op unless we run in a private mount namespace
        return False
    try:
        if os.path.lexists(path):
            _umount(path)
            os.unlink(path)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    except OSError as exc:
        raise KernelError(f"cannot create sandbox namespace at {path}: {exc.strerror}") from None
    try:
        _in_private_thread(_unshare_and_mount, path)
    except OSError as exc:
        remove_sandbox(path)
        raise KernelError(f"cannot create sandbox namespace at {path}: {exc}") from None
    mount_home.pin(path)
    return True


def _delete_all_links() -> None:
    with IPRoute() as ipr:
        for link in ipr.get_links():
            if link.get("ifname") == "lo":
                continue
            try:
                ipr.link("del", index=link["index"])
            except NetlinkError as exc:
                if exc.code != errno.ENODEV:  # gone already, e.g. the other end of a deleted veth
                    raise


def remove_sandbox(path: str) -> None:
    """Delete everything in the sandbox and unmount it; a missing sandbox is fine.

    Devices are deleted explicitly first because the kernel frees an unmounted netns lazily: until
    then the VXLAN device would keep its VNI and UDP port busy in the host namespace.
    """
    from . import mount_home

    try:
        if is_netns(path):
            call_in_netns(path, _delete_all_links)
        mount_home.unpin(path)
        _umount(path)
        os.unlink(path)
    except FileNotFoundError:
        pass
    except (OSError, NetlinkError) as exc:
        raise KernelError(f"cannot remove sandbox namespace at {path}: {exc}") from None


def list_sandboxes(state_dir: str) -> list[str]:
    """Paths of every sandbox mount point under a daemon's state dir (live or dangling)."""
    directory = os.path.dirname(sandbox_path(state_dir, 0))
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    return [os.path.join(directory, name) for name in names if name.startswith("vni-")]
