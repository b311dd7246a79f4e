"""Sandbox mounts that outlive a daemon in a private mount namespace.

A sandbox is a network namespace kept alive by a bind mount in the state dir (netns.py). When
overlayd runs in a private mount namespace — started with `ip netns exec`, by a systemd unit with
`PrivateMounts=`/`PrivateTmp=`, or in a container — its mounts die with it: a `kill -9` would take
every sandbox, with its bridge and veths, down with the daemon. So each sandbox mount is also made
("pinned") in the mount namespace the daemon was started from: PID 1's when we may see it,
otherwise our parent's (the shell or supervisor that ran `ip netns exec`). A later overlayd started
the same way gets a copy of that namespace, sandbox mounts included, and adopts them.

Switching mount namespaces happens only in short-lived private threads that first stop sharing
their filesystem context with the process (unshare(CLONE_FS)), as setns(CLONE_NEWNS) requires.
"""

from __future__ import annotations

import contextlib
import errno
import os

from .errors import KernelError
from .netns import MS_BIND, _check, _in_private_thread, _libc, _umount, is_netns

CLONE_NEWNS = 0x00020000
CLONE_FS = 0x00000200

_home_fd: int | None = None  # the mount namespace sandbox mounts are pinned in, if not our own
_home_name: str | None = None


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def find_home() -> str | None:
    """Pin sandbox mounts outside our own mount namespace if we run in a private one; returns where."""
    global _home_fd, _home_name
    own = _identity("/proc/self/ns/mnt")
    for candidate in ("/proc/1/ns/mnt", f"/proc/{os.getppid()}/ns/mnt"):
        ident = _identity(candidate)
        if ident is None:
            continue  # not ours to see (e.g. PID 1 of an outer sandbox): try the next
        if ident == own:
            return None  # we share it: our mounts are its mounts
        # Keep it open: the parent may exit, its namespace must stay reachable for removals.
        _home_fd = os.open(candidate, os.O_RDONLY | os.O_CLOEXEC)
        _home_name = f"mnt:[{ident[1]}] (from {candidate})"
        return _home_name
    return None


def home() -> str | None:
    return _home_name


def _enter_home() -> None:
    assert _home_fd is not None
    _check(_libc.unshare(CLONE_FS), "unshare(CLONE_FS)", "mount namespace")
    _check(_libc.setns(_home_fd, CLONE_NEWNS), "setns(mount)", "mount namespace")


def _pin(path: str, netns_fd: int) -> None:
    _enter_home()
    if is_netns(path):
        return
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    _check(_libc.mount(f"/proc/self/fd/{netns_fd}".encode(), path.encode(), b"none", MS_BIND, None), "mount", path)


def pin(path: str) -> None:
    """Make the sandbox mounted at `path` (in our namespace) mounted in the home namespace too."""
    if _home_fd is None:
        return
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _in_private_thread(_pin, path, fd)
    except OSError as exc:
        raise KernelError(f"cannot pin sandbox {path} in the host's mount namespace: {exc}") from None
    finally:
        os.close(fd)


def _unpin(path: str) -> None:
    _enter_home()
    _umount(path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def unpin(path: str) -> None:
    """Remove the home namespace's mount of a sandbox (its devices are deleted by the caller)."""
    if _home_fd is None:
        return
    try:
        _in_private_thread(_unpin, path)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.EINVAL):
            raise KernelError(f"cannot unpin sandbox {path}: {exc}") from None
