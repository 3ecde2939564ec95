"""The kubelet checks: what the profile asks of the kubelet against its configuration."""

from __future__ import annotations

from pathlib import Path

import pytest
from kvtune_agent.features.base import Finding, Plan
from support.hosttree import (
    HostTree,
    intel_two_socket,
)

from ..specs import node_spec
from .planning import finding_of, plan_of


def test_a_kubelet_with_another_topology_policy_is_a_finding_not_a_step(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).kubelet_config("topologyManagerPolicy: best-effort\n")

    found = plan_of(tree, node_spec(numa={"topologyManagerPolicy": "single-numa-node"}))

    assert found.steps == ()
    mismatch = finding_of(found, "KubeletTopologyPolicyMismatch")
    assert (mismatch.feature, mismatch.severity) == ("Kubelet", "Error")
    assert "'best-effort'" in mismatch.message and "/var/lib/kubelet/config.yaml" in (
        mismatch.message)


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

    found = plan_of(tree, node_spec(vmi=HUGEPAGE_VMS,
                                  numa={"topologyManagerPolicy": "single-numa-node"}))

    assert _kubelet_findings(found) == {}


def test_dedicated_cpus_without_the_static_cpu_manager_are_an_error_naming_the_drop_in(
    tmp_path: Path,
) -> None:
    tree = intel_two_socket(tmp_path).kubelet_config(GIVING_KUBELET, "/etc/k/kubelet.yaml")
    tree.kubelet_config("cpuManagerPolicy: none\n", "/etc/k/conf.d/50-cpu.conf")
    tree.process(300, "kubelet", "/usr/bin/kubelet", "--config=/etc/k/kubelet.yaml",
                 "--config-dir=/etc/k/conf.d")

    found = _kubelet_findings(plan_of(tree, node_spec(vmi={"dedicatedCpus": True})))

    finding = found["KubeletCpuManagerNotStatic"]
    assert finding.severity == "Error"
    assert "set cpuManagerPolicy: static in /etc/k/conf.d/50-cpu.conf" in finding.message
    assert "/etc/k/kubelet.yaml, /etc/k/conf.d/50-cpu.conf" in finding.message  # what was read


def test_hugepage_vms_without_the_static_memory_manager_are_an_error(tmp_path: Path) -> None:
    tree = intel_two_socket(tmp_path).kubelet_config(
        GIVING_KUBELET.replace("memoryManagerPolicy: Static", "memoryManagerPolicy: None"))

    found = _kubelet_findings(plan_of(tree, node_spec(vmi=HUGEPAGE_VMS)))

    finding = found["KubeletMemoryManagerNotStatic"]
    assert finding.severity == "Error"
    assert "set memoryManagerPolicy: Static in /var/lib/kubelet/config.yaml" in finding.message


@pytest.mark.parametrize(("reserved", "says"), [
    pytest.param("  - {numaNode: 0, limits: {memory: 4Gi}}\n  - {numaNode: 7, limits: "
                 "{memory: 0}}\n", "NUMA node(s) 7", id="a node the host lacks"),
    pytest.param("  - {numaNode: 0, limits: {memory: 1Gi}}\n",
                 "(1.0 GiB, 1073741824 bytes) to equal", id="not adding up"),
    pytest.param("  - {numaNode: 0, limits: {memory: 2Gi}}\n  - {numaNode: 1, limits: "
                 "{memory: 2147482624}}\n", "4294966272 bytes) to equal", id="1 KiB short"),
])
def test_reserved_memory_the_static_memory_manager_refuses_is_an_error(
    tmp_path: Path, reserved: str, says: str
) -> None:
    config = GIVING_KUBELET[:GIVING_KUBELET.index("  - {numaNode: 0")] + reserved
    tree = intel_two_socket(tmp_path).kubelet_config(config)

    found = _kubelet_findings(plan_of(tree, node_spec(vmi=HUGEPAGE_VMS)))

    finding = found["KubeletReservedMemoryMismatch"]
    assert finding.severity == "Error" and says in finding.message


def test_reserved_memory_is_judged_by_the_kubelet_s_own_eviction_rule(tmp_path: Path) -> None:
    # No --config file (as k3s runs it): the kubelet adds no default eviction threshold, so
    # reservedMemory equal to systemReserved is what it wants (tests/realhost/test_kubelet.py
    # shows the real kubelet taking it); counting a default 100Mi called it a mismatch.
    tree = intel_two_socket(tmp_path).process(
        5, "kubelet", "kubelet", "--cpu-manager-policy=static", "--reserved-cpus=0,32",
        "--cpu-manager-policy-options=full-pcpus-only=true", "--memory-manager-policy=Static",
        "--system-reserved=memory=1Gi", "--reserved-memory=0:memory=512Mi;1:memory=512Mi")

    found = _kubelet_findings(plan_of(tree, node_spec(vmi=HUGEPAGE_VMS)))

    assert "KubeletReservedMemoryMismatch" not in found, found


def test_shared_cores_on_an_smt_host_are_warned_with_the_flag_that_sets_them(
    tmp_path: Path,
) -> None:
    tree = intel_two_socket(tmp_path).process(
        5, "kubelet", "kubelet", "--cpu-manager-policy=static", "--reserved-cpus=0")

    found = _kubelet_findings(plan_of(tree, node_spec(vmi={"dedicatedCpus": True})))

    assert found["KubeletSharesCores"].severity == "Warning"
    assert "--cpu-manager-policy-options=full-pcpus-only=true" in (
        found["KubeletSharesCores"].message)


def test_reserved_cpus_that_are_not_online_are_an_error(tmp_path: Path) -> None:
    tree = intel_two_socket(tmp_path).kubelet_config(
        GIVING_KUBELET.replace("reservedSystemCPUs: 0,32", "reservedSystemCPUs: 0,96-97"))

    found = _kubelet_findings(plan_of(tree, node_spec(vmi={"dedicatedCpus": True})))

    assert "CPUs 96-97 that are not online" in found["KubeletReservedCpusOffline"].message
