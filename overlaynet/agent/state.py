"""The state directory: small JSON files written atomically (overlaynet/atomic.py).

A crash at any point leaves either the old or the new version of a file, plus perhaps a stray
`*.tmp` that the next start removes. A write that finds the state dir full (or over quota) raises
InsufficientStorage, "state dir full: N bytes free at PATH", with nothing changed on disk: the
caller undoes what it did before persisting and the API answers 507. Layout:
  node.json                     this host's identity (id, name)
  networks/<name>.json          networks
  endpoints/<id>.json           endpoints attached on this host
  addresses/<network>/<ip>.json address reservations (Docker IPAM)
  netkeys/<network>.json        an encrypted network's secrets per key epoch (agent/netkeys.py)
  netns/                        bind mounts of the per-network sandbox namespaces (kernel/ owns them)
"""

from __future__ import annotations

import errno
import json
import logging
import os
from collections.abc import Iterator
from typing import Any

from overlaynet.atomic import fsync_dir, sweep_tmp, write_atomic
from overlaynet.errors import InsufficientStorage

log = logging.getLogger(__name__)


class StateStore:
    def __init__(self, root: str) -> None:
        self.root = root
        # Files found unreadable since start, moved aside as `<path>.corrupt`: the agent rebuilds
        # what they described from the kernel and the cluster, or reports it (never deletes it).
        self.quarantined: dict[str, str] = {}  # path -> why

    def prepare(self) -> None:
        """Make the state dir, and remove the temporary files a crash or a full disk left behind."""
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        removed: list[str] = []
        for dirpath, dirs, _files in os.walk(self.root):
            dirs[:] = [d for d in dirs if not (dirpath == self.root and d == "netns")]  # mounts, not files
            removed += sweep_tmp(dirpath)
        if removed:
            log.warning("event=tmp-files-removed count=%d first=%s", len(removed), removed[0])

    def free_bytes(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def _path(self, *parts: str) -> str:
        for part in parts:
            if not part or "/" in part or part in (".", ".."):
                raise ValueError(f"bad state key {part!r}")
        return os.path.join(self.root, *parts)

    def write(self, data: Any, *parts: str) -> None:
        path = self._path(*parts)
        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            write_atomic(path, json.dumps(data, indent=1, sort_keys=True).encode())
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                free = self.free_bytes()
                log.error("event=state-dir-full path=%s free_bytes=%d file=%s", self.root, free, path)
                raise InsufficientStorage(f"state dir full: {free} bytes free at {self.root}; "
                                          "free some space there and try again") from None
            raise

    def read(self, *parts: str) -> Any | None:
        path = self._path(*parts)
        try:
            with open(path) as f:
                return json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            # Should not happen with atomic writes; keep the evidence and start without it.
            self.quarantine(str(e), *parts)
            return None

    def quarantine(self, why: str, *parts: str) -> None:
        """Move an unreadable file aside as `<path>.corrupt` (kept as evidence, never deleted here)."""
        path = self._path(*parts)
        log.error("event=state-file-corrupt path=%s error=\"%s\" moved_to=%s.corrupt", path, why, path)
        os.replace(path, path + ".corrupt")
        self.quarantined[path] = why

    def delete(self, *parts: str) -> None:
        path = self._path(*parts)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        fsync_dir(os.path.dirname(path))

    def items(self, *parts: str) -> Iterator[tuple[str, Any]]:
        """(key, data) for every `<key>.json` in a folder of the state dir."""
        directory = self._path(*parts) if parts else self.root
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:
            return
        for name in names:
            if name.endswith(".json"):
                data = self.read(*parts, name)
                if data is not None:
                    yield name[: -len(".json")], data
