"""Which NICs a profile's selector picks, and which the node's own traffic uses: shared by SR-IOV
(the PFs whose VFs it sets, and leaves alone) and macvtap (its lower devices), so the two never
disagree."""

from __future__ import annotations

import typing as t

from kvtune_api.v1alpha1.host import HostReport, Nic

from ..host.paths import IPV6_ADDRESSES, ROUTES

if t.TYPE_CHECKING:
    from kvtune_api.v1alpha1.profile import PfSelector


def selects(selector: PfSelector, nic: Nic) -> bool:
    """All criteria the selector gives must match."""
    return all((
        not selector.names or nic.name in selector.names,
        not selector.pci_addresses or nic.pci_address in selector.pci_addresses,
        selector.vendor is None or (nic.vendor_id or "").lower() == selector.vendor,
        selector.device is None or (nic.device_id or "").lower() == selector.device,
    ))


def node_traffic(nic: Nic, host: HostReport) -> list[str]:
    """Why the node's own traffic uses `nic`, from the probe's network section: its routes and
    addresses, and what is stacked on it or what it is enslaved to. Empty: it does not, as far
    as procfs and sysfs tell (`routing_unknown` says when they could not)."""
    routing = host.network.routing
    why = []
    if nic.name in routing.stacked:
        why.append(f"{routing.stacked[nic.name]}, stacked on it (VLAN, macvlan, bond, bridge, "
                   "team or Open vSwitch), carries the node's own traffic: VMs on it could put "
                   "frames, tagged or not, on the node's own network")
    if nic.name in routing.default_route:
        why.append(f"the node's default route leaves through it ({ROUTES} or ipv6_route)")
    if nic.name in routing.ipv4_routes or nic.name in routing.ipv6_addresses:
        why.append(f"it carries the node's own address (a route through it in {ROUTES}, or a "
                   f"global IPv6 address in {IPV6_ADDRESSES}), so the node's traffic would share "
                   "it with VMs, which cannot reach the node through it either")
    if nic.master:
        why.append(f"it is enslaved to {nic.master} (its master link), which takes every frame "
                   "it receives")
    return why


def routing_unknown(host: HostReport) -> str | None:
    """Why the probe could not tell which NICs the node's own traffic uses; None when it
    could."""
    error = host.network.routing.error
    return f"{error}, so whether the node's own traffic uses it is unknown" if error else None
