"""What the Docker driver must remember across restarts: Docker never replays CreateNetwork.

One small JSON file, written atomically (overlaynet/atomic.py), mapping each Docker network ID to
the overlaynet network that carries it. Endpoints need no state: every name derives from the id.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from overlaynet.atomic import write_atomic

log = logging.getLogger("overlaynet.docker")


@dataclass
class DockerNetwork:
    docker_id: str
    subnet: str
    gateway: str | None = None  # Docker's bookkeeping gateway, reserved in our IPAM
    name: str | None = None  # overlaynet network name; None until the Docker name is known
    vni: int | None = None
    mtu: int | None = None
    options: dict[str, str] = field(default_factory=dict)
    internal: bool = False  # --internal: no docker_gwbridge, so no egress and no published ports
    encrypted: bool = False  # -o encrypted: the overlaynet network is encrypted (docs/encryption.md)
    created: bool = False  # we created the overlaynet network (vs. attached to an existing one)
    gateway_reserved: bool = False
    ready: bool = False  # the overlaynet network exists (created or attached)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DockerNetwork:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


class DriverState:
    VERSION = 1

    def __init__(self, path: str) -> None:
        self.path = path
        self.networks: dict[str, DockerNetwork] = {}

    def load(self) -> None:
        try:
            with open(self.path) as f:
                data = json.load(f)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            # A crash cannot leave a torn file (rename is atomic); this is damage from outside.
            raise SystemExit(f"overlaynet-docker: cannot read state {self.path}: {e}; fix or remove it") from None
        for item in data.get("networks", []):
            net = DockerNetwork.from_dict(item)
            self.networks[net.docker_id] = net
        log.info("event=state-loaded path=%s networks=%d", self.path, len(self.networks))

    def save(self) -> None:
        os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
        payload = {"version": self.VERSION, "networks": [asdict(n) for n in self.networks.values()]}
        write_atomic(self.path, json.dumps(payload, indent=1, sort_keys=True).encode())

    def by_subnet(self, subnet: str) -> DockerNetwork | None:
        for net in self.networks.values():
            if net.subnet == subnet:
                return net
        return None
