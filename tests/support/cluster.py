"""What the cluster-tier tests share: fast timers for overlayd, the cluster key written as real hosts keep
it (one 0600 copy per host), and how many members a host sees alive."""

from __future__ import annotations

import base64
import os
from collections.abc import Sequence

from overlaynet.lab import Lab, wait_until

FAST = ["--resync-interval", "5", "--settle-time", "0.3", "--withdraw-delay", "4"]


def write_key(lab: Lab, name: str = "cluster.key", key: bytes | None = None) -> str:
    path = os.path.join(lab.workdir, name)
    with open(path, "w") as f:
        f.write(base64.b64encode(key or os.urandom(32)).decode() + "\n")
    os.chmod(path, 0o600)
    return path


def host_key_file(lab: Lab, host, key_file: str) -> str:
    """Each host keeps its own copy of the key file, as real hosts do."""
    path = os.path.join(lab.workdir, f"{host.label}.key")
    with open(key_file) as src, open(path, "w") as dst:
        dst.write(src.read())
    os.chmod(path, 0o600)
    return path


def alive_count(lab: Lab, host) -> int:
    return sum(1 for m in lab.overlayctl_json(host, "members") if m["state"] == "alive")


def start_cluster(lab: Lab, count: int, key_file: str, extra: Sequence[Sequence[str]] = ()) -> list:
    """`count` hosts h1.. joined to h1 over encrypted gossip; extra[i]: more flags for host i."""
    hosts = [lab.add_host(f"h{i + 1}") for i in range(count)]
    seed = hosts[0].address
    for i, host in enumerate(hosts):
        args = ["--key-file", host_key_file(lab, host, key_file), *FAST, *(extra[i] if i < len(extra) else ())]
        if i:
            args += ["--join", seed]
        lab.start_daemon(host, *args)
    wait_until(lambda: all(alive_count(lab, h) == count for h in hosts), timeout=60,
               what=f"{count} members alive everywhere")
    return hosts
