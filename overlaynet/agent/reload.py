"""SIGHUP: reload the config file and apply what can change while overlayd runs.

Everything else (names, addresses, ports, the state dir, the dataplane, keys) is wired into sockets,
devices and the cluster's view of this host at start; a change there is reported as needing a
restart and the running value is kept, so a reload can never half-apply a setting.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("overlaynet.daemon")

# Keys a reload applies at once (each through its applier in `Reloader.appliers`, set by the daemon).
RUNTIME_KEYS = ("log_level", "log_file", "log_format", "resync_interval", "metrics_address")


def config_values(config: Any) -> dict[str, Any]:
    """Every key of a Config as a plain dict (works for dataclasses and msgspec Structs alike)."""
    names = getattr(config, "__struct_fields__", None) or tuple(getattr(config, "__dataclass_fields__", {}))
    return {name: getattr(config, name) for name in names}


@dataclass
class ReloadResult:
    changed: list[str] = field(default_factory=list)
    restart_needed: list[str] = field(default_factory=list)


@dataclass
class Reloader:
    """Applies a freshly loaded config onto the running one, key by key."""

    running: Any  # the daemon's Config, changed in place so every holder sees the new values
    appliers: dict[str, Callable[[Any], None]] = field(default_factory=dict)

    def apply(self, new: Any) -> ReloadResult:
        result = ReloadResult()
        old_values, new_values = config_values(self.running), config_values(new)
        for key in sorted(new_values):
            if new_values[key] == old_values.get(key):
                continue
            if key in RUNTIME_KEYS:
                setattr(self.running, key, new_values[key])
                applier = self.appliers.get(key)
                if applier is not None:
                    applier(new_values[key])
                result.changed.append(key)
            else:
                result.restart_needed.append(key)
        return result
