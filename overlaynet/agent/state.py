"""The state directory: small JSON files written atomically (write, fsync, rename, fsync dir).

A crash at any point leaves either the old or the new version of a file, plus perhaps a stray
`*.tmp` that the next start removes. Layout:
  node.json                     this host's identity (id, name)
  networks/<name>.json          networks
  endpoints/<id>.json           endpoints attached on this host
  addresses/<network>/<ip>.json address reservations (Docker IPAM)
  netns/                        bind mounts of the per-network sandbox namespaces (kernel/ owns them)
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)


class StateStore:
    def __init__(self, root: str) -> None:
        self.root = root
        # Files found unreadable since start, moved aside as `<path>.corrupt`: the agent rebuilds
        # what they described from the kernel and the cluster, or reports it (never deletes it).
        self.quarantined: dict[str, str] = {}  # path -> why

    def prepare(self) -> None:
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        for dirpath, _dirs, files in os.walk(self.root):
            if "/netns" in dirpath[len(self.root):] or dirpath.endswith("/netns"):
                continue
            for name in files:
                if name.endswith(".tmp"):
                    os.unlink(os.path.join(dirpath, name))

    def _path(self, *parts: str) -> str:
        for part in parts:
            if not part or "/" in part or part in (".", ".."):
                raise ValueError(f"bad state key {part!r}")
        return os.path.join(self.root, *parts)

    def write(self, data: Any, *parts: str) -> None:
        path = self._path(*parts)
        directory = os.path.dirname(path)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        self._fsync_dir(directory)

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
        self._fsync_dir(os.path.dirname(path))

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

    @staticmethod
    def _fsync_dir(directory: str) -> None:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
