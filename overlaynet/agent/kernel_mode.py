"""Kernel dataplane mode: a Linux VXLAN device per network, programmed with static entries.

Learning is off; every remote MAC gets a permanent FDB entry and every remote IP a permanent
neighbour entry (the device answers ARP itself: no flooding for known addresses); broadcast and
unknown unicast go to the flood list. Methods block (netlink): the agent calls them from its
kernel thread.
"""

from __future__ import annotations

from typing import Any

from overlaynet import kernel
from overlaynet.agent.forwarding import Forwarding
from overlaynet.model import Network


class KernelMode:
    name = "kernel"

    def __init__(self, advertise: str, vxlan_port: int, peer_bum_rate: int = 0) -> None:
        self.advertise = advertise
        self.vxlan_port = vxlan_port
        self.peer_bum_rate = peer_bum_rate
        self._written: dict[int, kernel.VxlanTable] = {}  # VNI -> the table last programmed successfully

    def ensure_network(self, net: Network, sandbox: str) -> list[str]:
        """Make the network's sandbox, bridge and VXLAN device exist; returns the devices re-made."""
        created = kernel.ensure_sandbox(sandbox)
        kernel.ensure_bridge(sandbox, net.mtu, mac=net.gateway_mac, address=net.gateway_cidr)
        # ensure_vxlan says whether it had to make the device (missing, or not as wanted): in a
        # sandbox that was already there, that is a repair (its FDB must be programmed again).
        remade = kernel.ensure_vxlan(sandbox, kernel.VxlanSpec(vni=net.vni, local=self.advertise,
                                                               port=self.vxlan_port, mtu=net.mtu))
        if remade:
            self._written.pop(net.vni, None)  # a new device holds nothing of what was written before
        return [kernel.vxlan_name(net.vni)] if remade and not created else []

    def overlay_port(self, net: Network) -> str:
        """The sandbox bridge's port that frames from other hosts enter by."""
        return kernel.vxlan_name(net.vni)

    def fdb_to_program(self, net: Network, fwd: Forwarding) -> dict[str, str]:
        """The FDB entries `programmed` shows when all is in step (the bridge-local ones are hidden)."""
        return dict(fwd.fdb)

    def program(self, net: Network, sandbox: str, fwd: Forwarding) -> int:
        """Make the device's entries equal to `fwd`; returns how many entries changed. Writes only
        the difference to what was last programmed, until forget_programmed() (a forced resync)."""
        fdb = dict(fwd.fdb)
        if net.gateway_mac:
            # The gateway's neighbour entry (in fwd.neigh) points at the bridge's own MAC: marking
            # that MAC bridge-local keeps the device's ARP proxy quiet, the bridge answers.
            fdb[net.gateway_mac] = kernel.BRIDGE_LOCAL
        table = kernel.VxlanTable.of(fdb, fwd.neigh, fwd.flood)
        previous = self._written.pop(net.vni, None)  # on an error the next pass reads the kernel
        changed = kernel.program_vxlan_table(sandbox, net.vni, table, previous)
        self._written[net.vni] = table
        return changed

    def forget_programmed(self) -> None:
        """The next pass reads each device's entries again (and so repairs drift)."""
        self._written.clear()

    def encryption_unavailable(self) -> str:
        """Always a reason: the kernel dataplane does not encrypt. Kernel ESP through xfrm would be
        the only way, so the probe says whether this kernel even has it."""
        missing = kernel.xfrm_esp_gcm_missing()
        advice = "attach on a host running the userspace dataplane (--dataplane userspace)"
        if missing:
            return f"runs the kernel dataplane and its kernel cannot do ESP with rfc4106(gcm(aes)) ({missing}); {advice}"
        return f"runs the kernel dataplane, which does not encrypt (kernel xfrm ESP is not used); {advice}"

    def sync_sas(self, net: Network, sas: list[dict[str, Any]]) -> int:
        raise kernel.KernelError(f"network {net.name!r} is encrypted and the kernel dataplane does not encrypt")

    def highest_tx_seq(self, net: Network) -> int:
        return 0  # never encrypts

    def start(self) -> None:
        """Nothing to start: the kernel is always there."""

    def sync_peers(self, vteps: set[str]) -> None:
        """Only these VTEPs (live cluster members) may send us VXLAN: the kernel's VXLAN device takes
        packets from any sender, so an nftables set in the host namespace admits only them. Each may
        send at most `peer_bum_rate` broadcast/multicast frames per second."""
        kernel.sync_vxlan_members(self.vxlan_port, vteps, peer_bum_rate=self.peer_bum_rate)

    def stats(self) -> dict[str, Any]:
        return {"vxlan_non_member_drops": kernel.vxlan_non_member_drops(),
                "vxlan_peer_bum_drops": kernel.vxlan_peer_bum_drops()}

    def remove_network(self, net: Network, sandbox: str) -> None:
        self._written.pop(net.vni, None)
        kernel.remove_sandbox(sandbox)

    def programmed(self, net: Network, sandbox: str) -> dict[str, Any]:
        """What the kernel holds now, for `overlayctl fdb`."""
        if not kernel.sandbox_exists(sandbox):
            return {"fdb": [], "flood": [], "neigh": []}
        fdb = kernel.list_fdb(sandbox, net.vni)
        return {
            "fdb": [{"mac": e.mac, "vtep": e.vtep} for e in fdb
                    if e.mac != kernel.FLOOD_MAC and e.vtep != kernel.BRIDGE_LOCAL],
            "flood": sorted(e.vtep for e in fdb if e.mac == kernel.FLOOD_MAC),
            "neigh": [{"ip": n.ip, "mac": n.mac} for n in kernel.list_neigh(sandbox, net.vni)],
        }

    def status(self) -> dict[str, Any]:
        return {"mode": self.name}

    def health_error(self) -> None:
        """The kernel's VXLAN device has no process that could be down."""
        return None
