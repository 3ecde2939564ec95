"""Under single-numa-node, a VMI no NUMA node of any ready node can hold (its dedicated CPUs,
its hugepages) is warned about at admission: the kubelet would fail its pod on every node."""

from __future__ import annotations

import dataclasses

import pytest
from controller.builders import state
from kvtune_api.v1alpha1.host import (
    HostReport,
    HugepagePool,
    KubeletReport,
    MemoryReport,
    NumaNode,
    NumaReport,
)
from kvtune_operator.common.node_facts import NodeFacts, NumaCell
from kvtune_operator.common.nodestate import StateView
from kvtune_operator.common.profiles import Profile
from kvtune_operator.webhook.admission import ClusterView, check
from kvtune_operator.webhook.vmi import KubeVirtConfig
from kvtune_operator.webhook.vmi.numa_fit import fit_warning

from webhook import Obj, make_profile, make_vmi

Gi = 2**30
#: Two NUMA nodes of 6 CPUs the kubelet may hand out and 4 GiB of 1Gi pages each.
TWO_CELLS = NodeFacts(2, True, (NumaCell(0, 6, {Gi: 4 * Gi}), NumaCell(1, 6, {Gi: 4 * Gi})))
KUBEVIRT = KubeVirtConfig(installed=True)


def _profile(policy: str = "single-numa-node") -> Profile:
    return make_profile("fast", vmi={"isolateEmulatorThread": False},
                        numa={"topologyManagerPolicy": policy})


def _vmi(cores: int, guest: str = "2Gi", pages: str | None = None) -> Obj:
    memory: Obj = {"guest": guest, **({"hugepages": {"pageSize": pages}} if pages else {})}
    return make_vmi({"cpu": {"cores": cores, "dedicatedCpuPlacement": True},
                     "memory": memory})


def test_a_node_state_keeps_each_numa_node_s_cpus_for_pods_and_its_hugepages() -> None:
    host = HostReport(
        numa=NumaReport(nodes=[NumaNode(id=0, cpus="0-7"), NumaNode(id=1, cpus="8-15")]),
        kubelet=KubeletReport(reserved_system_cpus="0-1,8"),
        memory=MemoryReport(hugepages_per_node=[
            HugepagePool(size="1Gi", size_kib=2**20, node=0, total=4),
            HugepagePool(size="2Mi", size_kib=2048, node=1, total=512)]))
    body = {"apiVersion": "kvtune.io/v1alpha1", "kind": "HypervisorNodeState",
            "metadata": {"name": "n", "generation": 1},
            "spec": dict(state("n", owner="fast").spec),
            "status": {"host": host.model_dump(by_alias=True, mode="json", exclude_none=True)}}

    assert StateView.from_body(body).facts.cells == (
        NumaCell(0, 6, {Gi: 4 * Gi}), NumaCell(1, 7, {2**21: Gi}))


@pytest.mark.parametrize(("vmi", "warned"), [
    pytest.param(_vmi(6), None, id="6 CPUs fit a NUMA node"),
    pytest.param(_vmi(7), "holds 7 dedicated CPUs (the largest offers 6 CPUs)", id="7 do not"),
    pytest.param(_vmi(2, "4Gi", "1Gi"), None, id="4 GiB of pages fit"),
    pytest.param(_vmi(2, "6Gi", "1Gi"), "6.0 GiB of 1Gi hugepages (the largest offers 6 CPUs "
                 "and 4.0 GiB of 1Gi hugepages)", id="6 GiB of pages do not"),
])
def test_a_vmi_no_numa_node_holds_is_warned_about_naming_the_largest(
    vmi: Obj, warned: str | None
) -> None:
    found = fit_warning(_profile(), vmi, KUBEVIRT, {"n": TWO_CELLS})

    assert (found is None) == (warned is None)
    if warned is not None:
        assert found is not None and warned in found and "TopologyAffinityError" in found


@pytest.mark.parametrize(("profile", "ready"), [
    pytest.param(_profile("restricted"), {"n": TWO_CELLS}, id="another policy"),
    pytest.param(_profile(), {"n": NodeFacts()}, id="NUMA nodes unknown"),
    pytest.param(_profile(), {}, id="no ready node"),
])
def test_nothing_is_said_where_the_policy_does_not_ask_or_nothing_is_known(
    profile: Profile, ready: dict[str, NodeFacts]
) -> None:
    assert fit_warning(profile, _vmi(64), KUBEVIRT, ready) is None


def test_the_validating_webhook_warns_from_the_ready_node_states() -> None:
    # Without SMT, so that 7 CPUs are no SMTAlignmentError (test_smt_alignment.py).
    ready = dataclasses.replace(state("n", owner="fast", ready=True),
                                facts=dataclasses.replace(TWO_CELLS, threads_per_core=1))
    busy = dataclasses.replace(state("m", owner="fast", ready=False),
                               facts=NodeFacts(1, True, (NumaCell(0, 64),)))
    cluster = ClusterView(profiles={"fast": _profile()}, node_labels={}, allocatable={},
                          node_states={"n": ready, "m": busy}, kubevirt=KUBEVIRT)
    warnings: list[str] = []

    check(cluster, _vmi(7), {}, warnings)

    assert any("no NUMA node of its 1 ready node(s) holds 7" in w for w in warnings), warnings
