"""One overlayd per state dir: an exclusive flock on `overlayd.lock`, held for the daemon's lifetime.

Two daemons on one state dir would share one fastpathd and one node identity, and the cluster would
see the host's name flap between their gossip ports. The kernel drops the lock when the process
dies (even by kill -9), so a crash never leaves the state dir locked. The file holds the holder's
PID, only so that a refusal can name it.
"""

from __future__ import annotations

import fcntl
import os

LOCK_FILE = "overlayd.lock"


class StateDirBusy(Exception):
    """Another live overlayd holds the state dir (the message names its PID)."""


def lock_state_dir(state_dir: str) -> int:
    """Take the state dir's lock and return its fd (keep it open: closing it releases the lock)."""
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    path = os.path.join(state_dir, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StateDirBusy(
            f"state dir {state_dir} is in use by overlayd pid {holder}; stop that one first or give "
            "this one its own --state-dir"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
