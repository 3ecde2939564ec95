"""Each isolation rule, judged on domains defined on libvirt's test driver and read back through
the audit's own read-only connection: one VM (or pair) that complies, one that breaks each rule."""

from __future__ import annotations

from pathlib import Path

import pytest
from kvtune_agent.audit import AuditPolicy, audit_node
from kvtune_agent.host import cpulist
from kvtune_agent.host.hostfs import HostFS, ProcessTable
from kvtune_agent.wiring import probe_host
from kvtune_api.v1alpha1.audit import NodeVmAudit
from kvtune_api.v1alpha1.common import LabelSelector
from kvtune_api.v1alpha1.host import HostReport
from kvtune_api.v1alpha1.profile import HostSettings, VmiSettings
from support.hosttree import HostTree

from .builders import (
    GOOD,
    GOOD_NODE1,
    NODE_CPUS,
    STRICT,
    GiB_KIB,
    domain_xml,
    libvirt_host,
    two_node_host,
)


def run(
    tmp_path: Path, *xmls: str, policy: AuditPolicy = STRICT, host: HostReport | None = None
) -> NodeVmAudit:
    """The audit of `xmls` running on the test driver, reached as the host-level URI, on `host`
    (by default the two-node host the driver's 8 CPUs make)."""
    host = host or two_node_host(pools=[(2048, 4096)])
    with libvirt_host(*xmls):
        return audit_node(HostFS(tmp_path), policy, host, ProcessTable(), host_uri="test:///default")


def violations(audit: NodeVmAudit) -> dict[str, list[str]]:
    return {
        vm.name: sorted(f.rule for f in vm.findings if f.severity == "Violation")
        for vm in audit.items
    }


def test_vms_that_keep_every_promise_are_compliant_without_findings(tmp_path: Path) -> None:
    audit = run(tmp_path, domain_xml("prod_a", **GOOD), domain_xml("prod_b", **GOOD_NODE1))

    assert (audit.vms, audit.compliant, audit.violations, audit.unreachable) == (2, 2, 0, 0)
    assert [(vm.namespace, vm.name, vm.state, vm.findings) for vm in audit.items] == [
        ("prod", "a", "Compliant", []),
        ("prod", "b", "Compliant", []),
    ]
    first = audit.items[0]
    assert (first.cpus, first.emulator_cpus, first.cpu_nodes, first.memory_nodes) == (
        "0-1", "2", "0", "0",
    )  # fmt: skip
    assert (first.hugepage_size, first.interfaces, first.disks) == (
        "2Mi", ["hostdev 0000:3b:02.0"], ["block /dev/sdb"],
    )  # fmt: skip
    assert audit.findings == []


@pytest.mark.parametrize(
    ("xmls", "expected"),
    [
        pytest.param(
            [domain_xml("p_a", **GOOD), domain_xml("p_b", **{**GOOD, "pins": ["1", "3"]})],
            {"a": ["DedicatedCpus"], "b": ["DedicatedCpus"]},
            id="overlapping vCPU pins break both VMs",
        ),
        pytest.param(
            [domain_xml("p_a", **{**GOOD, "emulator": "4"}), domain_xml("p_b", **GOOD_NODE1)],
            {"a": ["DedicatedCpus"], "b": ["DedicatedCpus"]},
            id="an emulator on another VM's pinned vCPUs breaks both",
        ),
        pytest.param(
            [domain_xml("p_a", **{**GOOD, "emulator": "0-1"})],
            {"a": ["EmulatorIsolation"]},
            id="an emulator on its own vCPU cores",
        ),
        pytest.param(
            [domain_xml("p_a", **{**GOOD, "emulator": None})],
            {"a": ["EmulatorIsolation"]},
            id="an unpinned emulator",
        ),
        pytest.param(
            [domain_xml("p_a", **{**GOOD, "numatune": ("strict", "1")})],
            {"a": ["NumaLocality"]},
            id="memory on the other NUMA node than the vCPUs",
        ),
        pytest.param(
            [domain_xml("p_a", **{**GOOD, "pins": ["3", "4"]})],
            {"a": ["NumaLocality"]},
            id="vCPUs across NUMA nodes though one node could hold the VM",
        ),
        pytest.param(
            [domain_xml("p_a", **{**GOOD, "hugepage_kib": None})],
            {"a": ["Hugepages"]},
            id="no hugepage backing",
        ),
        pytest.param(
            [
                domain_xml("p_a", **{**GOOD, "nics": [("bridge", "br0")]}),
                domain_xml("p_b", **{**GOOD_NODE1, "nics": [("bridge", "br0")]}),
            ],
            {"a": ["Network"], "b": ["Network"]},
            id="a software bridge shared by two VMs",
        ),
        pytest.param(
            [
                domain_xml("p_a", **{**GOOD, "nics": [("direct", "ens1f0")]}),
                domain_xml("p_b", **{**GOOD_NODE1, "nics": [("direct", "ens1f0")]}),
            ],
            {"a": ["Network"], "b": ["Network"]},
            id="macvtap on one host NIC shared by two VMs",
        ),
        pytest.param(
            [domain_xml("p_a", **{**GOOD, "disks": [("file", "/var/lib/images/a.qcow2")]})],
            {"a": ["Storage"]},
            id="a file-backed data disk",
        ),
        pytest.param(
            [domain_xml("p_a", **{**GOOD, "pins": None, "emulator": None})],
            {"a": ["DedicatedCpus"]},
            id="floating vCPUs where dedicated CPUs are promised",
        ),
    ],
)
def test_each_broken_promise_is_a_violation_of_its_rule(
    tmp_path: Path, xmls: list[str], expected: dict[str, list[str]]
) -> None:
    audit = run(tmp_path, *xmls)

    assert violations(audit) == expected
    assert audit.violations == len(expected)
    assert all(vm.state == "Violation" for vm in audit.items)


def test_a_bridge_private_to_one_vm_is_no_violation(tmp_path: Path) -> None:
    audit = run(
        tmp_path,
        domain_xml("p_a", **{**GOOD, "nics": [("bridge", "br-a")]}),
        domain_xml("p_b", **{**GOOD_NODE1, "nics": [("bridge", "br-b")]}),
    )

    assert audit.compliant == 2


def test_larger_hugepages_than_asked_keep_the_promise_and_smaller_ones_break_it(
    tmp_path: Path,
) -> None:
    gig = AuditPolicy(hugepage_kib=1 << 20)
    small = AuditPolicy(hugepage_kib=2048)
    one_gig = domain_xml("p_a", **{**GOOD, "hugepage_kib": 1 << 20})

    assert violations(run(tmp_path, domain_xml("p_a", **GOOD), policy=gig)) == {"a": ["Hugepages"]}
    assert violations(run(tmp_path, one_gig, policy=small)) == {"a": []}


def test_without_a_profile_only_what_holds_on_any_vm_host_is_checked(tmp_path: Path) -> None:
    floating_on_files = domain_xml(
        "dev_scratch", nics=[("bridge", "br0")], disks=[("file", "/var/lib/x.img")]
    )

    audit = run(tmp_path, floating_on_files, policy=AuditPolicy())

    assert audit.compliant == 1
    assert [(f.severity, f.rule) for f in audit.items[0].findings] == [("Info", "NumaLocality")]


def test_kubevirts_generated_images_are_not_data_disks(tmp_path: Path) -> None:
    cloud_init = "/var/run/kubevirt-ephemeral-disks/cloud-init-data/p/a/noCloud.iso"
    audit = run(tmp_path, domain_xml("p_a", **{**GOOD, "disks": [("file", cloud_init)]}))

    assert audit.compliant == 1


@pytest.mark.parametrize(
    ("cells", "expected"),
    [
        pytest.param(0, [("Warning", "NumaLocality")], id="warned when the guest sees one node"),
        pytest.param(2, [], id="fine with guest NUMA cells"),
    ],
)
def test_a_vm_too_big_for_one_node_may_span_nodes(
    tmp_path: Path, cells: int, expected: list[tuple[str, str]]
) -> None:
    big = domain_xml(
        "p_big", **{**GOOD, "vcpus": 6, "pins": ["0", "1", "2", "4", "5", "6"],
                    "emulator": "3", "numatune": ("strict", "0-1"), "cells": cells},
    )  # fmt: skip

    audit = run(tmp_path, big)

    assert audit.items[0].state == "Compliant"
    assert [(f.severity, f.rule) for f in audit.items[0].findings] == expected


def test_vcpus_across_nodes_known_only_by_their_cpumap_are_a_numa_violation(
    tmp_path: Path,
) -> None:
    tree = HostTree(tmp_path / "host").cpus(2, 4).meminfo(16 * GiB_KIB)
    for node, cpus in NODE_CPUS.items():
        tree.numa_node(node, cpulist.parse(cpus), 8 * GiB_KIB, cpumap_only=True)
    host = probe_host(tree.hugepages(2048, 4096, 4096).fs())

    audit = run(tmp_path, domain_xml("p_a", **{**GOOD, "pins": ["1", "5"]}), host=host)

    (vm,) = audit.items
    assert vm.cpu_nodes == "0-1"
    assert violations(audit) == {"a": ["NumaLocality"]}


def test_memory_bound_nowhere_is_a_warning_not_a_violation(tmp_path: Path) -> None:
    audit = run(tmp_path, domain_xml("p_a", **{**GOOD, "numatune": None}))

    (vm,) = audit.items
    assert vm.state == "Compliant"
    assert [(f.severity, f.rule) for f in vm.findings] == [("Warning", "NumaLocality")]
    assert "memory is not bound to node 0" in vm.findings[0].message


def test_a_profiles_settings_become_the_promises_the_audit_checks() -> None:
    host = HostSettings.model_validate({
        "memory": {"vmOverheadFloor": "1536Mi", "allowOvercommit": True},
        "storage": {"blockLuns": {"selector": {"models": ["X"]}, "storageClassName": "luns"}},
    })  # fmt: skip
    vmi = VmiSettings(
        namespace_selector=LabelSelector(), hugepage_size="1Gi", pod_network="ManagementOnly"
    )

    assert AuditPolicy.from_settings(host, vmi) == AuditPolicy(
        dedicated_cpus=True, isolate_emulator_thread=True, hugepage_kib=1 << 20,
        block_luns=True, allow_memory_overcommit=True, overhead_floor_bytes=1536 << 20,
        pod_network_shared=False,
    )  # fmt: skip
    assert AuditPolicy.from_settings(HostSettings(), None) == AuditPolicy(
        overhead_floor_bytes=1 << 30
    )


def test_vcpus_on_cpus_that_every_node_lists_are_not_judged_by_that_layout(
    tmp_path: Path,
) -> None:
    tree = HostTree(tmp_path / "host").cpus(2, 4).meminfo(16 * GiB_KIB)
    for node in NODE_CPUS:  # firmware that lists every CPU in every node
        tree.numa_node(node, range(8), 8 * GiB_KIB)
    host = probe_host(tree.hugepages(2048, 4096, 4096).fs())

    audit = run(tmp_path, domain_xml("p_a", **{**GOOD, "pins": ["1", "5"]}), host=host)

    (vm,) = audit.items
    assert host.numa.overlapping_cpus == "0-7"
    assert vm.cpu_nodes == ""
    assert violations(audit) == {"a": []}
    assert [(f.severity, f.rule) for f in vm.findings] == [("Info", "NumaLocality")]


@pytest.mark.parametrize(
    ("pins", "unplaced"),
    [
        pytest.param(["1", "5"], "5", id="one CPU only node 0 lists, one both list"),
        pytest.param(["2", "3"], "2-3", id="CPUs both nodes list"),
    ],
)
def test_vcpus_on_cpus_that_nodes_overlapping_partly_both_list_are_not_judged_local(
    tmp_path: Path, pins: list[str], unplaced: str
) -> None:
    # Node 0 lists 0-5, node 1 lists 2-7: CPUs 2-5 may be on either.
    tree = HostTree(tmp_path / "host").cpus(2, 4).meminfo(16 * GiB_KIB)
    tree.numa_node(0, range(6), 8 * GiB_KIB).numa_node(1, range(2, 8), 8 * GiB_KIB)
    host = probe_host(tree.hugepages(2048, 4096, 4096).fs())

    audit = run(tmp_path, domain_xml("p_a", **{**GOOD, "pins": pins, "emulator": "0"}),
                host=host)

    (vm,) = audit.items
    assert host.numa.overlapping_cpus == "2-5"
    [finding] = [f for f in vm.findings if f.rule == "NumaLocality"]
    assert finding.severity == "Info"
    assert f"CPUs {unplaced} of its CPUs" in finding.message
