"""What a running overlayd has loaded: a library a host does not use stays out of its memory.

Read from the live process's /proc/PID/maps (the shared objects it mapped), not from inside Python:
an import that slipped back to module level shows up here as the library's extension being mapped.
"""

from __future__ import annotations

import pytest

from tests.support.lab import pair_on_one_host

pytestmark = pytest.mark.integration

CRYPTOGRAPHY_EXTENSION = "/cryptography/hazmat/bindings/_rust"  # cryptography's native part (~8 MiB RSS)


def mapped_files(pid: int) -> set[str]:
    with open(f"/proc/{pid}/maps") as f:
        return {fields[5] for fields in (line.split() for line in f) if len(fields) > 5}


def loaded(pid: int, fragment: str) -> bool:
    return any(fragment in path for path in mapped_files(pid))


def test_cryptography_is_loaded_only_where_gossip_is_encrypted(lab):
    # A plaintext host with a working network: two containers on it that reach each other.
    pair = pair_on_one_host(lab, "plain", "198.19.70.0/24", 7070, "--plaintext")
    assert lab.ping(pair.a, pair.ep_b["ip"], count=3, wait=2)
    assert pair.host.process is not None
    assert not loaded(pair.host.process.pid, CRYPTOGRAPHY_EXTENSION)

    # The same check sees it where it is needed: gossip encrypted (the default) seals every packet.
    sealed = lab.add_host("h2")
    lab.start_daemon(sealed)
    assert sealed.process is not None
    assert loaded(sealed.process.pid, CRYPTOGRAPHY_EXTENSION)
