"""Is this host's overlaynet healthy? `ok`, or `degraded` with one line per reason.

Pure: the agent gathers the facts (Facts), `assess` judges them. Served as GET /v1/health on the
API, /healthz on the metrics address, and the first line of `overlayctl status`.

Each reason is something an operator can act on, and each clears by itself once its cause is gone:
- gossip has no live peer although other members are known (they are dead: a partition, or every
  other host is down), so this host's tables no longer change with the cluster's;
- a programming error on the last pass for a network (or for the list of peers);
- errors in the last reconciliation;
- a DNS server that could not bind its address;
- fastpathd not answering (userspace dataplane): nothing is forwarded until it is back;
- gossip messages failing authentication recently: some host holds a keyring this one does not
  share (or someone without the key is talking to the gossip port).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Authentication failures within this many seconds count as "the keyring is not shared now".
AUTH_FAILURE_WINDOW = 60.0


@dataclass
class Facts:
    dead_peers: int  # other members known and dead (not those that left on purpose)
    live_peers: int  # other members alive or suspect
    program_errors: dict[str, str]  # what failed to program ("peers" or a network) -> error
    reconcile_errors: list[str]
    dns_errors: dict[str, str]  # network -> why its DNS server is not serving
    fastpathd_error: str | None  # None: answering, or not the userspace dataplane
    recent_auth_failures: int


@dataclass
class Health:
    status: str
    reasons: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "reasons": list(self.reasons)}


def assess(facts: Facts) -> Health:
    reasons: list[str] = []
    if facts.live_peers == 0 and facts.dead_peers > 0:
        reasons.append(f"gossip: no live peer, {facts.dead_peers} known member(s) dead "
                       "(partitioned from the cluster, or the other hosts are down)")
    for what, error in sorted(facts.program_errors.items()):
        reasons.append(f"programming {what} failed: {error}")
    for error in facts.reconcile_errors:
        reasons.append(f"reconciliation error: {error}")
    for network, error in sorted(facts.dns_errors.items()):
        reasons.append(f"DNS for network {network} is not serving: {error}")
    if facts.fastpathd_error is not None:
        reasons.append(f"fastpathd is down: {facts.fastpathd_error}")
    if facts.recent_auth_failures:
        reasons.append(f"gossip: {facts.recent_auth_failures} message(s) failed authentication in the last "
                       f"{AUTH_FAILURE_WINDOW:.0f}s: a host uses a key this one does not have "
                       "(share the keyring: `overlayctl keys install`)")
    return Health("degraded" if reasons else "ok", reasons)


class RecentIncrease:
    """How much a monotonically increasing counter grew within the last `window` seconds."""

    def __init__(self, window: float = AUTH_FAILURE_WINDOW) -> None:
        self.window = window
        self._samples: list[tuple[float, int]] = []

    def observe(self, value: int, now: float) -> int:
        self._samples.append((now, value))
        while len(self._samples) > 1 and self._samples[1][0] <= now - self.window:
            self._samples.pop(0)
        return value - self._samples[0][1]
