"""`kvtune profile suggest` over our host trees: what it proposes, that the agent's planner (in
Audit, as on each of those hosts) refuses none of it and stages no reboot, and that each choice
says why."""

from __future__ import annotations

import typing as t
from pathlib import Path

import pytest
import yaml
from kvtune_agent.features.base import NodeMeta
from kvtune_agent.features.ksm import KSM_HANDLER_ANNOTATION
from kvtune_agent.wiring import plan
from kvtune_api.v1alpha1.nodestate import HypervisorNodeStateSpec
from kvtune_api.v1alpha1.profile import HypervisorProfile
from kvtune_cli import suggest_check
from kvtune_cli.hosts import ProbedHost
from kvtune_cli.suggest import Options, Suggestion, suggest
from kvtune_cli.suggest_yaml import render
from kvtune_cli.suggestion import Draft, SuggestError, VmShape
from kvtune_operator.common.profiles import Profile
from kvtune_operator.controller.render import render_spec
from support.hosttree import HostTree, arm64_server, intel_two_socket, large_host

from .hosts import TREES, probed, static_kubelet

SHAPES = {"no VM shape": Options(), "10 VMs of 4cpu/16Gi": Options(
    vm=VmShape.parse("4cpu/16Gi"), vms_per_node=10)}


def planned(suggestion: Suggestion, host: ProbedHost) -> t.Any:
    """The agent's plan for `host` under the suggested profile, rendered as the operator does."""
    spec = render_spec(Profile.from_body(suggestion.manifest), host.node or "node-1")
    return plan(HypervisorNodeStateSpec.model_validate(spec), host.report,
                NodeMeta(host.labels, host.annotations))


def spec(suggestion: Suggestion, *path: str) -> t.Any:
    here: t.Any = suggestion.manifest["spec"]
    for key in path:
        here = here.get(key) if isinstance(here, dict) else None
    return here


def all_why(suggestion: Suggestion) -> str:
    return "\n".join(line for lines in suggestion.why.values() for line in lines)


@pytest.mark.parametrize("kubelet", ["no kubelet found", "static kubelet"])
@pytest.mark.parametrize("options", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("tree", TREES.values(), ids=TREES.keys())
def test_the_suggested_profile_is_one_the_agent_plans_without_refusal_on_the_host(
    tmp_path: Path, tree: t.Callable[[Path], HostTree], options: Options, kubelet: str,
) -> None:
    built = tree(tmp_path)
    if kubelet == "static kubelet":
        static_kubelet(built)
    host = probed(built, "the host")

    suggestion = suggest([host], options)

    HypervisorProfile.model_validate(suggestion.manifest)
    result = planned(suggestion, host)
    assert [f.message for f in result.findings if f.severity == "Error"] == []
    assert [s.planned.id for s in result.steps if s.planned.disruption == "NeedsReboot"] == []
    # Chosen right the first time: nothing had to be taken back after the planner's check.
    assert "the agent would refuse it" not in all_why(suggestion)
    assert spec(suggestion, "mode") == "Audit"
    assert spec(suggestion, "vmi", "dedicatedCpus") is (kubelet == "static kubelet")


def test_a_numa_host_with_a_static_kubelet_gets_pinned_numa_local_vms_on_1gi_pages(
    tmp_path: Path,
) -> None:
    host = probed(static_kubelet(intel_two_socket(tmp_path), "0,32"), "numa")

    suggestion = suggest([host], Options())

    assert spec(suggestion, "vmi") | {"namespaceSelector": None} == {
        "namespaceSelector": None, "dedicatedCpus": True, "isolateEmulatorThread": True,
        "hugepageSize": "1Gi", "numaPassthrough": True}
    assert spec(suggestion, "numa", "topologyManagerPolicy") == "single-numa-node"
    assert spec(suggestion, "cpu", "ple") == "Required"
    # Per node: 256 GiB, less the kubelet's share of its reserves (node 0 holds reservedMemory's
    # 1124Mi), 25.6 GiB of headroom and the 2 GiB of 2Mi pages left as they are.
    [pool] = spec(suggestion, "memory", "hugepages", "pages")
    assert pool == {"size": "1Gi", "perNode": [{"node": 0, "count": 227},
                                               {"node": 1, "count": 227}]}
    steps = {s.planned.id: s.planned for s in planned(suggestion, host).steps}
    assert steps["hugepages/node0/1Gi"].desired == "227"


def test_the_pools_are_sized_for_the_vms_asked_and_a_host_that_cannot_hold_them_is_named(
    tmp_path: Path,
) -> None:
    host = probed(static_kubelet(intel_two_socket(tmp_path), "0,32"), "numa.json")
    shape = VmShape.parse("4cpu/16Gi")

    fits = suggest([host], Options(vm=shape, vms_per_node=10))
    too_many = suggest([host], Options(vm=shape, vms_per_node=12))

    # 5 VMs per NUMA node, 16 1Gi pages each.
    [pool] = spec(fits, "memory", "hugepages", "pages")
    assert pool["perNode"] == [{"node": 0, "count": 80}, {"node": 1, "count": 80}]
    assert fits.shortfalls == []
    # Each node holds 5: 32 CPUs less those reserved, 6 per VM (4 vCPUs + the emulator thread,
    # in whole cores); the pools are sized for what the host can hold, not for 12.
    [pool] = spec(too_many, "memory", "hugepages", "pages")
    assert pool["perNode"] == [{"node": 0, "count": 80}, {"node": 1, "count": 80}]
    [shortfall] = too_many.shortfalls
    assert shortfall.startswith("numa.json cannot hold 12 VMs of 4cpu/16Gi (6, 6 on NUMA "
                                "nodes 0, 1), only 10: NUMA node 0 holds 5 (CPUs: 32")
    assert "6 per VM" in shortfall


def test_without_a_kubelet_dedicated_cpus_are_left_out_saying_why(tmp_path: Path) -> None:
    host = probed(intel_two_socket(tmp_path), "numa.json")

    suggestion = suggest([host], Options())

    assert spec(suggestion, "vmi", "dedicatedCpus") is False
    assert spec(suggestion, "vmi", "hugepageSize") == "1Gi"
    assert "numaPassthrough" not in spec(suggestion, "vmi")
    assert ("left out: dedicatedCpus and numaPassthrough: the kubelet's configuration is "
            "unknown on numa.json (no kubelet process or config found)") in all_why(suggestion)


def test_memory_only_nodes_get_no_pool(tmp_path: Path) -> None:
    host = probed(TREES["memory-only nodes"](tmp_path), "tiers")

    [pool] = spec(suggest([host], Options()), "memory", "hugepages", "pages")

    assert [entry["node"] for entry in pool["perNode"]] == [0, 1]


def test_hosts_whose_numa_nodes_differ_share_one_total_split_evenly(tmp_path: Path) -> None:
    two = probed(intel_two_socket(tmp_path / "a"), "two")
    eight = probed(large_host(tmp_path / "b", cpus=64, disks=2, nics=1, vfs=2), "eight")

    suggestion = suggest([two, eight], Options())

    [pool] = spec(suggestion, "memory", "hugepages", "pages")
    assert set(pool) == {"size", "count"} and pool["count"] > 0
    for host in (two, eight):
        assert [f.message for f in planned(suggestion, host).findings
                if f.severity == "Error"] == []


def test_nics_and_disks_are_suggested_only_where_every_host_has_them_alike(
    tmp_path: Path,
) -> None:
    one = probed(large_host(tmp_path / "a", cpus=16, nodes=2, disks=3, nics=2, vfs=2), "a")
    other = probed(large_host(tmp_path / "b", cpus=16, nodes=2, disks=2, nics=1, vfs=2), "b")

    suggestion = suggest([one, other], Options(vm=VmShape.parse("2cpu/4Gi"), vms_per_node=4))

    # ens0f0 is on both, ens1f0 only on a; each VM gets a VF, 4 VMs over 1 NIC.
    assert spec(suggestion, "network", "sriov") == [
        {"pfSelector": {"names": ["ens0f0"]}, "numVfs": 4}]
    assert "left out: SR-IOV on ens1f0: not on every host" in all_why(suggestion)
    assert spec(suggestion, "storage", "blockLuns", "selector") == {"models": ["PERC H755"]}
    for host in (one, other):
        result = planned(suggestion, host)
        assert [f.message for f in result.findings if f.severity == "Error"] == []
        assert result.published.get("luns"), "the LUN rule matches the host's free disks"


def test_a_choice_the_agent_would_refuse_on_a_node_is_taken_back_with_its_words(
    tmp_path: Path,
) -> None:
    # KubeVirt's KSM handler turned KSM on here: the agent refuses to fight it.
    host = ProbedHost("node b", probed(intel_two_socket(tmp_path), "b").report, node="b",
                      annotations={KSM_HANDLER_ANNOTATION: "true"})

    suggestion = suggest([host], Options())

    assert spec(suggestion, "memory", "ksm") == "Unmanaged"
    assert ("KSM left as each host has it: the agent would refuse it on node b: memory.ksm is "
            "Disabled, but KubeVirt's KSM handler") in all_why(suggestion)
    assert [f for f in planned(suggestion, host).findings if f.severity == "Error"] == []


def test_a_nic_the_host_itself_uses_is_not_offered_to_vms(tmp_path: Path) -> None:
    tree = large_host(tmp_path, cpus=16, nodes=2, disks=1, nics=2, vfs=0)
    for name in ("ens0f0", "ens1f0"):  # no SR-IOV: both are macvtap candidates
        (tmp_path / f"sys/bus/pci/devices/0000:{0x3b + int(name[3]):02x}:00.0"
         / "sriov_totalvfs").unlink()
    tree.default_route("ens0f0")
    host = probed(tree, "a")

    suggestion = suggest([host], Options())

    assert spec(suggestion, "network", "macvtap") == [
        {"name": "ens1f0", "nicSelector": {"names": ["ens1f0"]}, "capacity": 1}]
    assert "left out: macvtap on ens0f0: the agent would refuse it on a: NIC ens0f0" in (
        all_why(suggestion))


def test_hosts_of_different_architectures_have_nothing_in_common(tmp_path: Path) -> None:
    x86 = probed(intel_two_socket(tmp_path / "a"), "a.json")
    arm = probed(arm64_server(tmp_path / "b"), "b.json")

    with pytest.raises(SuggestError, match=r"nothing in common to tune alike: a.json is x86; "
                       r"b.json is arm64: suggest a profile for each architecture"):
        suggest([x86, arm], Options())


def test_hosts_offering_no_page_size_in_common_are_refused(tmp_path: Path) -> None:
    big = HostTree(tmp_path / "a").cpus(1, 2).meminfo(64 * 2**20)
    big.numa_node(0, range(2), 64 * 2**20, hugepages={1048576: (0, 0)})
    small = HostTree(tmp_path / "b").cpus(1, 2).meminfo(64 * 2**20)
    small.numa_node(0, range(2), 64 * 2**20, hugepages={2048: (0, 0)})

    with pytest.raises(SuggestError, match="no hugepage size in common: a offers 1Gi; b offers "
                       "2Mi"):
        suggest([probed(big, "a"), probed(small, "b")], Options())


@pytest.mark.parametrize(("text", "error"), [
    ("4/16Gi", "write vCPUs and memory as <N>cpu/<memory>"),
    ("0cpu/16Gi", "write vCPUs and memory as <N>cpu/<memory>"),
    ("4cpu/lots", "is not"),
    ("4cpu/512Mi", "below 1Gi"),
])
def test_a_vm_shape_that_is_no_shape_is_refused_with_the_form(text: str, error: str) -> None:
    with pytest.raises(SuggestError, match=error):
        VmShape.parse(text)


def test_every_choice_and_every_omission_is_a_comment_in_the_yaml(tmp_path: Path) -> None:
    host = probed(static_kubelet(intel_two_socket(tmp_path), "0,32"), "numa")
    suggestion = suggest([host], Options(vm=VmShape.parse("4cpu/16Gi"), vms_per_node=10))

    text = render(suggestion, ["header"])

    assert yaml.safe_load(text) == suggestion.manifest
    lines = text.splitlines()
    for path in suggestion.why:
        key = f"{' ' * 2 * len(path)}{path[-1]}:" if path else "spec:"
        at = next((i for i, line in enumerate(lines) if line.startswith(key)), None)
        if at is None:  # a section left out whole: its reasons stand at spec, naming it
            assert any(line.startswith(f"# {path[0]}: left out") for line in lines), path
            continue
        assert lines[at - 1].lstrip().startswith("#"), f"{key} has no comment above it"
    assert "# storage: left out: blockLuns: no host has a disk proven free" in text


def test_a_pool_is_not_suggested_below_the_pages_vms_hold_on_a_host(tmp_path: Path) -> None:
    # 8 of each node's 16 1Gi pages are in use and 4 reserved host-wide; one small VM would
    # need 4 pages on node 0 only.
    host = probed(intel_two_socket(tmp_path), "numa")

    suggestion = suggest([host], Options(vm=VmShape.parse("2cpu/4Gi"), vms_per_node=1))

    [pool] = spec(suggestion, "memory", "hugepages", "pages")
    assert pool["perNode"] == [{"node": 0, "count": 12}, {"node": 1, "count": 12}]
    assert "node 1: kept at the 12 pages VMs hold on numa" in all_why(suggestion)
    assert [s.planned.disruption for s in planned(suggestion, host).steps
            if s.planned.feature == "Hugepages"] == ["Live", "Live"]


def test_a_refusal_nothing_can_take_back_fails_the_suggestion_instead_of_printing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    host = ProbedHost("node b", probed(intel_two_socket(tmp_path), "b").report, node="b",
                      annotations={KSM_HANDLER_ANNOTATION: "true"})
    monkeypatch.delitem(suggest_check.WITHDRAW, "KSM")

    with pytest.raises(SuggestError, match=r"no profile these hosts all satisfy: the agent "
                       r"would refuse it on node b: memory\.ksm is Disabled"):
        suggest([host], Options())


def test_a_nic_whose_name_no_rule_can_carry_is_left_out_saying_why(tmp_path: Path) -> None:
    tree = TREES["small"](tmp_path).nic("mgmt0", "0000:3b:00.0").nic("data_", "0000:5e:00.0")
    host = probed(tree.nic("data1", "0000:5f:00.0").default_route("mgmt0"), "a")

    suggestion = suggest([host], Options())

    # "data_" is a fine interface name but no resource name (macvtap.network.kubevirt.io/data_).
    assert [rule["name"] for rule in spec(suggestion, "network", "macvtap")] == ["data1"]
    assert "left out: macvtap on data_: a profile cannot name this NIC" in all_why(suggestion)


def one_cpu_host(root: Path) -> HostTree:
    """A host of one CPU: no partition can leave it a CPU for VMs."""
    tree = HostTree(root).cpus(1, 1, 1).meminfo(16 * 2**20)
    return tree.numa_node(0, range(1), 16 * 2**20, hugepages={2048: (0, 0), 1048576: (0, 0)})


def busy_host(root: Path) -> HostTree:
    """Two NUMA nodes of 64 CPUs (32 cores with SMT) each."""
    return large_host(root, cpus=128, nodes=2, disks=1, nics=0, vfs=0)


@pytest.mark.parametrize(("trees", "cores", "split"), [
    (["small"], 1, ["CPUs 0,4 for the host, 1-3,5-7 (6) left to VMs"]),
    (["numa"], 1, ["CPUs 0,16,32,48 for the host"]),
    (["memory-only nodes"], 1, ["CPUs 0,8,16,24 for the host"]),
    (["busy"], 2, ["CPUs 0-1,32-33,64-65,96-97 for the host, 2-31,34-63,66-95,98-127 (120)"]),
    # The busiest NUMA node among the hosts sets it, and each host says its own split.
    (["numa", "busy"], 2, ["CPUs 0-1,16-17,32-33,48-49 for the host", "CPUs 0-1,32-33,64-65"]),
])
def test_housekeeping_cores_are_suggested_where_every_host_can_make_the_partition(
    tmp_path: Path, trees: list[str], cores: int, split: list[str],
) -> None:
    builders = {**TREES, "busy": busy_host}
    hosts = [probed(static_kubelet(builders[name](tmp_path / name)), name) for name in trees]

    suggestion = suggest(hosts, Options())

    assert spec(suggestion, "cpu", "partition") == {"housekeepingCoresPerNumaNode": cores}
    why = "\n".join(suggestion.why[("cpu", "partition")])
    assert "bootIsolation stages kernel arguments" in why and "need a reboot" in why
    for host, line in zip(hosts, split, strict=True):
        assert f"{host.source}: {line}" in why
    for host in hosts:  # the agent makes the very split the comment names
        result = planned(suggestion, host)
        assert [f.message for f in result.findings if f.severity == "Error"] == []
        [published] = result.published["cpu_partition"]
        assert f"CPUs {published.housekeeping} for the host, {published.isolated} (" in why


def test_a_host_that_cannot_make_the_partition_leaves_it_out_with_the_refusal(
    tmp_path: Path,
) -> None:
    hosts = [probed(static_kubelet(TREES["small"](tmp_path / "a")), "a"),
             probed(static_kubelet(one_cpu_host(tmp_path / "b")), "b")]

    suggestion = suggest(hosts, Options())

    assert spec(suggestion, "cpu", "partition") is None
    assert ("left out: partition: housekeepingCoresPerNumaNode 1 cannot be made on b: "
            "spec.cpu.partition.housekeepingCoresPerNumaNode is 1, but NUMA node 0 has 1 "
            "core(s) (CPUs 0), which would leave it no CPU for VMs") in all_why(suggestion)


def test_without_dedicated_cpus_no_partition_is_suggested(tmp_path: Path) -> None:
    suggestion = suggest([probed(intel_two_socket(tmp_path), "numa")], Options())

    assert spec(suggestion, "cpu", "partition") is None
    assert "left out: partition: VMs get no dedicated CPUs here" in all_why(suggestion)


def test_a_partition_the_agent_would_refuse_is_withdrawn_with_its_words(tmp_path: Path) -> None:
    # The probe could not read /proc/irq here: the agent would not know where IRQs run.
    host = probed(static_kubelet(TREES["small"](tmp_path), irqs=False), "a")

    suggestion = suggest([host], Options())

    assert spec(suggestion, "cpu", "partition") is None
    assert ("left out: partition: the agent would refuse it on a: "
            "/proc/irq/default_smp_affinity cannot be read") in all_why(suggestion)
    assert spec(suggestion, "vmi", "dedicatedCpus") is True
    assert [f for f in planned(suggestion, host).findings if f.severity == "Error"] == []


def test_with_a_partition_only_the_isolated_cpus_hold_vms(tmp_path: Path) -> None:
    # 64 CPUs per NUMA node, the kubelet reserving CPU 0 only: the partition keeps 2 cores
    # (4 CPUs) of each node, so 60 hold VMs of 1 vCPU + the emulator thread (2 per VM): 30.
    host = probed(static_kubelet(busy_host(tmp_path), "0"), "busy")

    suggestion = suggest([host], Options(vm=VmShape.parse("1cpu/4Gi"), vms_per_node=62))

    assert spec(suggestion, "cpu", "partition") == {"housekeepingCoresPerNumaNode": 2}
    [pool] = spec(suggestion, "memory", "hugepages", "pages")
    assert pool["perNode"] == [{"node": 0, "count": 120}, {"node": 1, "count": 120}]
    [shortfall] = suggestion.shortfalls
    assert "only 60" in shortfall
    assert "CPUs: 64, 4 kept for the host (the partition's housekeeping)" in shortfall
    assert ("its kubelet's reservedSystemCPUs are 0: make them 0-1,32-33,64-65,96-97 "
            "(spec.cpu.kubelet") in all_why(suggestion)


def test_dedicated_cpus_withdrawn_take_the_partition_with_them() -> None:
    draft = Draft()
    draft.choose(("cpu", "partition"), {"housekeepingCoresPerNumaNode": 1}, "chosen")
    draft.choose(("vmi", "dedicatedCpus"), True, "chosen")

    suggest_check.WITHDRAW["Kubelet"](draft, "the agent would refuse it on a: the kubelet")

    assert draft.get(("cpu", "partition")) is None
    assert draft.get(("vmi", "dedicatedCpus")) is False
    assert ("left out: partition: the agent would refuse it on a: the kubelet"
            in draft.why[("cpu",)])


@pytest.mark.parametrize(("reserved", "said"), [("4,0", False), ("0", True), ("0-1", True)])
def test_a_kubelet_reserving_other_cpus_than_the_housekeeping_ones_is_named(
    tmp_path: Path, reserved: str, said: bool,
) -> None:
    host = probed(static_kubelet(TREES["small"](tmp_path), reserved), "a")

    why = "\n".join(suggest([host], Options()).why[("cpu", "partition")])

    assert (f"its kubelet's reservedSystemCPUs are {reserved}: make them 0,4" in why) is said
