"""Random packet loss on the hosts' underlay interfaces with nftables (tc netem is not available).

Each host drops P% of what it sends on eth0; a packet crosses exactly one host's egress on the way
to another host, so every host-to-host packet is lost with probability P.
"""

from __future__ import annotations

from overlaynet.lab import Lab

TABLE = "bloss"


def set_loss(lab: Lab, percent: int) -> None:
    for host in lab.hosts.values():
        lab.run(host.netns, ["nft", "delete", "table", "inet", TABLE])
        if percent <= 0:
            continue
        script = (f"add table inet {TABLE}\n"
                  f"add chain inet {TABLE} out {{ type filter hook output priority 0; policy accept; }}\n"
                  f"add rule inet {TABLE} out oifname eth0 numgen random mod 100 < {percent} drop\n")
        result = lab.run(host.netns, ["nft", "-f", "-"], input=script)
        if result.returncode != 0:
            raise RuntimeError(f"nft on {host.label}: {result.stderr.strip()}")
