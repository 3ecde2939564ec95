"""Macvtap: the NICs the profile dedicates to VMs through macvtap-cni, from the network section
of the probe (links, routes, switches and the pods' interfaces), refused where the NIC carries
the node's own traffic."""

from __future__ import annotations

import typing as t

from kvtune_api.v1alpha1.host import (
    HostReport,
    NetworkReport,
    Nic,
    Problem,
)

from ...host.hostfs import HostFS, ProcessTable
from ..base import (
    Draft,
    Feature,
    Plan,
    PlanInputs,
    Settled,
)
from ..nics import selects
from . import probe as network_probe
from .probe import IPV6_ADDRESSES, ROUTES

if t.TYPE_CHECKING:
    from kvtune_api.v1alpha1.nodestate import (
        HypervisorNodeStateSpec,
        HypervisorNodeStateStatus,
    )
    from kvtune_api.v1alpha1.profile import (
        NetworkSettings,
    )

MACVTAP_RESOURCE = "macvtap.network.kubevirt.io"


def _lower_device_refusals(nic: Nic, network: NetworkSettings, host: HostReport) -> list[str]:
    """Why `nic` must not be a VMs' macvtap lower device: what it carries for the host, or
    what else holds it. Empty: it may."""
    routing = host.network.routing
    why = []
    if routing.error:
        why.append(f"{routing.error}, so whether the node's own traffic uses it is unknown")
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
    for index, rule in enumerate(network.sriov):
        if selects(rule.pf_selector, nic):
            why.append(f"it is an SR-IOV PF whose VFs spec.host.network.sriov[{index}] manages")
            break
    return why


def _macvtap(node: str, network: NetworkSettings, host: HostReport, out: Draft) -> None:
    """The device plugin's resources for this node: one NIC per rule, refused where the host
    uses it itself or something else holds it."""
    from kvtune_api.v1alpha1.profile import MacvtapResource
    taken: dict[str, str] = {}  # NIC -> the resource it is offered as
    for index, rule in enumerate(network.macvtap):
        field_name = f"spec.host.network.macvtap[{index}]"
        resource = f"{MACVTAP_RESOURCE}/{rule.name}"
        matched = [nic for nic in host.sriov.nics if selects(rule.nic_selector, nic)]
        if not matched:
            out.warn("Macvtap", "MacvtapRuleMatchesNothing", (
                f"{field_name}.nicSelector matches no NIC on node {node} (NICs here: "
                f"{', '.join(n.name for n in host.sriov.nics) or 'none'}), so it offers no "
                f"{resource}"))
            continue
        if len(matched) > 1:
            out.error("Macvtap", "MacvtapRuleMatchesSeveral", (
                f"{field_name}.nicSelector matches NICs {', '.join(n.name for n in matched)} on "
                f"node {node}, but {resource} has one lower device per node; narrow the "
                "nicSelector (names or pciAddresses), or give each NIC a rule of its own"))
            continue
        [nic] = matched
        if nic.name in taken:
            out.error("Macvtap", "MacvtapRulesConflict", (
                f"NIC {nic.name} of node {node} is already offered as {taken[nic.name]}, and "
                f"{field_name} selects it again for {resource}: VMs of both would share it; "
                "make the nicSelectors disjoint"))
            continue
        refusals = _lower_device_refusals(nic, network, host)
        if refusals:
            out.error("Macvtap", "MacvtapLowerDeviceInUse", (
                f"NIC {nic.name} of node {node}, selected by {field_name} for {resource}, is "
                f"not offered to VMs: {'; '.join(refusals)}. Select a NIC the node does not use "
                "otherwise, or free this one"))
            continue
        if nic.operstate not in (None, "up"):
            out.warn("Macvtap", "MacvtapLowerDeviceDown", (
                f"NIC {nic.name} of node {node} ({resource}) is {nic.operstate}: VMs given it "
                "get no link until it is cabled and up"))
        if rule.capacity > 1:
            out.warn("Macvtap", "MacvtapShared", (
                f"{field_name}.capacity is {rule.capacity}: up to {rule.capacity} VMs share NIC "
                f"{nic.name} of node {node} through its macvlan switch, and the VM audit "
                "reports them as sharing it; capacity 1 gives each VM a NIC of its own"))
        taken[nic.name] = resource
        out.publish("macvtap", MacvtapResource(
            name=rule.name, lower_device=nic.name, mode=rule.mode, capacity=rule.capacity))


class Macvtap(Feature[NetworkReport, None]):
    condition = "Macvtap"
    section = "network"
    problem_name = "Network"

    def probe(self, fs: HostFS, processes: ProcessTable) -> NetworkReport:
        return network_probe.probe(fs, processes)

    def check(self, found: NetworkReport) -> list[Problem]:
        return network_probe.check(found)

    def plan(self, inputs: PlanInputs, facts: None, out: Draft) -> None:
        _macvtap(inputs.spec.node_name, inputs.spec.host.network, inputs.host, out)

    def unmanaged(self, spec: HypervisorNodeStateSpec) -> str | None:
        return None if spec.host.network.macvtap else "spec.host.network.macvtap is empty"

    def settled(self, host: HostReport, plan: Plan, notes: str) -> Settled:
        offered = ", ".join(f"{r.name} on {r.lower_device}"
                            for r in plan.published.get("macvtap", ()))
        return "True", "AsSpecified", "; ".join(
            m for m in (f"offers {offered}" if offered else "", notes) if m)

    def labels(self, spec: HypervisorNodeStateSpec,
               status: HypervisorNodeStateStatus) -> dict[str, str]:
        """The NICs the node offers VMs through macvtap (status.macvtap), not the devices free
        on them: it moves when the profile or the NICs change, never as VMs start and stop."""
        return {"macvtap-nics": str(len(status.macvtap))} if spec.host.network.macvtap else {}


FEATURE = Macvtap()
