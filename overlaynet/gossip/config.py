"""Timing and size defaults of the gossip layer, each with the reason it has that value.

Tuned for a LAN (sub-millisecond RTT, up to a few % loss): fast failure detection (well under
Serf's ~8 s) without false deaths, and update propagation measured in tens of milliseconds.
docs/gossip.md explains the arithmetic behind each number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class GossipConfig:
    # --- failure detection (SWIM + Lifeguard) ---
    # One probe per interval, round-robin over a shuffled member list: the dead host is probed by
    # someone about every interval, so first-probe delay ~ interval. 250 ms keeps probe traffic at
    # 4 small packets/s/host while leaving room for the 2.5-3 s detection target.
    probe_interval: float = 0.25
    # Direct ack wait before asking others. LAN RTT is < 1 ms but a busy Python process can stall
    # tens of ms; 100 ms leaves 150 ms of the interval for the indirect probes and their nacks.
    probe_timeout: float = 0.1
    # Members asked to probe indirectly: 3 independent paths make a false suspicion at 5 % loss
    # rare (~1e-3 per probe) and are what Lifeguard's nacks are measured against.
    indirect_checks: int = 3
    # Also re-ping the target directly when the indirect probes go out. memberlist adds a TCP ping
    # here; a UDP retry is another independent path that costs one packet and cuts false suspicions
    # ~5x at 10 % loss (and needs no TCP connect that a lossy link would stall for a second).
    probe_retry_direct: bool = True
    # Suspicion lasts between min = mult * max(1, log10(n)) * probe_interval and max_mult * min.
    # With 4: n=32 -> 1.5 s..9 s; independent confirmations (suspicion_mult - 2 expected) pull it to min.
    suspicion_mult: int = 4
    suspicion_max_timeout_mult: int = 6
    # Local health (Lifeguard): probe interval/timeout multiply by (score+1), score < this.
    awareness_max_multiplier: int = 8

    # --- dissemination ---
    # Periodic gossip of pending broadcasts. New updates are also pushed eagerly (see below), so this
    # only bounds the tail: a host that missed every eager copy gets one within ~1 interval.
    gossip_interval: float = 0.1
    # Hosts per gossip round; 3 gives each update ~3 independent copies per round.
    gossip_nodes: int = 3
    # Keep gossiping to a dead member for this long so it can learn it was declared dead and refute.
    gossip_to_the_dead_time: float = 15.0
    # Each broadcast is sent retransmit_mult * ceil(log10(n+1)) times by every host that learns it.
    # 6 (memberlist LAN uses 4) makes P(one host misses an update) ~ e^-11 at n=32/5 % loss, so the
    # 30 s anti-entropy is a backstop, not a latency path.
    retransmit_mult: int = 6
    # Push a new update to gossip_nodes hosts immediately instead of waiting for the next round:
    # propagation becomes a few network hops (ms) instead of a few gossip intervals.
    eager_push: bool = True
    # Coalesce eager pushes that happen within this window (a burst of table writes = one round).
    eager_push_min_interval: float = 0.01

    # --- anti-entropy ---
    # Full-state TCP exchange with one random host. Repairs anything gossip missed (and partitions);
    # 30 s like memberlist, scaled up above 32 hosts so the per-host TCP load stays flat.
    push_pull_interval: float = 30.0
    # Full sync attempt with one random *dead* member this often (Serf's reconnect, 30 s there):
    # how a healed partition finds itself again after gossip-to-the-dead stopped. Cheap (a failed
    # TCP connect) while the member is really gone.
    reconnect_interval: float = 10.0
    # TCP connect/read/write deadline for one push-pull or stream.
    stream_timeout: float = 5.0
    # Largest TCP frame accepted from an authenticated peer (full state of a big cluster fits
    # comfortably). Nothing of it is held before its sealed header is authenticated (stream.py).
    max_stream_frame: int = 64 * 1024 * 1024
    # A connection must deliver its small sealed header this soon: a LAN peer does it in one RTT,
    # a slow-loris holding an unauthenticated connection open is cut off.
    stream_header_timeout: float = 2.0
    # Connections not yet authenticated, per source address and in total. A member opens at most
    # a few at once (push-pull, reconnect, join); more from one address is an attack, and the total
    # bounds what many addresses together can hold (each at most ~300 bytes + socket buffers).
    max_unauthenticated_per_source: int = 4
    max_unauthenticated: int = 32
    # Inbound streams being served at once, authenticated or not (each may hold one frame).
    max_inbound_streams: int = 64

    # --- sizes ---
    # UDP payload budget including encryption overhead: below a 1500-byte underlay MTU minus
    # IP/UDP headers, and below common tunnel MTUs, so gossip is never IP-fragmented.
    udp_payload_max: int = 1400

    # --- reaping ---
    # How often dead members and expired tombstones are cleaned up.
    reap_interval: float = 1.0
    # A failed member (and its hidden table entries) is forgotten after this long. An hour covers
    # reboots and maintenance windows, so a returning host's entries come straight back.
    dead_reap_timeout: float = 3600.0
    # A member that left gracefully said goodbye; keep it only long enough to stop echoes.
    left_reap_timeout: float = 300.0
    # Deleted entries are kept as tombstones this long (residual lifetime travels with them, so all
    # hosts drop them at the same time). Must exceed how long an older value can still circulate.
    tombstone_ttl: float = 600.0

    # --- security ---
    # Apply keyring operations (install/use/remove) gossiped by other members. They can only come
    # from holders of a current key, who can already do everything else.
    accept_key_ops: bool = True

    def retransmit_limit(self, n: int) -> int:
        return self.retransmit_mult * max(1, math.ceil(math.log10(n + 1)))

    def suspicion_bounds(self, n: int) -> tuple[float, float]:
        scale = max(1.0, math.log10(max(1, n)))
        lo = self.suspicion_mult * scale * self.probe_interval
        return lo, lo * self.suspicion_max_timeout_mult

    def push_pull_scaled(self, n: int) -> float:
        # Above 32 hosts grow the interval with log2(n/32) so cluster-wide TCP sync load stays bounded.
        if n <= 32:
            return self.push_pull_interval
        return self.push_pull_interval * (1 + math.log2(n / 32))
