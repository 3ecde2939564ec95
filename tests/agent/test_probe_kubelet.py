"""The kubelet probe: resource-manager settings from the config file; no file means unknown."""

from __future__ import annotations

from pathlib import Path

import pytest
from hosttree import HostTree
from kvtune_agent.probe import kubelet

TUNED = """\
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cpuManagerPolicy: static
topologyManagerPolicy: single-numa-node
topologyManagerScope: pod
memoryManagerPolicy: Static
reservedSystemCPUs: 0-1,64-65
systemReserved: {cpu: 500m, memory: 2Gi}
kubeReserved: {memory: 1Gi}
evictionHard: {memory.available: 500Mi, nodefs.available: 10%}
reservedMemory:
  - numaNode: 0
    limits: {memory: 3Gi}
"""


def test_an_absent_config_is_unknown_not_an_error(tmp_path: Path) -> None:
    found = kubelet.probe(HostTree(tmp_path).fs())

    assert found.config_path is None
    assert found.cpu_manager_policy is None
    assert [p.severity for p in kubelet.check(found)] == ["Info"]


def test_a_tuned_config_is_read_in_full_and_raises_no_findings(tmp_path: Path) -> None:
    found = kubelet.probe(HostTree(tmp_path).kubelet_config(TUNED).fs())

    assert found.config_path == "/var/lib/kubelet/config.yaml"
    assert (found.cpu_manager_policy, found.topology_manager_policy) == (
        "static", "single-numa-node")
    assert (found.topology_manager_scope, found.memory_manager_policy) == ("pod", "Static")
    assert found.reserved_system_cpus == "0-1,64-65"
    assert (found.system_reserved_memory, found.kube_reserved_memory) == ("2Gi", "1Gi")
    assert found.eviction_hard_memory == "500Mi"
    assert [(r.numa_node, r.limits) for r in found.reserved_memory] == [(0, {"memory": "3Gi"})]
    assert kubelet.check(found) == []


def test_settings_left_out_take_the_kubelet_defaults_and_are_flagged(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).kubelet_config("kind: KubeletConfiguration\n")

    found = kubelet.probe(tree.fs())

    assert (found.cpu_manager_policy, found.topology_manager_policy) == ("none", "none")
    assert [p.severity for p in kubelet.check(found)] == ["Warning", "Info"]
    assert "cpuManagerPolicy: static" in kubelet.check(found)[0].message


@pytest.mark.parametrize(
    ("text", "error"),
    [
        pytest.param("cpuManagerPolicy: [static\n", "invalid YAML", id="broken YAML"),
        pytest.param("- a list\n", "not a KubeletConfiguration mapping", id="not a mapping"),
    ],
)
def test_an_unusable_config_is_an_error_naming_the_file(
    tmp_path: Path, text: str, error: str
) -> None:
    found = kubelet.probe(HostTree(tmp_path).kubelet_config(text).fs())

    [problem] = kubelet.check(found)
    assert (problem.severity, problem.path) == ("Error", "/var/lib/kubelet/config.yaml")
    assert error in problem.message


def test_a_second_config_file_is_reported_and_not_merged(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).kubelet_config(TUNED)
    tree.kubelet_config("cpuManagerPolicy: none\n", "/etc/kubernetes/kubelet-config.yaml")

    found = kubelet.probe(tree.fs())

    assert found.cpu_manager_policy == "static"
    assert found.other_config_paths == ["/etc/kubernetes/kubelet-config.yaml"]
    [info] = kubelet.check(found)
    assert info.path == "/etc/kubernetes/kubelet-config.yaml"


def test_odd_values_are_noted_with_the_file(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).kubelet_config(
        "cpuManagerPolicy: 3\nreservedMemory:\n  - {numaNode: 0}\n")
    fs = tree.fs()

    found = kubelet.probe(fs)

    assert found.cpu_manager_policy is None
    assert found.reserved_memory == []
    assert [i.path for i in fs.take_issues()] == ["/var/lib/kubelet/config.yaml"] * 2
