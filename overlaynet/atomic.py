"""The one way overlaynet replaces a file: whole or not at all, and durable once it returns.

write + fsync into a temporary file in the same directory, rename over the target, fsync the
directory (without it, a power cut after the rename may bring the old name back). The temporary
file is named `.<name>.<random>.tmp`, so a start can sweep leftovers of a crash (`sweep_tmp`), and
it is removed when anything fails — a full disk never leaves half a file or a stray temp behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile

TMP_SUFFIX = ".tmp"


def fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data` atomically and durably; raise OSError (e.g. ENOSPC) with nothing changed."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=TMP_SUFFIX, dir=directory)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


def sweep_tmp(directory: str) -> list[str]:
    """Remove temporary files a crash left in `directory` (not recursive); return what was removed."""
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(directory):
            if name.endswith(TMP_SUFFIX):
                path = os.path.join(directory, name)
                with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                    os.unlink(path)
                    removed.append(path)
    return removed
