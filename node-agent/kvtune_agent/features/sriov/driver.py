"""The driver a rule's VFs are bound to, and the device plugin pools they make: the planning
(pure, `refuse_managed` and `plan`) and the host facts it needs (`read`, `taken`, through HostFS).

A KubeVirt VM can use a VF only once it is bound to vfio-pci (its `sriov` interface passes the
PCI function through), and a pod only while it is bound to the VF network driver of its PF's
driver (iavf for ice and i40e, ...). A rule's `driver` says which; this module plans the
rebinding of the VFs of every PF the rule selects, and the SR-IOV network device plugin pool
(`resourceName`) that offers them. Reading the VFs and binding them is the host's:
host/pcidriver.py.

What it never does:
- touch a PF another party manages: one the SR-IOV Network Operator's policies select (the node
  state's spec.sriovOperatorPolicies), or one the node's own traffic uses (`Refusals`): kvtune
  leaves it alone and a rule selecting it is refused with the conflict named;
- rebind a VF something uses without a drain: a VF bound to vfio-pci whose device files a
  process holds open (a VM's QEMU), one whose netdev is up, or one bound to a driver but without
  a netdev in the host's network namespace (a pod's, or a DPDK program's): changing it is
  NeedsDrain, and host/pcidriver.py checks again right before it writes;
- bind vfio-pci without an IOMMU (no /sys/kernel/iommu_groups): the node is Degraded naming the
  kernel arguments to add, and the command that adds them on this host;
- rebind while the PF's VF count is still to change: the VFs are made anew then, and bound on
  the next pass.

All of one PF's VFs are one step (kind pcidriver), so that binding is all or nothing for the PF:
the step's value lists each VF's driver and driver_override (host/pcidriver.py's `encode`),
which the journal records as the original and a revert writes back.
"""

from __future__ import annotations

import typing as t
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from kvtune_api.v1alpha1.host import HostReport, Nic

from ...host import bootloader, pcidriver
from ...host.bootloader import Loader
from ...host.hostfs import HostFS
from ...host.pcidriver import PCI_DEVICES, PCI_DRIVERS, VFIO, Binding, DeviceState, encode
from ..nics import selects
from .probe import VF_NETDEV_DRIVERS

if t.TYPE_CHECKING:
    # The kinds' models are imported where they are built: `kvtune probe` loads the features but
    # none of the kinds (tests/agent/test_probe_host.py).
    from kvtune_api.v1alpha1.nodestate import Disruption, SriovOperatorPf, SriovOperatorPolicy
    from kvtune_api.v1alpha1.profile import NetworkSettings, SriovResource, SriovRule

#: The kernel arguments that turn the IOMMU on, by CPU vendor (/proc/cpuinfo vendor_id);
#: `iommu=pt` keeps the host's own DMA unmapped (passthrough), as virtualization hosts run.
IOMMU_ARGS = {"GenuineIntel": "intel_iommu=on iommu=pt", "AuthenticAMD": "amd_iommu=on iommu=pt"}
STEP_PREFIX = "sriov-driver/"


@dataclass(frozen=True)
class DriverFacts:
    """What the planner needs beyond the probe report (`read`)."""

    #: Entries of /sys/kernel/iommu_groups; 0: the IOMMU is off; None: could not be read.
    iommu_groups: int | None
    #: The PCI drivers loaded (/sys/bus/pci/drivers).
    loaded: frozenset[str]
    #: PF PCI address -> its VFs, for the PFs with VFs.
    vfs: Mapping[str, tuple[DeviceState, ...]]
    #: PF PCI address -> its VFs' device id (sriov_vf_device), where it says.
    vf_devices: Mapping[str, str]
    #: How this host's kernel command line is changed, for the IOMMU's command.
    loader: Loader


def read(fs: HostFS, host: HostReport) -> DriverFacts:
    """The VFs of every PF of the probe report with VFs, their IOMMU and who holds them."""
    pfs = {nic.pci_address: pcidriver.vf_addresses(fs, nic.pci_address)
           for nic in host.sriov.nics if nic.pci_address and nic.vfs}
    states = {d.address: d for d in pcidriver.device_states(
        fs, [vf for vfs in pfs.values() for vf in vfs])}
    return DriverFacts(
        iommu_groups=pcidriver.iommu_groups(fs),
        loaded=frozenset(fs.list_dir(PCI_DRIVERS)),
        vfs={pf: tuple(states[vf] for vf in vfs) for pf, vfs in pfs.items()},
        vf_devices={pf: device.removeprefix("0x") for pf in pfs
                    if (device := fs.read_value(f"{PCI_DEVICES}/{pf}/sriov_vf_device"))},
        loader=bootloader.find_loader(fs),
    )


def netdev_driver(pf_driver: str | None) -> str | None:
    """The VF network driver of a PF driver (iavf for ice); None when kvtune does not know it."""
    return VF_NETDEV_DRIVERS.get(pf_driver or "")


def target(rule: SriovRule, nic: Nic) -> Binding | None:
    """The binding the rule wants for the NIC's VFs; None when its PF driver's VF network
    driver is unknown (netdevice) or the rule leaves drivers alone.

    vfio-pci keeps its driver_override, so that a rescan binds the VF to it again; a network
    driver is the kernel's own choice, so its VFs are left without one."""
    if rule.driver == VFIO:
        return Binding(VFIO, VFIO)
    if rule.driver == "netdevice" and (driver := netdev_driver(nic.driver)) is not None:
        return Binding(driver)
    return None


def operator_policies(nic: Nic, policies: Sequence[SriovOperatorPolicy]) -> list[str]:
    """The SR-IOV Network Operator policies that select `nic`, by name."""
    return [policy.name for policy in policies if policy.matches(nic)]


def operator_pfs(
    host: HostReport, policies: Sequence[SriovOperatorPolicy]
) -> list[SriovOperatorPf]:
    """The PFs of this node the SR-IOV Network Operator manages (status.sriovOperatorPfs)."""
    from kvtune_api.v1alpha1.nodestate import SriovOperatorPf
    return [SriovOperatorPf(name=nic.name, pci_address=nic.pci_address, policies=claimed)
            for nic in host.sriov.nics
            if nic.sriov_total_vfs is not None and (claimed := operator_policies(nic, policies))]


def taken(fs: HostFS, path: str, value: str) -> str | None:
    """Why writing the VF bindings `value` to `path` must wait now: VFs it would rebind that
    something uses, read afresh (a VM may have taken one since the plan was made); None when
    none."""
    used = pcidriver.held(fs, path, value)
    if not used:
        return None
    return (f"VFs {', '.join(f'{a} ({why})' for a, why in sorted(used.items()))} of "
            f"{path} are in use, and rebinding them would pull them from under their users: "
            "waiting for the operator to drain the node and approve it "
            "(spec.disruption.approved)")


class Out(t.Protocol):
    """Where the planner puts what it found (the feature protocol's Draft)."""

    def step(self, kind: t.Literal["pcidriver"], step_id: str, feature: t.Literal["SRIOV"],
             path: str, current: str, desired: str, reason: str,
             disruption: Disruption = "Live") -> None: ...

    def error(self, feature: t.Literal["SRIOV"], reason: str, message: str) -> None: ...

    def warn(self, feature: t.Literal["SRIOV"], reason: str, message: str) -> None: ...


#: Why kvtune must leave a NIC alone because the node's own traffic uses it (its default
#: route, its address, a bond or bridge over it); empty: it may manage it. The guard macvtap's
#: lower devices go through.
Refusals = Callable[[Nic, HostReport], list[str]]


def left_alone(
    nic: Nic, policies: Sequence[SriovOperatorPolicy], host: HostReport, refusals: Refusals
) -> list[str]:
    """Why kvtune leaves the PF `nic` alone (its VF count and VF drivers); empty: it manages
    it."""
    why = refusals(nic, host)
    claimed = operator_policies(nic, policies)
    if claimed:
        why.insert(0, f"the SR-IOV Network Operator manages it (SriovNetworkNodePolicy "
                      f"{', '.join(claimed)})")
    return why


def refuse_managed(
    node: str, network: NetworkSettings, policies: Sequence[SriovOperatorPolicy],
    host: HostReport, refusals: Refusals, out: Out,
) -> set[str]:
    """The NICs a rule selects that kvtune must leave alone, each refused with the conflict
    named (SriovPfManagedElsewhere); the caller plans nothing on them."""
    refused: set[str] = set()
    for index, rule in enumerate(network.sriov):
        for nic in host.sriov.nics:
            if nic.name in refused or not selects(rule.pf_selector, nic):
                continue
            why = left_alone(nic, policies, host, refusals)
            if why:
                refused.add(nic.name)
                out.error("SRIOV", "SriovPfManagedElsewhere", (
                    f"NIC {nic.name} ({nic.pci_address}) of node {node} is selected by "
                    f"spec.host.network.sriov[{index}], but kvtune leaves it alone: "
                    f"{'; '.join(why)}. Its VF count and VF drivers are left as they are; "
                    "narrow the pfSelector, or hand the NIC over (docs/sriov.md)"))
    return refused


def plan(
    node: str, network: NetworkSettings, host: HostReport, facts: DriverFacts,
    refused: set[str], out: Out,
) -> list[SriovResource]:
    """The driver steps of every rule with a driver, and the device plugin pools of this node.

    `refused`: NICs kvtune leaves alone (`refuse_managed`), planned on no further."""
    pools: list[SriovResource] = []
    owner: dict[str, int] = {}  # NIC -> the first rule with a driver that selects it
    for index, rule in enumerate(network.sriov):
        if rule.driver == "Unmanaged":
            continue
        field_name = f"spec.host.network.sriov[{index}]"
        nics = []
        for nic in host.sriov.nics:
            if not selects(rule.pf_selector, nic) or nic.name in refused or not nic.pci_address:
                continue
            first = owner.setdefault(nic.name, index)
            if first == index:
                nics.append(nic)
                continue
            out.error("SRIOV", "SriovRulesConflict", (
                f"NIC {nic.name} of node {node} is selected by spec.host.network.sriov[{first}] "
                f"and {field_name}, which both bind its VFs (driver) and would offer them twice; "
                "make their pfSelectors disjoint. The later rule leaves it alone"))
        if rule.driver == VFIO and nics and not _vfio_ready(node, field_name, host, facts, out):
            continue
        bound = [nic for nic in nics if _bind(node, field_name, rule, nic, facts, out)]
        if rule.resource_name and bound:
            pools.append(_pool(rule, bound, facts))
    return pools


def _vfio_ready(
    node: str, field_name: str, host: HostReport, facts: DriverFacts, out: Out
) -> bool:
    """vfio-pci can take VFs on this host; else an error that says what to do."""
    if facts.iommu_groups == 0:
        args = IOMMU_ARGS.get(host.cpu.vendor or "")
        how = (f"the kernel needs `{args}` on its command line (on this host: "
               f"{facts.loader.command('', args)}), then a reboot" if args else
               f"the kernel needs the IOMMU on (intel_iommu=on iommu=pt on Intel, amd_iommu=on "
               f"iommu=pt on AMD; CPU vendor {host.cpu.vendor or 'unknown'}), then a reboot")
        out.error("SRIOV", "SriovIommuOff", (
            f"{field_name}.driver is vfio-pci, but node {node} runs without an IOMMU "
            f"({pcidriver.IOMMU_GROUPS} is empty), so no VF can be passed through to a VM: "
            f"{how}; enable VT-d / AMD-Vi in the firmware as well. No VF is rebound until then"))
        return False
    if facts.iommu_groups is None:
        out.error("SRIOV", "SriovIommuUnknown", (
            f"{field_name}.driver is vfio-pci, but whether node {node} has an IOMMU is unknown "
            f"({pcidriver.IOMMU_GROUPS} could not be read); no VF is rebound until it can be"))
        return False
    if VFIO not in facts.loaded:
        out.error("SRIOV", "SriovVfioNotLoaded", (
            f"{field_name}.driver is vfio-pci, but the vfio-pci module is not loaded on node "
            f"{node} (no {PCI_DRIVERS}/{VFIO}): run `modprobe vfio-pci` and list it in "
            "/etc/modules-load.d/vfio-pci.conf so that it loads at boot"))
        return False
    return True


def _bind(
    node: str, field_name: str, rule: SriovRule, nic: Nic, facts: DriverFacts, out: Out
) -> bool:
    """Plan the NIC's VFs onto the rule's driver; whether its VFs can make a pool."""
    address = nic.pci_address or ""
    wanted = target(rule, nic)
    if wanted is None:
        out.error("SRIOV", "SriovNetdevDriverUnknown", (
            f"{field_name}.driver is netdevice, but kvtune does not know the VF network driver "
            f"of NIC {nic.name}'s driver {nic.driver or '(none)'} on node {node}; bind its VFs "
            "by hand and set driver: Unmanaged"))
        return False
    if nic.sriov_num_vfs != rule.num_vfs:
        return False  # the count changes first, which makes the VFs anew; bound on a later pass
    vfs = facts.vfs.get(address, ())
    if rule.driver == VFIO and (lost := [vf.address for vf in vfs if vf.iommu_group is None]):
        out.error("SRIOV", "SriovVfWithoutIommuGroup", (
            f"VFs {', '.join(lost)} of NIC {nic.name} on node {node} have no IOMMU group, so "
            f"vfio-pci cannot take them ({field_name}.driver); check the IOMMU (dmesg | grep "
            "-i -e DMAR -e IOMMU)"))
        return False
    now = {vf.address: vf.binding for vf in vfs}
    changed = {vf.address: wanted for vf in vfs if vf.binding.driver != wanted.driver}
    if not changed:
        return True
    used = [f"{vf.address} ({why})" for vf in vfs if vf.address in changed
            and (why := vf.in_use())]
    disruption: Disruption = "NeedsDrain" if used else "Live"
    effect = (f"VFs {', '.join(used)} are in use: the VMs or pods holding them must leave the "
              "node first" if used else "none of them is in use")
    out.step("pcidriver", f"{STEP_PREFIX}{nic.name}", "SRIOV",
             pcidriver.vf_drivers_path(address), encode(now), encode({**now, **changed}),
             f"{field_name}.driver is {rule.driver}: {len(changed)} VF(s) of NIC {nic.name} are "
             f"bound to {wanted.driver} instead; {effect}", disruption)
    return True


def _pool(rule: SriovRule, nics: Sequence[Nic], facts: DriverFacts) -> SriovResource:
    """The device plugin pool of a rule on this node: the rule's driver on exactly these PFs.

    Built from what stays put while VFs come and go (the PFs, their VFs' device id in
    sriov_vf_device), so that the pool does not change as the VFs are made and bound."""
    from kvtune_api.v1alpha1.profile import SRIOV_RESOURCE_PREFIX, SriovResource, SriovSelectors
    drivers = sorted({binding.driver for nic in nics
                      if (binding := target(rule, nic)) and binding.driver})
    devices = sorted({facts.vf_devices[n.pci_address or ""] for n in nics
                      if n.pci_address in facts.vf_devices})
    vendors = sorted({(n.vendor_id or "").lower() for n in nics if n.vendor_id})
    return SriovResource(
        resource_name=rule.resource_name or "",
        resource_prefix=SRIOV_RESOURCE_PREFIX,
        selectors=SriovSelectors(
            vendors=vendors if devices else [],
            devices=devices,
            drivers=drivers,
            pf_names=sorted(n.name for n in nics),
            root_devices=sorted(n.pci_address or "" for n in nics),
        ),
    )
