"""The planner: steps with their disruption class, findings that no step fixes, LUN matching."""

from __future__ import annotations

import typing as t
from pathlib import Path

import pytest
from hosttree import (
    DEFAULT_DISK_BYTES,
    HostTree,
    arm64_server,
    intel_two_socket,
    loongarch64_host,
    memory_tiers,
    no_node_hugepages,
    power9_host,
    pvm_guest,
    riscv64_host,
    s390_lpar,
)
from kvtune_agent.features import block, cpu
from kvtune_agent.features.base import Finding, NodeMeta, Plan
from kvtune_agent.features.block import Scheduler, matching_luns
from kvtune_agent.features.cpu import PLE_CONF, PleFacts
from kvtune_agent.wiring import plan, probe_host
from kvtune_api.v1alpha1.nodestate import HypervisorNodeStateSpec, PlannedStep
from kvtune_api.v1alpha1.profile import BlockLunSettings

from .specs import node_spec

GiB = 2**20  # KiB
HUGE_1G = "/sys/devices/system/node/node{}/hugepages/hugepages-1048576kB/nr_hugepages"


def _files(
    schedulers: dict[str, Scheduler] | None = None, ple_staged: str | None = None,
    ple_staged_before_boot: bool = False,
) -> dict[t.Any, t.Any]:
    """The host facts the planners read beyond the probe (each feature's `read`)."""
    return {block.FEATURE: schedulers or {},
            cpu.FEATURE: PleFacts(ple_staged, ple_staged_before_boot)}


def _plan(
    tree: HostTree, spec: HypervisorNodeStateSpec, node: NodeMeta | None = None,
    files: dict[t.Any, t.Any] | None = None,
) -> Plan:
    return plan(spec, probe_host(tree.fs()), node, files)


def _steps(found: Plan) -> dict[str, PlannedStep]:
    return {step.planned.id: step.planned for step in found.steps}


def _finding(found: Plan, reason: str) -> Finding:
    [finding] = [f for f in found.findings if f.reason == reason]
    return finding


def _pages(size: str = "1Gi", **allocation: t.Any) -> dict[str, t.Any]:
    return {"hugepages": {"pages": [{"size": size, **allocation}]}}


# -- a matching host ------------------------------------------------------------------------


def test_a_host_that_already_matches_gets_no_steps_and_no_findings(tmp_path: Path) -> None:
    tree = intel_two_socket(tmp_path)
    spec = node_spec(memory={**_pages(count=32), "ksm": "Disabled",
                             "transparentHugepages": "never"},
                     cpu={"ple": "Required"}, numa={"numad": "Disabled"})

    assert _plan(tree, spec) == Plan()


def test_planning_is_a_pure_function_of_its_inputs(tmp_path: Path) -> None:
    host = probe_host(intel_two_socket(tmp_path).ksm(1).fs())
    spec = node_spec(memory=_pages(count=40))

    assert plan(spec, host) == plan(spec, host)


# -- hugepages ------------------------------------------------------------------------------


def test_a_count_is_split_evenly_with_the_remainder_on_the_lowest_node(tmp_path: Path) -> None:
    found = _plan(intel_two_socket(tmp_path), node_spec(memory=_pages(count=35)))

    steps = _steps(found)
    assert sorted(steps) == ["hugepages/node0/1Gi", "hugepages/node1/1Gi"]
    assert (steps["hugepages/node0/1Gi"].current, steps["hugepages/node0/1Gi"].desired) == (
        "16", "18")
    assert steps["hugepages/node1/1Gi"].desired == "17"
    assert steps["hugepages/node0/1Gi"].path == HUGE_1G.format(0)
    assert all(s.disruption == "Live" and s.feature == "Hugepages" for s in steps.values())
    assert "pages[0].count (35, split evenly across NUMA nodes 0,1)" in (
        steps["hugepages/node0/1Gi"].reason)


def test_a_count_skips_memoryless_nodes_and_follows_id_gaps(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).meminfo(64 * GiB)
    tree.numa_node(0, range(4), 32 * GiB, hugepages={2048: (0, 0)})
    tree.numa_node(1, range(4, 8), 0, hugepages={2048: (0, 0)})  # CPUs, no memory
    tree.numa_node(4, range(8, 12), 32 * GiB, hugepages={2048: (0, 0)})

    steps = _steps(_plan(tree, node_spec(memory=_pages("2Mi", count=5))))

    assert {i: s.desired for i, s in steps.items()} == {
        "hugepages/node0/2Mi": "3", "hugepages/node4/2Mi": "2"}


def test_a_count_leaves_out_memory_only_nodes(tmp_path: Path) -> None:
    steps = _steps(_plan(memory_tiers(tmp_path), node_spec(memory=_pages("2Mi", count=4))))

    # CXL memory (node 2) and GPU memory (250-255) have no CPUs for a VM to use it from
    assert {i: s.desired for i, s in steps.items()} == {
        "hugepages/node0/2Mi": "2", "hugepages/node1/2Mi": "2"}


def test_a_count_leaves_out_nodes_whose_cpus_are_all_offline(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).cpus(1, 4, offline=[2, 3]).meminfo(64 * GiB)
    tree.numa_node(0, [0, 1], 32 * GiB, hugepages={2048: (0, 0)})
    tree.numa_node(1, [2, 3], 32 * GiB, hugepages={2048: (0, 0)})

    steps = _steps(_plan(tree, node_spec(memory=_pages("2Mi", count=4))))

    assert {i: s.desired for i, s in steps.items()} == {"hugepages/node0/2Mi": "4"}


def _spoil_cpulist(tree: HostTree, path: str, content: str | None) -> None:
    if content is None:
        (tree.root / path.lstrip("/")).unlink()
        tree.unreadable(path)
    else:
        tree.file(path, content)


@pytest.mark.parametrize("content", [pytest.param("4-\n", id="malformed"),
                                     pytest.param(None, id="unreadable"),
                                     pytest.param("\0garbage", id="NULs")])
def test_a_count_is_not_split_when_a_node_s_cpus_are_unknown(
    tmp_path: Path, content: str | None
) -> None:
    tree = intel_two_socket(tmp_path)
    cpulist_path = "/sys/devices/system/node/node1/cpulist"
    _spoil_cpulist(tree, cpulist_path, content)

    found = _plan(tree, node_spec(memory=_pages(count=40)))

    # Unknown is not none: node 1's share does not move to node 0 as a Live step.
    assert not [s for s in found.steps if s.planned.feature == "Hugepages"]
    message = _finding(found, "NumaNodeCpusUnknown").message
    assert "NUMA node 1 " in message and cpulist_path in message
    assert "pages[0].count" in message


def test_a_count_named_per_node_is_planned_where_a_node_s_cpus_are_unknown(
    tmp_path: Path,
) -> None:
    tree = intel_two_socket(tmp_path)
    _spoil_cpulist(tree, "/sys/devices/system/node/node1/cpulist", "4-\n")

    found = _plan(tree, node_spec(memory=_pages(perNode=[{"node": 0, "count": 20},
                                                          {"node": 1, "count": 20}])))

    assert {i: s.desired for i, s in _steps(found).items()} == {
        "hugepages/node0/1Gi": "20", "hugepages/node1/1Gi": "20"}
    assert not [f for f in found.findings if f.reason == "NumaNodeCpusUnknown"]


@pytest.mark.parametrize("content", [pytest.param("-3", id="negative"),
                                     pytest.param(None, id="unreadable")])
def test_a_pool_of_unknown_size_plans_no_step_and_says_why(
    tmp_path: Path, content: str | None
) -> None:
    tree = intel_two_socket(tmp_path)
    path = HUGE_1G.format(1)
    if content is None:
        (tmp_path / path.lstrip("/")).unlink()
        tree.unreadable(path)
    else:
        tree.file(path, content)

    found = _plan(tree, node_spec(memory=_pages(count=40)))

    assert list(_steps(found)) == ["hugepages/node0/1Gi"]
    unknown = _finding(found, "HugepagePoolUnknown")
    assert path in unknown.message
    assert unknown.message.startswith("spec.host.memory.hugepages.pages[0].count (40")


def test_a_node_with_an_unreadable_pool_grows_none_of_its_pools(tmp_path: Path) -> None:
    # Node 1's 1Gi pool is unknown, so what node 1 holds in all is unknown: its 2Mi pool may not
    # grow either (the budget would be judged on a guess). Node 0 grows as asked.
    tree = intel_two_socket(tmp_path)
    tree.file(HUGE_1G.format(1), "garbage")

    found = _plan(tree, node_spec(memory=_pages("2Mi", count=4096)))  # 1024 -> 2048 a node

    assert list(_steps(found)) == ["hugepages/node0/2Mi"]
    assert "NUMA node 1" in _finding(found, "NodeHugepagesUnknown").message


def test_a_per_node_entry_for_a_missing_node_is_an_error_naming_the_field_and_node(
    tmp_path: Path,
) -> None:
    spec = node_spec(memory=_pages(perNode=[{"node": 1, "count": 20}, {"node": 3, "count": 4}]))

    found = _plan(intel_two_socket(tmp_path), spec)

    error = _finding(found, "HugepageNodeMissing")
    assert (error.feature, error.severity) == ("Hugepages", "Error")
    assert error.message.startswith("spec.host.memory.hugepages.pages[0].perNode[1].node is 3")
    assert "its nodes: 0, 1" in error.message
    assert list(_steps(found)) == ["hugepages/node1/1Gi"]  # the valid entry is still planned


@pytest.mark.parametrize(("wanted", "disruption"), [
    pytest.param(20, "Live", id="growing is live"),
    pytest.param(12, "Live", id="shrinking into free unreserved pages is live"),
    pytest.param(11, "NeedsDrain", id="shrinking into reserved pages needs a drain"),
    pytest.param(4, "NeedsDrain", id="shrinking below the pages in use needs a drain"),
])
def test_a_pool_never_shrinks_into_pages_in_use_or_reserved_without_a_drain(
    tmp_path: Path, wanted: int, disruption: str
) -> None:
    # Each node: 16 pages, 8 free (8 in use); 4 reserved host-wide.
    spec = node_spec(memory=_pages(perNode=[{"node": 0, "count": wanted}]))

    step = _steps(_plan(intel_two_socket(tmp_path), spec))["hugepages/node0/1Gi"]

    assert (step.desired, step.disruption) == (str(wanted), disruption)
    if disruption == "NeedsDrain":
        assert "8 are in use by VMs, 4 reserved host-wide" in step.reason
        assert "must leave the node first" in step.reason


def _per_node(*pools: tuple[str, int, int]) -> dict[str, t.Any]:
    """memory.hugepages with, per (size, node, count), a perNode entry."""
    sizes: dict[str, list[dict[str, int]]] = {}
    for size, node, count in pools:
        sizes.setdefault(size, []).append({"node": node, "count": count})
    return {"hugepages": {"pages": [{"size": s, "perNode": n} for s, n in sizes.items()]}}


@pytest.mark.parametrize("pools", [
    pytest.param([("1Gi", 0, 200), ("2Mi", 0, 40000)], id="all sizes together exceed the node"),
    pytest.param([("1Gi", 0, 256)], id="the whole node"),
    pytest.param([("1Gi", 0, 231)], id="the node less the kubelet's reserve, but no headroom"),
])
def test_pools_that_would_leave_a_node_too_little_memory_are_not_grown(
    tmp_path: Path, pools: list[tuple[str, int, int]]
) -> None:
    spec = node_spec(memory=_per_node(*pools, ("1Gi", 1, 20)))

    found = _plan(intel_two_socket(tmp_path), spec)  # 256 GiB per node, 2Mi pools of 2 GiB

    assert list(_steps(found)) == ["hugepages/node1/1Gi"]
    message = _finding(found, "HugepagesExceedNodeMemory").message
    assert message.startswith("NUMA node 0 would hold ")
    assert "256.0 GiB of memory, less 0.0 GiB the kubelet keeps from pods" in message
    assert "25.6 GiB of headroom (spec.host.memory.hugepages.hostHeadroom" in message


@pytest.mark.parametrize("kubelet", [
    pytest.param("reservedMemory:\n- numaNode: 0\n  limits: {memory: 20Gi}\n",
                 id="reservedMemory of that node"),
    pytest.param("systemReserved: {memory: 30Gi}\nkubeReserved: {memory: 8Gi}\n"
                 "evictionHard: {memory.available: 2Gi}\n", id="its share of host-wide reserves"),
])
def test_what_the_kubelet_reserves_on_a_node_is_not_given_to_hugepages(
    tmp_path: Path, kubelet: str
) -> None:
    # 212 + 2 GiB fit in 256 GiB less 25.6 GiB of headroom, not also less 20 GiB for the kubelet.
    tree = intel_two_socket(tmp_path).kubelet_config(kubelet)

    found = _plan(tree, node_spec(memory=_per_node(("1Gi", 0, 212))))

    assert found.steps == ()
    assert "less 20.0 GiB the kubelet keeps from pods" in (
        _finding(found, "HugepagesExceedNodeMemory").message)


def test_a_profile_may_state_a_smaller_headroom(tmp_path: Path) -> None:
    memory = _per_node(("1Gi", 0, 250))
    memory["hugepages"]["hostHeadroom"] = {"percent": 1, "minimum": "1Gi"}

    found = _plan(intel_two_socket(tmp_path), node_spec(memory=memory))

    assert list(_steps(found)) == ["hugepages/node0/1Gi"]


def test_pools_that_fit_each_node_but_not_the_host_are_not_grown(tmp_path: Path) -> None:
    tree = intel_two_socket(tmp_path).meminfo(400 * GiB)  # /proc/meminfo: less than the nodes

    found = _plan(tree, node_spec(memory=_pages(count=400)))

    assert found.steps == ()
    assert "the host would hold 404.0 GiB of hugepages" in (
        _finding(found, "HugepagesExceedHostMemory").message)


def _unreadable(tree: HostTree, path: str) -> HostTree:
    (tree.root / path.lstrip("/")).unlink()
    return tree.unreadable(path)


@pytest.mark.parametrize(("unknown", "path"), [
    pytest.param(lambda tree: _unreadable(tree, "/sys/devices/system/node/node0/meminfo"),
                 "/sys/devices/system/node/node0/meminfo", id="a node's meminfo"),
    pytest.param(lambda tree: _unreadable(tree, "/proc/meminfo"), "/proc/meminfo",
                 id="the host's meminfo"),
    pytest.param(lambda tree: tree.kubelet_config("systemReserved: [\n"),
                 "/var/lib/kubelet/config.yaml", id="the kubelet's reservations"),
])
def test_unknown_memory_grows_no_pool_and_says_which_file_to_fix(
    tmp_path: Path, unknown: t.Callable[[HostTree], object], path: str
) -> None:
    tree = intel_two_socket(tmp_path)
    unknown(tree)

    found = _plan(tree, node_spec(memory=_per_node(("1Gi", 0, 20), ("1Gi", 1, 12))))

    assert list(_steps(found)) == ["hugepages/node1/1Gi"]  # shrinking needs no budget
    [error] = [f for f in found.findings if f.feature == "Hugepages"]
    assert error.severity == "Error" and path in error.message
    assert "not grown" in error.message


@pytest.mark.parametrize(("tree_free", "count", "why"), [
    pytest.param({"node": 100 * GiB}, 130, "NUMA node 0 has 100.0 GiB free",
                 id="more than the node's free memory"),
    pytest.param({"host": 10 * GiB}, 30, "the host has 10.0 GiB available",
                 id="more than the host's available memory"),
])
def test_growing_into_memory_in_use_waits_for_a_drain(
    tmp_path: Path, tree_free: dict[str, int], count: int, why: str
) -> None:
    tree = intel_two_socket(tmp_path)
    if "host" in tree_free:
        tree.meminfo(512 * GiB, free_kib=tree_free["host"])
    else:
        tree.numa_node(0, range(16), 256 * GiB, distances=(10, 21), free_kib=tree_free["node"])

    step = _steps(_plan(tree, node_spec(memory=_per_node(("1Gi", 0, count)))))[
        "hugepages/node0/1Gi"]

    assert step.disruption == "NeedsDrain"
    assert why in step.reason and "rollout.maxUnavailable" in step.reason


def test_a_node_shrinks_one_pool_before_it_grows_another(tmp_path: Path) -> None:
    spec = node_spec(memory=_per_node(("1Gi", 0, 30), ("2Mi", 0, 0)))

    found = _plan(intel_two_socket(tmp_path), spec)

    assert list(_steps(found)) == ["hugepages/node0/2Mi", "hugepages/node0/1Gi"]


def test_a_page_size_the_host_does_not_offer_is_an_error(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).meminfo(64 * GiB).numa_node(0, range(4), 64 * GiB,
                                                           hugepages={2048: (0, 0)})

    found = _plan(tree, node_spec(memory=_pages("1Gi", count=2)))

    assert found.steps == ()
    assert "hugepages-1048576kB/nr_hugepages does not exist" in (
        _finding(found, "HugepageSizeUnsupported").message)


def test_a_kernel_without_per_node_pools_is_told_apart_from_a_missing_size(
    tmp_path: Path,
) -> None:
    found = _plan(no_node_hugepages(tmp_path), node_spec(memory=_pages("2Mi", count=64)))

    assert found.steps == ()
    findings = [f for f in found.findings if f.reason == "NoPerNodeHugepages"]
    assert [f.severity for f in findings] == ["Error", "Error"]  # one per node
    assert "/sys/kernel/mm/hugepages/hugepages-2048kB does" in findings[0].message
    assert "2.6.33" in findings[0].message
    assert not [f for f in found.findings if f.reason == "HugepageSizeUnsupported"]


# -- KSM, numad, THP ------------------------------------------------------------------------


def _merging(tmp_path: Path) -> HostTree:
    tree = HostTree(tmp_path).ksm(1, shared=100, sharing=4000)
    tree.unit("ksmtuned.service", wanted_by=["multi-user.target"])
    return tree.process(812, "bash", "bash", "/usr/sbin/ksmtuned")


def test_disabling_ksm_stops_ksmtuned_then_unmerges_and_stops_ksmd(tmp_path: Path) -> None:
    found = _plan(_merging(tmp_path), node_spec(memory={"ksm": "Disabled"}))

    assert [(s.planned.id, s.kind, s.planned.path, s.planned.current, s.planned.desired)
            for s in found.steps] == [
        ("ksm/ksmtuned", "unit", "ksmtuned.service", "enabled,active", "disabled,inactive"),
        ("ksm/run", "sysfs", "/sys/kernel/mm/ksm/run", "1", "0"),
    ]
    assert "unmerge the 4000 shared pages (run=2)" in found.steps[1].planned.reason


def test_stopped_ksm_with_pages_still_merged_is_unmerged(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).ksm(0, shared=10, sharing=50)

    assert list(_steps(_plan(tree, node_spec(memory={"ksm": "Disabled"})))) == ["ksm/run"]


def test_ksm_managed_by_kubevirt_is_a_conflict_reported_not_fought(tmp_path: Path) -> None:
    meta = NodeMeta(labels={"kubevirt.io/ksm-enabled": "true"},
                    annotations={"kubevirt.io/ksm-handler-managed": "true"})

    found = _plan(_merging(tmp_path), node_spec(memory={"ksm": "Disabled"}), meta)

    assert found.steps == ()
    conflict = _finding(found, "KSMManagedByKubeVirt")
    assert (conflict.feature, conflict.severity) == ("KSM", "Error")
    assert "ksmConfiguration.nodeLabelSelector" in conflict.message


def test_kubevirts_ksm_label_alone_only_mirrors_ksm_and_is_no_conflict(tmp_path: Path) -> None:
    meta = NodeMeta(labels={"kubevirt.io/ksm-enabled": "true"},
                    annotations={"kubevirt.io/ksm-handler-managed": "false"})

    found = _plan(_merging(tmp_path), node_spec(memory={"ksm": "Disabled"}), meta)

    assert list(_steps(found)) == ["ksm/ksmtuned", "ksm/run"]


@pytest.mark.parametrize(("build", "mode", "steps", "reason"), [
    pytest.param(lambda t: t.ksm(0), "Enabled", {"ksm/run": "1"}, None, id="enabling starts ksmd"),
    pytest.param(lambda t: t.ksm(1), "Unmanaged", {}, None, id="unmanaged is left alone"),
    pytest.param(lambda t: None, "Disabled", {}, None, id="a kernel without KSM is already off"),
    pytest.param(lambda t: None, "Enabled", {}, "KSMUnsupported",
                 id="enabling KSM on a kernel without it is an error"),
])
def test_ksm_modes(
    tmp_path: Path, build: t.Callable[[HostTree], object], mode: str, steps: dict[str, str],
    reason: str | None,
) -> None:
    tree = HostTree(tmp_path)
    build(tree)

    found = _plan(tree, node_spec(memory={"ksm": mode}))

    assert {i: s.desired for i, s in _steps(found).items()} == steps
    assert [f.reason for f in found.findings if f.feature == "KSM"] == ([reason] if reason else [])


def test_numad_disabled_stops_and_disables_a_running_numad(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).unit("numad.service", wanted_by=["multi-user.target"])
    tree.process(700, "numad")

    [step] = _plan(tree, node_spec(numa={"numad": "Disabled"})).steps

    assert (step.kind, step.planned.path, step.planned.desired) == (
        "unit", "numad.service", "disabled,inactive")


def test_numad_enabled_with_a_static_cpu_manager_is_planned_with_a_warning(
    tmp_path: Path,
) -> None:
    tree = HostTree(tmp_path).unit("numad.service")
    tree.kubelet_config("cpuManagerPolicy: static\n")

    found = _plan(tree, node_spec(numa={"numad": "Enabled"}))

    assert _steps(found)["numad"].desired == "enabled,active"
    assert _finding(found, "NumadWithStaticCpuManager").severity == "Warning"


def test_numad_left_unmanaged_is_flagged_where_the_static_cpu_manager_pins(
    tmp_path: Path,
) -> None:
    tree = HostTree(tmp_path).unit("numad.service", wanted_by=["multi-user.target"])
    tree.process(700, "numad").kubelet_config("cpuManagerPolicy: static\n")

    found = _plan(tree, node_spec(numa={"numad": "Unmanaged"}))

    assert found.steps == ()
    warning = _finding(found, "NumadWithStaticCpuManager")
    assert "numa.numad is Unmanaged and numad runs" in warning.message


@pytest.mark.parametrize(("masked", "reason"), [
    (False, "NumadNotInstalled"), (True, "NumadMasked"),
])
def test_numad_enabled_that_cannot_start_is_an_error(
    tmp_path: Path, masked: bool, reason: str
) -> None:
    tree = HostTree(tmp_path)
    if masked:
        tree.unit("numad.service", masked=True)

    found = _plan(tree, node_spec(numa={"numad": "Enabled"}))

    assert found.steps == ()
    assert _finding(found, reason).severity == "Error"


def test_thp_is_set_to_the_wanted_mode(tmp_path: Path) -> None:
    found = _plan(HostTree(tmp_path).thp("always"),
                  node_spec(memory={"transparentHugepages": "madvise"}))

    step = _steps(found)["thp"]
    assert (step.path, step.current, step.desired, step.disruption) == (
        "/sys/kernel/mm/transparent_hugepage/enabled", "always", "madvise", "Live")


# -- SR-IOV ---------------------------------------------------------------------------------


def _nics(tmp_path: Path, vf_drivers: t.Iterable[str | None] = ()) -> HostTree:
    tree = HostTree(tmp_path).nic("ens1f0", "0000:3b:00.0", total_vfs=64, vf_drivers=vf_drivers)
    return tree.nic("ens1f1", "0000:3b:00.1", total_vfs=64).nic("eno1", "0000:19:00.0")


@pytest.mark.parametrize(("selector", "selected"), [
    pytest.param({"names": ["ens1f1"]}, ["ens1f1"], id="by name"),
    pytest.param({"pciAddresses": ["0000:3b:00.0"]}, ["ens1f0"], id="by PCI address"),
    pytest.param({"vendor": "8086", "device": "159b", "names": ["ens1f0", "ens1f1"]},
                 ["ens1f0", "ens1f1"], id="every given criterion must match"),
    pytest.param({"vendor": "8086", "device": "1592"}, [], id="another device matches nothing"),
])
def test_a_pf_selector_picks_the_nics_whose_criteria_all_match(
    tmp_path: Path, selector: dict[str, t.Any], selected: list[str]
) -> None:
    spec = node_spec(network={"sriov": [{"pfSelector": selector, "numVfs": 4}]})

    found = _plan(_nics(tmp_path), spec)

    assert sorted(_steps(found)) == [f"sriov/{name}" for name in selected]
    if not selected:
        assert _finding(found, "SriovRuleMatchesNothing").severity == "Warning"


def test_more_vfs_than_the_nic_supports_is_an_error_naming_nic_and_field(tmp_path: Path) -> None:
    spec = node_spec(network={"sriov": [{"pfSelector": {"names": ["ens1f0"]}, "numVfs": 128}]})

    found = _plan(_nics(tmp_path), spec)

    assert found.steps == ()
    assert _finding(found, "SriovTooManyVfs").message.startswith(
        "spec.host.network.sriov[0].numVfs is 128, but NIC ens1f0 (0000:3b:00.0) supports at "
        "most 64 VFs")


def test_a_nic_without_sriov_selected_by_a_rule_is_an_error(tmp_path: Path) -> None:
    spec = node_spec(network={"sriov": [{"pfSelector": {"names": ["eno1"]}, "numVfs": 4}]})

    assert "NIC eno1" in _finding(_plan(_nics(tmp_path), spec), "SriovNotCapable").message


@pytest.mark.parametrize(("vf_drivers", "disruption"), [
    pytest.param([], "Live", id="creating the first VFs is live"),
    pytest.param(["iavf", None], "Live", id="VFs no VM uses may be recreated live"),
    pytest.param(["iavf", "vfio-pci"], "NeedsDrain", id="a VF attached to a VM needs a drain"),
    *(pytest.param(["iavf", driver], "NeedsDrain", id=f"a VF bound to {driver} needs a drain")
      for driver in ("pci-stub", "igb_uio", "uio_pci_generic")),
])
def test_changing_a_vf_count_needs_a_drain_only_when_a_vf_is_in_use(
    tmp_path: Path, vf_drivers: list[str | None], disruption: str
) -> None:
    spec = node_spec(network={"sriov": [{"pfSelector": {"names": ["ens1f0"]}, "numVfs": 8}]})

    step = _steps(_plan(_nics(tmp_path, vf_drivers), spec))["sriov/ens1f0"]

    assert (step.path, step.current, step.desired, step.disruption) == (
        "/sys/bus/pci/devices/0000:3b:00.0/sriov_numvfs", str(len(vf_drivers)), "8", disruption)


def test_two_rules_wanting_different_counts_for_one_nic_leave_it_alone(tmp_path: Path) -> None:
    spec = node_spec(network={"sriov": [
        {"pfSelector": {"vendor": "8086"}, "numVfs": 8},
        {"pfSelector": {"names": ["ens1f1"]}, "numVfs": 16},
    ]})

    found = _plan(_nics(tmp_path), spec)

    assert "sriov/ens1f1" not in _steps(found)
    assert "sriov[0] (numVfs 8) and sriov[1] (numVfs 16)" in (
        _finding(found, "SriovRulesConflict").message)


# -- PLE and the kubelet: checked, never changed live -----------------------------------------


INTEL_PLE = "options kvm_intel ple_gap=128\n"


def _intel(tmp_path: Path, *, ple_gap: int, vmx_flags: str = "ept ple") -> HostTree:
    tree = HostTree(tmp_path).cpuinfo(4, flags="fpu vmx", vmx_flags=vmx_flags)
    return tree.kvm_module("kvm_intel", ple_gap=ple_gap, ple_window=4096)


@pytest.mark.parametrize(("ple", "gap", "flags", "allow_reboot", "reason", "severity"), [
    pytest.param("Required", 0, "ept", True, "PLEUnsupported", "Error",
                 id="required on a CPU without PLE: degraded, never a step"),
    pytest.param("Preferred", 0, "ept", True, "PLEUnsupported", "Warning",
                 id="preferred on a CPU without PLE: a warning"),
    pytest.param("Required", 0, "ept ple", False, "PLEDisabled", "Error",
                 id="required but turned off, reboots not allowed: degraded"),
    pytest.param("Preferred", 0, "ept ple", True, "PLEDisabled", "Warning",
                 id="preferred but turned off: a warning, no reboot staged"),
    pytest.param("Ignored", 0, "ept", True, None, None, id="ignored is not checked"),
    pytest.param("Required", 128, "ept ple", True, None, None, id="on is fine"),
])
def test_ple_findings(
    tmp_path: Path, ple: str, gap: int, flags: str, allow_reboot: bool, reason: str | None,
    severity: str | None,
) -> None:
    spec = node_spec(cpu={"ple": ple}, allow_reboot=allow_reboot)

    found = _plan(_intel(tmp_path, ple_gap=gap, vmx_flags=flags), spec)

    assert found.steps == ()
    assert [(f.reason, f.severity) for f in found.findings] == (
        [(reason, severity)] if reason else [])


@pytest.mark.parametrize("ple", ["Required", "Preferred"])
@pytest.mark.parametrize(("build", "reason"), [
    pytest.param(arm64_server, None, id="arm64: KVM's WFE trap stands in, nothing to find"),
    pytest.param(s390_lpar, None, id="s390x: directed yield stands in, nothing to find"),
    pytest.param(power9_host, None, id="POWER: H_CONFER stands in, nothing to find"),
    pytest.param(pvm_guest, "PLEUnsupported", id="kvm_pvm: nothing stands in, still unsupported"),
    pytest.param(riscv64_host, "PLEUnsupported", id="riscv64: no exit on a spin, unsupported"),
    pytest.param(loongarch64_host, "PLEUnsupported",
                 id="loongarch64: no exit on a spin, unsupported"),
])
def test_ple_off_vt_x_and_amd_v_is_found_only_where_nothing_stands_in_for_it(
    tmp_path: Path, build: t.Callable[[Path], HostTree], reason: str | None, ple: str
) -> None:
    found = _plan(build(tmp_path), node_spec(cpu={"ple": ple}))

    assert [f.reason for f in found.findings if f.reason.startswith("PLE")] == (
        [reason] if reason else [])


def test_required_ple_turned_off_is_staged_for_a_reboot_when_reboots_are_allowed(
    tmp_path: Path,
) -> None:
    found = _plan(_intel(tmp_path, ple_gap=0), node_spec(cpu={"ple": "Required"},
                                                         allow_reboot=True))

    [step] = found.steps
    assert (step.kind, step.planned.id, step.planned.path, step.planned.desired) == (
        "file", "ple/kvm_intel", PLE_CONF, "options kvm_intel ple_gap=128\n")
    assert step.planned.disruption == "NeedsReboot"
    assert found.findings == ()


def test_a_staged_ple_fix_waits_for_the_reboot_without_a_new_step(tmp_path: Path) -> None:
    spec = node_spec(cpu={"ple": "Required"}, allow_reboot=True)

    found = _plan(_intel(tmp_path, ple_gap=0), spec, files=_files(ple_staged=INTEL_PLE))

    assert found.steps == ()
    assert found.reboot_pending
    assert _finding(found, "PLERebootPending").severity == "Pending"


def test_a_staged_ple_fix_that_a_reboot_did_not_apply_is_an_error(tmp_path: Path) -> None:
    files = _files(ple_staged=INTEL_PLE, ple_staged_before_boot=True)

    found = _plan(_intel(tmp_path, ple_gap=0), node_spec(cpu={"ple": "Required"},
                                                         allow_reboot=True), files=files)

    assert not found.reboot_pending
    assert "kvm_intel.ple_gap=0" in _finding(found, "PLEOverridden").message


def _amd(tmp_path: Path, **params: int) -> HostTree:
    tree = HostTree(tmp_path).cpuinfo(4, vendor="AuthenticAMD",
                                      flags="fpu svm pausefilter pfthreshold")
    return tree.kvm_module("kvm_amd", **params)


@pytest.mark.parametrize(("count", "thresh", "options"), [
    pytest.param(3000, 0, "options kvm_amd pause_filter_thresh=128\n",
                 id="a zero threshold gets the kernel's default threshold"),
    pytest.param(0, 0, "options kvm_amd pause_filter_count=3000 pause_filter_thresh=128\n",
                 id="both at zero get both defaults"),
    pytest.param(0, 128, "options kvm_amd pause_filter_count=3000\n",
                 id="a zero count gets the kernel's default count"),
])
def test_an_amd_pause_filter_turned_off_is_staged_in_the_same_modprobe_file(
    tmp_path: Path, count: int, thresh: int, options: str,
) -> None:
    tree = _amd(tmp_path, pause_filter_count=count, pause_filter_thresh=thresh)

    found = _plan(tree, node_spec(cpu={"ple": "Required"}, allow_reboot=True))

    [step] = found.steps
    assert (step.kind, step.planned.id, step.planned.path, step.planned.desired) == (
        "file", "ple/kvm_amd", PLE_CONF, options)
    assert step.planned.disruption == "NeedsReboot"


def test_a_staged_amd_fix_waits_for_the_reboot(tmp_path: Path) -> None:
    tree = _amd(tmp_path, pause_filter_count=3000, pause_filter_thresh=0)
    files = _files(ple_staged="options kvm_amd pause_filter_thresh=128\n")

    found = _plan(tree, node_spec(cpu={"ple": "Required"}, allow_reboot=True), files=files)

    assert found.steps == () and found.reboot_pending


def test_boot_settings_report_stages_no_ple_fix_and_says_what_to_write(tmp_path: Path) -> None:
    spec = node_spec(cpu={"ple": "Required"}, boot={"settings": "Report"}, allow_reboot=True)

    found = _plan(_intel(tmp_path, ple_gap=0), spec)

    assert found.steps == ()
    message = _finding(found, "PLEDisabled").message
    assert "boot.settings is Report" in message
    assert f"`options kvm_intel ple_gap=128` in {PLE_CONF}" in message


def test_a_kubelet_with_another_topology_policy_is_a_finding_not_a_step(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).kubelet_config("topologyManagerPolicy: best-effort\n")

    found = _plan(tree, node_spec(numa={"topologyManagerPolicy": "single-numa-node"}))

    assert found.steps == ()
    mismatch = _finding(found, "KubeletTopologyPolicyMismatch")
    assert (mismatch.feature, mismatch.severity) == ("Kubelet", "Error")
    assert "'best-effort'" in mismatch.message and "/var/lib/kubelet/config.yaml" in (
        mismatch.message)


#: A kubelet that gives VMs everything a profile can ask: whole dedicated cores, NUMA-aligned
#: memory and hugepages, its reservations split over both nodes of intel_two_socket.
GIVING_KUBELET = """\
kind: KubeletConfiguration
cpuManagerPolicy: static
cpuManagerPolicyOptions: {full-pcpus-only: "true"}
topologyManagerPolicy: single-numa-node
memoryManagerPolicy: Static
reservedSystemCPUs: 0,32
systemReserved: {memory: 1Gi}
kubeReserved: {memory: 1Gi}
evictionHard: {memory.available: 2Gi}
reservedMemory:
  - {numaNode: 0, limits: {memory: 2Gi}}
  - {numaNode: 1, limits: {memory: 2Gi}}
"""
HUGEPAGE_VMS = {"dedicatedCpus": True, "hugepageSize": "1Gi"}


def _kubelet_findings(found: Plan) -> dict[str, Finding]:
    return {f.reason: f for f in found.findings if f.feature == "Kubelet"}


def test_a_kubelet_that_gives_what_the_profile_asks_raises_no_kubelet_finding(
    tmp_path: Path,
) -> None:
    tree = intel_two_socket(tmp_path).kubelet_config(GIVING_KUBELET)

    found = _plan(tree, node_spec(vmi=HUGEPAGE_VMS,
                                  numa={"topologyManagerPolicy": "single-numa-node"}))

    assert _kubelet_findings(found) == {}


def test_dedicated_cpus_without_the_static_cpu_manager_are_an_error_naming_the_drop_in(
    tmp_path: Path,
) -> None:
    tree = intel_two_socket(tmp_path).kubelet_config(GIVING_KUBELET, "/etc/k/kubelet.yaml")
    tree.kubelet_config("cpuManagerPolicy: none\n", "/etc/k/conf.d/50-cpu.conf")
    tree.process(300, "kubelet", "/usr/bin/kubelet", "--config=/etc/k/kubelet.yaml",
                 "--config-dir=/etc/k/conf.d")

    found = _kubelet_findings(_plan(tree, node_spec(vmi={"dedicatedCpus": True})))

    finding = found["KubeletCpuManagerNotStatic"]
    assert finding.severity == "Error"
    assert "set cpuManagerPolicy: static in /etc/k/conf.d/50-cpu.conf" in finding.message
    assert "/etc/k/kubelet.yaml, /etc/k/conf.d/50-cpu.conf" in finding.message  # what was read


def test_hugepage_vms_without_the_static_memory_manager_are_an_error(tmp_path: Path) -> None:
    tree = intel_two_socket(tmp_path).kubelet_config(
        GIVING_KUBELET.replace("memoryManagerPolicy: Static", "memoryManagerPolicy: None"))

    found = _kubelet_findings(_plan(tree, node_spec(vmi=HUGEPAGE_VMS)))

    finding = found["KubeletMemoryManagerNotStatic"]
    assert finding.severity == "Error"
    assert "set memoryManagerPolicy: Static in /var/lib/kubelet/config.yaml" in finding.message


@pytest.mark.parametrize(("reserved", "says"), [
    pytest.param("  - {numaNode: 0, limits: {memory: 4Gi}}\n  - {numaNode: 7, limits: "
                 "{memory: 0}}\n", "NUMA node(s) 7", id="a node the host lacks"),
    pytest.param("  - {numaNode: 0, limits: {memory: 1Gi}}\n", "(1.0 GiB) to equal",
                 id="not adding up"),
])
def test_reserved_memory_the_static_memory_manager_refuses_is_an_error(
    tmp_path: Path, reserved: str, says: str
) -> None:
    config = GIVING_KUBELET[:GIVING_KUBELET.index("  - {numaNode: 0")] + reserved
    tree = intel_two_socket(tmp_path).kubelet_config(config)

    found = _kubelet_findings(_plan(tree, node_spec(vmi=HUGEPAGE_VMS)))

    finding = found["KubeletReservedMemoryMismatch"]
    assert finding.severity == "Error" and says in finding.message


def test_shared_cores_on_an_smt_host_are_warned_with_the_flag_that_sets_them(
    tmp_path: Path,
) -> None:
    tree = intel_two_socket(tmp_path).process(
        5, "kubelet", "kubelet", "--cpu-manager-policy=static", "--reserved-cpus=0")

    found = _kubelet_findings(_plan(tree, node_spec(vmi={"dedicatedCpus": True})))

    assert found["KubeletSharesCores"].severity == "Warning"
    assert "--cpu-manager-policy-options=full-pcpus-only=true" in (
        found["KubeletSharesCores"].message)


def test_reserved_cpus_that_are_not_online_are_an_error(tmp_path: Path) -> None:
    tree = intel_two_socket(tmp_path).kubelet_config(
        GIVING_KUBELET.replace("reservedSystemCPUs: 0,32", "reservedSystemCPUs: 0,96-97"))

    found = _kubelet_findings(_plan(tree, node_spec(vmi={"dedicatedCpus": True})))

    assert "CPUs 96-97 that are not online" in found["KubeletReservedCpusOffline"].message


# -- block LUNs -----------------------------------------------------------------------------


def _luns(tmp_path: Path) -> HostTree:
    tree = HostTree(tmp_path).disk("sda").mount("/dev/sda", "/")
    tree.disk("sdb", wwid="0x5000c500aaaa0001", model="ST4000NM")
    tree.disk("sdc", wwid="0x5000c500aaaa0002", model="PERC H755", size_bytes=2 * 2**40)
    return tree.disk("sdd", wwid="0x5000c500aaaa0003", content=b"XFSB" + bytes(4092))


@pytest.mark.parametrize(("selector", "names"), [
    pytest.param({"wwns": ["0X5000C500AAAA0001", "0x5000c500aaaa0003"]}, ["sdb"],
                 id="by wwn, eligible devices only"),
    pytest.param({"wwns": ["naa.5000c500aaaa0001", "35000c500aaaa0002"]}, ["sdb", "sdc"],
                 id="by wwn in any of its spellings"),
    pytest.param({"byIdPatterns": ["wwn-0x5000c500aaaa*"]}, ["sdb", "sdc"], id="by-id pattern"),
    pytest.param({"models": ["PERC H755"]}, ["sdc"], id="by model, never the system disk"),
    pytest.param({"byIdPatterns": ["wwn-*"], "minSize": "1Ti"}, ["sdc"], id="minimum size"),
    pytest.param({"byIdPatterns": ["wwn-*"], "maxSize": "100Gi"}, ["sdb"], id="maximum size"),
])
def test_matching_luns_selects_eligible_devices_meeting_every_criterion(
    tmp_path: Path, selector: dict[str, t.Any], names: list[str]
) -> None:
    settings = BlockLunSettings.model_validate({"selector": selector, "storageClassName": "raw"})

    found = matching_luns(settings, probe_host(_luns(tmp_path).fs()))

    assert [device.name for device in found] == names
    assert all(device.size_bytes in (DEFAULT_DISK_BYTES, 2 * 2**40) for device in found)


def test_an_io_scheduler_is_set_only_where_the_kernel_offers_it(tmp_path: Path) -> None:
    spec = node_spec(storage={"blockLuns": {
        "selector": {"byIdPatterns": ["wwn-*"]}, "storageClassName": "raw", "ioScheduler": "none",
    }})
    files = _files(schedulers={
        "sdb": Scheduler("mq-deadline", ("mq-deadline", "none")),
        "sdc": Scheduler("bfq", ("bfq",)),
    })

    found = _plan(_luns(tmp_path), spec, files=files)

    assert [device.name for device in found.published["luns"]] == ["sdb", "sdc"]
    step = _steps(found)["block/sdb/scheduler"]
    assert (step.path, step.current, step.desired) == (
        "/dev/disk/by-id/wwn-0x5000c500aaaa0001/queue/scheduler", "mq-deadline", "none")
    assert "sdc offers the I/O schedulers bfq, not none" in (
        _finding(found, "SchedulerUnavailable").message)


def test_a_multipath_map_is_published_by_its_id_not_its_friendly_name(tmp_path: Path) -> None:
    from kvtune_agent.features.block import exposed_lun

    # mpatha comes from multipath's bindings file, and can name another LUN on another day.
    tree = HostTree(tmp_path).disk("dm-2", dm=("mpatha", "mpath-3600a0980383030534"))
    [device] = probe_host(tree.fs()).block.devices
    assert device.by_id == ["dm-name-mpatha", "dm-uuid-mpath-3600a0980383030534"]

    assert exposed_lun(device).path == "/dev/disk/by-id/dm-uuid-mpath-3600a0980383030534"


def test_a_size_that_is_no_quantity_is_a_finding_naming_the_field(tmp_path: Path) -> None:
    # The schema and the model refuse such a size now; a spec stored before they did still
    # reaches the agent: built here without validation (model_copy), as it was stored.
    valid = node_spec(storage={"blockLuns": {
        "selector": {"models": ["x"], "minSize": "1Gi"}, "storageClassName": "raw"}})
    storage = valid.host.storage
    assert storage.block_luns is not None
    luns = storage.block_luns.model_copy(update={
        "selector": storage.block_luns.selector.model_copy(update={"min_size": "1.2.3"})})
    spec = valid.model_copy(update={"host": valid.host.model_copy(update={
        "storage": storage.model_copy(update={"block_luns": luns})})})

    found = _plan(_luns(tmp_path), spec)

    assert _finding(found, "InvalidLunSelector").message.startswith(
        "spec.host.storage.blockLuns.selector.minSize is '1.2.3', not a quantity")


def test_selected_luns_are_published_with_their_stable_by_id_path(tmp_path: Path) -> None:
    spec = node_spec(storage={"blockLuns": {
        "selector": {"byIdPatterns": ["wwn-*"]}, "storageClassName": "raw"}})
    [published, _] = _plan(_luns(tmp_path), spec).published["luns"]
    assert published.path == "/dev/disk/by-id/wwn-0x5000c500aaaa0001"
    assert (published.name, published.wwid, published.model) == (
        "sdb", "0x5000c500aaaa0001", "ST4000NM")
    assert published.size_bytes == DEFAULT_DISK_BYTES
