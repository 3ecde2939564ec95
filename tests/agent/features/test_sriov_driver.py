"""VFs bound to the driver their rule asks for (vfio-pci for VMs, the VF network driver for
pods), never one in use without a drain, never without an IOMMU, all or nothing per PF, and put
back on revert; the device plugin pools they make; PFs other parties manage left alone."""

from __future__ import annotations

import errno
import shutil
import typing as t
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kvtune_agent.features.sriov.driver import operator_pfs, plan, read, refuse_managed, taken
from kvtune_agent.host import pcidriver
from kvtune_agent.host.pcidriver import Binding, BindingsError, decode, encode
from kvtune_agent.wiring import probe_host
from kvtune_api.v1alpha1.host import HostReport, Nic
from kvtune_api.v1alpha1.nodestate import (
    Disruption,
    HypervisorNodeStateSpec,
    SriovOperatorPolicy,
)
from kvtune_api.v1alpha1.profile import SriovResource
from support.hosttree import HostTree, KernelFS, vf_address

from ..specs import node_spec

PF = "0000:3b:00.0"
VF0, VF1, VF2 = (vf_address(PF, i) for i in range(3))
PATH = pcidriver.vf_drivers_path(PF)


@dataclass
class Recorder:
    """The feature protocol's Draft, as far as the driver planner uses it."""

    steps: list[dict[str, t.Any]] = field(default_factory=list)
    findings: list[tuple[str, str, str]] = field(default_factory=list)

    def step(self, kind: str, step_id: str, feature: str, path: str, current: str,
             desired: str, reason: str, disruption: Disruption = "Live") -> None:
        self.steps.append({"id": step_id, "path": path, "current": current, "desired": desired,
                           "reason": reason, "disruption": disruption})

    def error(self, feature: str, reason: str, message: str) -> None:
        self.findings.append(("Error", reason, message))

    def warn(self, feature: str, reason: str, message: str) -> None:
        self.findings.append(("Warning", reason, message))

    def reason(self, reason: str) -> str:
        [message] = [m for _, r, m in self.findings if r == reason]
        return message


def host(tmp_path: Path, vf_drivers: t.Sequence[str | None] = ("iavf",) * 3,
         **nic: t.Any) -> HostTree:
    """An Intel host with ens1f0 (ice, 3 VFs) and the vfio-pci module loaded."""
    tree = HostTree(tmp_path).cpuinfo(4).driver("vfio-pci")
    return tree.nic("ens1f0", PF, total_vfs=8, vf_drivers=vf_drivers, **nic)


def spec(driver: str = "vfio-pci", num_vfs: int = 3, resource: str | None = "dataplane",
         policies: t.Sequence[dict[str, t.Any]] = ()) -> HypervisorNodeStateSpec:
    rule = {"pfSelector": {"names": ["ens1f0"]}, "numVfs": num_vfs, "driver": driver,
            **({"resourceName": resource} if resource else {})}
    state = node_spec(network={"sriov": [rule]})
    return state.model_copy(update={"sriov_operator_policies": [
        SriovOperatorPolicy.model_validate(p) for p in policies]})


def no_refusals(nic: Nic, host: HostReport) -> list[str]:
    return []


def planned(tree: HostTree, state: HypervisorNodeStateSpec,
            refusals: t.Callable[[Nic, HostReport], list[str]] = no_refusals,
            ) -> tuple[Recorder, list[SriovResource]]:
    fs = tree.fs()
    report = probe_host(fs)
    out = Recorder()
    network = state.host.network
    refused = refuse_managed("n1", network, state.sriov_operator_policies, report, refusals, out)
    pools = plan("n1", network, report, read(fs, report), refused, out)
    return out, pools


def bindings(fs: KernelFS) -> dict[str, Binding]:
    return decode(pcidriver.current(fs, PATH) or "")


# -- planning ------------------------------------------------------------------------------


def test_free_vfs_are_planned_onto_vfio_pci_in_one_live_step_for_their_pf(tmp_path: Path) -> None:
    out, pools = planned(host(tmp_path), spec())

    [step] = out.steps
    assert (step["id"], step["path"], step["disruption"]) == (
        "sriov-driver/ens1f0", "/sys/bus/pci/devices/0000:3b:00.0/virtfn*/driver", "Live")
    assert step["current"] == f"{VF0}=iavf {VF1}=iavf {VF2}=iavf"
    assert step["desired"] == " ".join(f"{vf}=vfio-pci@vfio-pci" for vf in (VF0, VF1, VF2))
    assert [p.model_dump(by_alias=True) for p in pools] == [{
        "resourceName": "dataplane", "resourcePrefix": "sriov.kvtune.io", "selectors": {
            "vendors": ["8086"], "devices": ["1889"], "drivers": ["vfio-pci"],
            "pfNames": ["ens1f0"], "rootDevices": [PF]}}]


def test_vfs_already_bound_plan_nothing_and_still_make_their_pool(tmp_path: Path) -> None:
    out, pools = planned(host(tmp_path, ("vfio-pci",) * 3), spec())

    assert (out.steps, out.findings, len(pools)) == ([], [], 1)


def test_netdevice_means_the_vf_network_driver_of_the_pf_driver(tmp_path: Path) -> None:
    out, pools = planned(host(tmp_path, ("vfio-pci", "iavf", None)), spec("netdevice"))

    [step] = out.steps
    assert decode(step["desired"]) == {vf: Binding("iavf") for vf in (VF0, VF1, VF2)}
    assert pools[0].selectors.drivers == ["iavf"]


def test_a_pf_driver_whose_vf_driver_is_unknown_is_refused_for_netdevice(tmp_path: Path) -> None:
    out, pools = planned(host(tmp_path, driver="acme_nic"), spec("netdevice"))

    assert "kvtune does not know the VF network driver of NIC ens1f0's driver acme_nic" in (
        out.reason("SriovNetdevDriverUnknown"))
    assert (out.steps, pools) == ([], [])


def test_no_vf_is_rebound_while_the_vf_count_is_still_to_change(tmp_path: Path) -> None:
    out, _ = planned(host(tmp_path), spec(num_vfs=8))

    assert out.steps == []


def test_two_rules_binding_one_nic_are_refused_and_the_first_one_stands(tmp_path: Path) -> None:
    state = spec()
    second = state.host.network.sriov[0].model_copy(update={
        "pf_selector": state.host.network.sriov[0].pf_selector.model_copy(
            update={"names": [], "vendor": "8086"}),
        "driver": "netdevice", "resource_name": "pods"})
    state.host.network.sriov.append(second)

    out, pools = planned(host(tmp_path), state)

    assert "spec.host.network.sriov[0] and spec.host.network.sriov[1]" in out.reason(
        "SriovRulesConflict")
    [step] = out.steps
    assert "vfio-pci" in step["desired"] and [p.resource_name for p in pools] == ["dataplane"]


def test_unmanaged_drivers_plan_nothing_as_before(tmp_path: Path) -> None:
    out, pools = planned(host(tmp_path), spec("Unmanaged", resource=None))

    assert (out.steps, out.findings, pools) == ([], [], [])


@pytest.mark.parametrize(("vendor", "args"), [
    ("GenuineIntel", "intel_iommu=on iommu=pt"), ("AuthenticAMD", "amd_iommu=on iommu=pt")])
def test_without_an_iommu_the_node_is_degraded_naming_the_kernel_arguments(
    tmp_path: Path, vendor: str, args: str
) -> None:
    tree = host(tmp_path, iommu=False).cpuinfo(4, vendor=vendor)
    (tmp_path / "sys/kernel/iommu_groups").mkdir(parents=True)  # the kernel's, left empty

    out, pools = planned(tree, spec())

    message = out.reason("SriovIommuOff")
    assert f"the kernel needs `{args}` on its command line" in message
    assert "/sys/kernel/iommu_groups is empty" in message
    assert f"add `{args}` to the kernel command line of the host's boot loader" in message
    assert (out.steps, pools) == ([], [])


def test_the_iommu_command_is_this_hosts_boot_loaders(tmp_path: Path) -> None:
    tree = host(tmp_path, iommu=False)
    tree.file("/run/ostree-booted", "")

    out, _ = planned(tree, spec())

    assert "rpm-ostree kargs --append=intel_iommu=on --append=iommu=pt" in out.reason(
        "SriovIommuOff")


def test_vfio_pci_not_loaded_is_named_with_the_modprobe(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).cpuinfo(4).nic("ens1f0", PF, total_vfs=8, vf_drivers=["iavf"] * 3)

    out, _ = planned(tree, spec())

    assert "modprobe vfio-pci" in out.reason("SriovVfioNotLoaded") and out.steps == []


# -- in use ----------------------------------------------------------------------------------


def _drain_reason(out: Recorder) -> str:
    [step] = out.steps
    assert step["disruption"] == "NeedsDrain"
    return str(step["reason"])


def test_a_vfio_vf_a_vm_holds_open_needs_a_drain_to_change(tmp_path: Path) -> None:
    tree = host(tmp_path, ("vfio-pci", "vfio-pci", "iavf"))
    group = (tmp_path / f"sys/bus/pci/devices/{VF0}/iommu_group").resolve().name
    tree.process(4242, "qemu-kvm").open_file(4242, 31, f"/dev/vfio/{group}")

    out, _ = planned(tree, spec("netdevice"))

    reason = _drain_reason(out)
    assert f"{VF0} (opened by pid 4242 (qemu-kvm))" in reason and VF1 not in reason


def test_a_vfio_vf_opened_through_its_iommufd_device_file_is_in_use(tmp_path: Path) -> None:
    tree = host(tmp_path, ("vfio-pci", "iavf", "iavf"))
    tree.file(f"/sys/bus/pci/devices/{VF0}/vfio-dev/vfio3/dev", "511:3")
    tree.process(4242, "qemu-kvm").open_file(4242, 7, "/dev/vfio/devices/vfio3")

    assert "opened by pid 4242" in _drain_reason(planned(tree, spec("netdevice"))[0])


def test_a_vf_netdev_that_is_up_is_in_use(tmp_path: Path) -> None:
    tree = host(tmp_path)
    tree.file(f"/sys/bus/pci/devices/{VF1}/net/ens1f0v1/flags", "0x1003")

    assert f"{VF1} (its netdev ens1f0v1 is up)" in _drain_reason(planned(tree, spec())[0])


def test_a_vf_netdev_moved_into_a_pods_namespace_is_in_use(tmp_path: Path) -> None:
    tree = host(tmp_path)
    # The SR-IOV CNI moved it into a pod: the host's sysfs no longer lists it.
    shutil.rmtree(tmp_path / f"sys/bus/pci/devices/{VF2}/net/ens1f0v2")
    (tmp_path / "sys/class/net/ens1f0v2").unlink()
    tree.pod_vf("net1", VF2, root="/proc/5000/root", pf_address=PF)

    assert f"{VF2} (bound to iavf with no netdev in the host's network namespace" in (
        _drain_reason(planned(tree, spec())[0]))


def test_a_vf_bound_to_a_driver_kvtune_does_not_know_is_in_use(tmp_path: Path) -> None:
    tree = host(tmp_path, ("igb_uio", "iavf", "iavf"))

    assert f"{VF0} (bound to igb_uio with no netdev" in _drain_reason(planned(tree, spec())[0])


# -- PFs other parties manage ------------------------------------------------------------------


def test_a_pf_the_sriov_network_operator_manages_is_left_alone_and_the_rule_refused(
    tmp_path: Path,
) -> None:
    policy = {"name": "sriov-network-operator/intel", "pfNames": ["ens1f0"]}

    out, pools = planned(host(tmp_path), spec(policies=[policy]))

    message = out.reason("SriovPfManagedElsewhere")
    assert "SriovNetworkNodePolicy sriov-network-operator/intel" in message
    assert "spec.host.network.sriov[0]" in message
    assert (out.steps, pools) == ([], [])


@pytest.mark.parametrize("policy", [
    {"name": "a/other-name", "pfNames": ["ens2f0"]},
    {"name": "a/other-vendor", "vendor": "15b3"},
    {"name": "a/name-and-other-device", "pfNames": ["ens1f0"], "vendor": "8086",
     "deviceId": "1593"},
])
def test_a_policy_that_selects_another_nic_leaves_this_one_to_kvtune(
    tmp_path: Path, policy: dict[str, t.Any]
) -> None:
    out, _ = planned(host(tmp_path), spec(policies=[policy]))

    assert len(out.steps) == 1 and out.findings == []


def test_the_pfs_the_sriov_network_operator_manages_are_listed_for_the_nodes_status(
    tmp_path: Path,
) -> None:
    tree = host(tmp_path).nic("ens2f0", "0000:5e:00.0", total_vfs=8).nic("eno1", "0000:19:00.0")
    policies = [SriovOperatorPolicy(name="op/intel", vendor="8086")]

    found = operator_pfs(probe_host(tree.fs()), policies)

    # eno1 is no SR-IOV PF: the policy's selector does not make it one.
    assert [(pf.name, pf.pci_address, pf.policies) for pf in found] == [
        ("ens1f0", PF, ["op/intel"]), ("ens2f0", "0000:5e:00.0", ["op/intel"])]


def test_a_pf_carrying_the_nodes_own_traffic_is_refused_through_the_given_guard(
    tmp_path: Path,
) -> None:
    out, _ = planned(host(tmp_path), spec(),
                     refusals=lambda nic, report: ["the node's default route leaves through it"])

    assert "the node's default route leaves through it" in out.reason("SriovPfManagedElsewhere")
    assert out.steps == []


# -- binding ---------------------------------------------------------------------------------


def _desired(tree: HostTree, state: HypervisorNodeStateSpec | None = None) -> str:
    [step] = planned(tree, state or spec())[0].steps
    return str(step["desired"])


def test_binding_moves_every_vf_to_vfio_pci_and_keeps_the_override(tmp_path: Path) -> None:
    tree = host(tmp_path)
    desired = _desired(tree)
    fs = tree.kernel()

    result, message = pcidriver.apply(fs, PATH, desired, timeout=5)

    assert result == "Applied", message
    assert bindings(fs) == {vf: Binding("vfio-pci", "vfio-pci") for vf in (VF0, VF1, VF2)}
    assert not (tmp_path / "sys/class/net/ens1f0v0").exists()  # iavf's netdev went with it
    assert ("/sys/bus/pci/drivers/iavf/unbind", VF0) in fs.writes


def test_a_vf_that_refuses_the_driver_puts_every_vf_back(tmp_path: Path) -> None:
    tree = host(tmp_path)
    desired = _desired(tree)
    fs = tree.kernel(refuse_bind=[(VF1, "vfio-pci")])
    before = bindings(fs)

    result, message = pcidriver.apply(fs, PATH, desired, timeout=5)

    assert result == "Failed"
    assert f"VF {VF1} of PF {PF} did not take vfio-pci@vfio-pci" in message
    assert "is bound to no driver after /sys/bus/pci/drivers_probe" in message
    assert f"VFs {VF0}, {VF1} are back as they were" in message
    assert bindings(fs) == before  # nothing half-bound: drivers and overrides as they were


def test_a_refused_write_midway_puts_every_vf_back_too(tmp_path: Path) -> None:
    tree = host(tmp_path)
    desired = _desired(tree)
    override = f"/sys/bus/pci/devices/{VF2}/driver_override"
    fs = tree.kernel(refuse_value={(override, "vfio-pci"): errno.EINVAL})
    before = bindings(fs)

    result, message = pcidriver.apply(fs, PATH, desired, timeout=5)

    assert result == "Failed" and override in message
    assert bindings(fs) == before


def test_a_hung_unbind_fails_within_the_deadline_and_the_others_are_restored(
    tmp_path: Path,
) -> None:
    tree = host(tmp_path, ("vfio-pci", "iavf", "iavf"))
    desired = _desired(tree, spec("netdevice"))
    fs = tree.kernel(hang=["/sys/bus/pci/drivers/vfio-pci/unbind"])
    try:
        result, message = pcidriver.apply(fs, PATH, desired, timeout=0.5)
    finally:
        fs.release()

    assert result == "Failed" and "did not return within 0.5 s" in message


def test_a_vf_taken_since_the_plan_is_left_as_it_is_and_the_others_are_bound(
    tmp_path: Path,
) -> None:
    tree = host(tmp_path)
    desired = _desired(tree)
    tree.file(f"/sys/bus/pci/devices/{VF1}/net/ens1f0v1/flags", "0x1003")  # a pod took it
    fs = tree.kernel()

    result, message = pcidriver.apply(fs, PATH, desired, timeout=5)

    assert result == "Partial"
    assert f"VF {VF1} is left as it is: its netdev ens1f0v1 is up" in message
    assert bindings(fs)[VF1] == Binding("iavf")
    assert bindings(fs)[VF0] == bindings(fs)[VF2] == Binding("vfio-pci", "vfio-pci")


def test_a_live_step_waits_when_a_vf_it_would_rebind_was_taken_since_the_plan(
    tmp_path: Path,
) -> None:
    tree = host(tmp_path)
    [step] = planned(tree, spec())[0].steps
    assert taken(tree.fs(), step["path"], step["desired"]) is None

    tree.file(f"/sys/bus/pci/devices/{VF1}/net/ens1f0v1/flags", "0x1003")

    why = taken(tree.fs(), step["path"], step["desired"])
    assert why is not None and f"VFs {VF1} (its netdev ens1f0v1 is up) of {PATH} are in use" in (
        why)


def test_revert_writes_back_the_journaled_drivers_and_clears_the_override(
    tmp_path: Path,
) -> None:
    tree = host(tmp_path, ("iavf", None, "iavf"))
    fs = tree.kernel()
    original = pcidriver.current(fs, PATH) or ""
    assert pcidriver.apply(fs, PATH, _desired(tree), timeout=5)[0] == "Applied"

    result, message = pcidriver.apply(fs, PATH, original, timeout=5)

    assert result == "Applied", message
    assert bindings(fs) == {VF0: Binding("iavf"), VF1: Binding(None), VF2: Binding("iavf")}


def test_a_revert_after_the_vf_count_changed_skips_the_vfs_that_are_gone(tmp_path: Path) -> None:
    fs = host(tmp_path).kernel()
    original = encode({VF0: Binding("iavf"), vf_address(PF, 7): Binding("iavf")})

    result, message = pcidriver.apply(fs, PATH, original, timeout=5)

    assert result == "Applied" and "are gone (the VF count changed)" in message


@pytest.mark.parametrize("value", [
    "0000:3b:02.0", "0000:3b:02.0=iavf;rm", "/etc/passwd=iavf", "0000:3B:02.0=iavf"])
def test_a_journal_value_that_is_no_list_of_bindings_is_refused_not_written(
    tmp_path: Path, value: str
) -> None:
    fs = host(tmp_path).kernel()

    with pytest.raises(BindingsError):
        decode(value)
    assert pcidriver.apply(fs, PATH, value, timeout=5)[0] == "Failed"
    assert fs.writes == []
