"""Dedicated CPUs on kubelets that hand out whole cores only (full-pcpus-only): a VMI whose pod
would fail with SMTAlignmentError is annotated for KubeVirt's AlignCPUs, or refused (or warned
about) naming the fix; KubeVirt's own pod rendering (the oracle) is the judge of the count."""

from __future__ import annotations

import dataclasses
import typing as t

import jsonpatch
import pytest
from controller.builders import state
from kvtune_api.v1alpha1.host import HostReport, KubeletReport, NumaReport
from kvtune_operator.common.node_facts import NodeFacts
from kvtune_operator.common.nodestate import StateView
from kvtune_operator.common.profiles import Profile
from kvtune_operator.webhook.admission import ClusterView, Refused, check, shape
from kvtune_operator.webhook.vmi import KubeVirtConfig, mutate_vmi
from kvtune_operator.webhook.vmi import smt_alignment as smt
from kvtune_operator.webhook.vmi.smt_alignment import EVEN_PARITY
from support.kubevirt_oracle import Oracle

from webhook import Obj, make_profile, make_vmi

SMT2 = NodeFacts(threads_per_core=2, whole_cores=True)
GATE = KubeVirtConfig(installed=True, feature_gates=frozenset({"AlignCPUs"}))
NO_GATE = KubeVirtConfig(installed=True)
#: The profile's own default: the kubelet's managers left to the administrator.
UNMANAGED: dict[str, t.Any] = {}
ENFORCED = {"cpu": {"kubelet": {"management": "Enforce"}}}


def _vmi(cores: int, *, isolate: bool = True, io: int = 0, **annotations: str) -> Obj:
    cpu = {"cores": cores, "dedicatedCpuPlacement": True, "isolateEmulatorThread": isolate}
    domain: Obj = {"cpu": cpu, "memory": {"guest": "1Gi"}}
    if io:
        domain |= {"ioThreadsPolicy": "supplementalPool",
                   "ioThreads": {"supplementalPoolThreadCount": io}}
    return make_vmi(domain, annotations=annotations or None)


def _profile(
    smt_alignment: str = "Refuse", mode: str = "Enforce", isolate: bool = True, **spec: t.Any
) -> Profile:
    return make_profile("fast", vmi={"smtAlignment": smt_alignment,
                                     "isolateEmulatorThread": isolate}, mode=mode, **spec)


def test_a_node_state_keeps_threads_per_core_and_the_kubelet_s_whole_core_option() -> None:
    body = _state_body(HostReport(
        numa=NumaReport(threads_per_core=2),
        kubelet=KubeletReport(cpu_manager_policy_options={"full-pcpus-only": "true"})))

    assert StateView.from_body(body).facts == SMT2
    assert StateView.from_body(_state_body(None)).facts == NodeFacts()


def _state_body(host: HostReport | None) -> Obj:
    view = state("n", owner="fast")
    status: Obj = view.state.status.model_dump(by_alias=True, mode="json", exclude_none=True)
    if host is not None:
        status["host"] = host.model_dump(by_alias=True, mode="json", exclude_none=True)
    return {"apiVersion": "kvtune.io/v1alpha1", "kind": "HypervisorNodeState",
            "metadata": {"name": "n", "generation": 1}, "spec": dict(view.spec),
            "status": status}


# -- the decision --------------------------------------------------------------------------------


@pytest.mark.parametrize(("vmi", "facts", "spec", "aligned"), [
    pytest.param(_vmi(3), SMT2, UNMANAGED, True, id="3 vCPUs + emulator = 4"),
    pytest.param(_vmi(4, isolate=False), SMT2, UNMANAGED, True, id="4 vCPUs"),
    pytest.param(_vmi(2), NodeFacts(2, whole_cores=False), UNMANAGED, True,
                 id="no kubelet with full-pcpus-only"),
    pytest.param(_vmi(2), NodeFacts(2, whole_cores=False), ENFORCED, False,
                 id="kvtune writes full-pcpus-only"),
    pytest.param(_vmi(2), NodeFacts(1, whole_cores=True), UNMANAGED, True, id="no SMT"),
    pytest.param(_vmi(2), NodeFacts(0, whole_cores=True), UNMANAGED, True,
                 id="threads per core unknown: not judged"),
    pytest.param(_vmi(2), SMT2, UNMANAGED, False, id="2 vCPUs + emulator = 3"),
    pytest.param(_vmi(3, isolate=False), SMT2, UNMANAGED, False, id="3 vCPUs"),
    pytest.param(_vmi(1, io=1), SMT2, UNMANAGED, False, id="1 vCPU + 1 IO thread + emulator"),
])
def test_only_a_pod_the_kubelet_would_refuse_is_acted_on(
    vmi: Obj, facts: NodeFacts, spec: Obj, aligned: bool
) -> None:
    found = smt.align(_profile(**spec), vmi, NO_GATE, facts)
    assert (not found.refused) == aligned


def test_with_align_cpus_the_vmi_is_annotated_for_an_even_count() -> None:
    found = smt.align(_profile(), _vmi(2), GATE, SMT2)

    assert found.refused == [] and found.warnings == []
    annotated = jsonpatch.apply_patch(_vmi(2), found.patch)
    assert annotated["metadata"]["annotations"] == {EVEN_PARITY: ""}
    assert smt.exclusive_cpus(annotated) == 4
    # Beside annotations already there; and a VMI annotated already needs nothing more.
    other = _vmi(2, team="a")
    assert jsonpatch.apply_patch(other, smt.align(_profile(), other, GATE, SMT2).patch)[
        "metadata"]["annotations"] == {"team": "a", EVEN_PARITY: ""}
    assert smt.align(_profile(), annotated, GATE, SMT2).patch == []


def test_without_the_gate_the_refusal_names_both_fixes() -> None:
    [why] = smt.align(_profile(), _vmi(2), NO_GATE, SMT2).refused

    assert "its pod asks for 3 dedicated CPUs (2 vCPUs + 1 for the isolated emulator thread)" in why
    assert "SMTAlignmentError" in why and "give it 3 vCPUs" in why
    assert "turn on KubeVirt's AlignCPUs feature gate" in why


def test_where_kubevirt_s_parity_would_not_even_the_count_the_gate_is_no_fix() -> None:
    # 1 vCPU + 1 supplemental IO thread: KubeVirt completes the parity of 1 + 1 + 1 (the pool
    # counted twice), so the emulator thread gets one CPU and the pod three, annotated or not.
    vmi = _vmi(1, io=1)

    found = smt.align(_profile(), vmi, GATE, SMT2)

    assert found.patch == [] and "give it 2 vCPUs" in found.refused[0]
    assert "AlignCPUs" not in found.refused[0]


def test_an_odd_vcpu_count_without_an_isolated_emulator_thread_has_one_fix() -> None:
    [why] = smt.align(_profile(), _vmi(3, isolate=False), GATE, SMT2).refused

    assert "give it 4 vCPUs" in why and "AlignCPUs" not in why


@pytest.mark.parametrize(("setting", "mode"), [("Warn", "Enforce"), ("Refuse", "Audit")])
def test_warn_or_audit_admits_with_the_warning(setting: str, mode: str) -> None:
    found = smt.align(_profile(setting, mode), _vmi(2), NO_GATE, SMT2)
    assert found.refused == [] and "SMTAlignmentError" in found.warnings[0]


def test_off_does_not_check() -> None:
    assert smt.align(_profile("Off"), _vmi(2), NO_GATE, SMT2) == smt.Alignment()


# -- through the webhook's answers --------------------------------------------------------------


def _cluster(kubevirt: KubeVirtConfig, profile: Profile) -> ClusterView:
    node = dataclasses.replace(state("n", owner="fast", ready=True), facts=SMT2)
    other = dataclasses.replace(state("m", owner="slow", ready=True),
                                facts=NodeFacts(4, whole_cores=True))
    return ClusterView(profiles={"fast": profile}, node_labels={}, allocatable={},
                       node_states={"n": node, "m": other}, kubevirt=kubevirt)


def test_the_mutating_webhook_adds_the_annotation_where_align_cpus_is_on() -> None:
    vmi = make_vmi({"cpu": {"cores": 2}, "memory": {"guest": "1Gi"}})

    stored = jsonpatch.apply_patch(vmi, shape(_cluster(GATE, _profile()), vmi, {}, []))

    assert stored["metadata"]["annotations"][EVEN_PARITY] == ""
    assert jsonpatch.apply_patch(vmi, shape(_cluster(NO_GATE, _profile()), vmi, {}, []))[
        "metadata"]["annotations"].get(EVEN_PARITY) is None


def test_the_validating_webhook_refuses_a_pod_the_kubelet_would_refuse() -> None:
    cluster = _cluster(NO_GATE, _profile())
    vmi = make_vmi({"cpu": {"cores": 2}, "memory": {"guest": "1Gi"}})
    stored = jsonpatch.apply_patch(vmi, shape(cluster, vmi, {}, []))

    with pytest.raises(Refused) as refused:
        check(cluster, stored, {}, [])

    assert refused.value.code == 422 and "SMTAlignmentError" in str(refused.value)
    warnings: list[str] = []
    check(_cluster(NO_GATE, _profile("Warn")), stored, {}, warnings)
    assert any("SMTAlignmentError" in w for w in warnings)


# -- KubeVirt's own count -------------------------------------------------------------------------


CASES = [(cores, isolate, io) for cores in (1, 2, 3, 4) for isolate in (True, False)
         for io in (0, 1)]


@pytest.mark.parametrize(("cores", "isolate", "io"), CASES)
def test_kubevirt_renders_the_counted_cpus_and_kvtune_admits_only_whole_cores(
    kubevirt_oracle: Oracle, cores: int, isolate: bool, io: int
) -> None:
    profile = _profile(isolate=isolate)
    vmi = _vmi(cores, isolate=isolate, io=io)
    mutated = mutate_vmi(profile, vmi, namespace_labels={}, kubevirt=GATE)
    shaped = jsonpatch.apply_patch(vmi, mutated.patch)
    aligned = jsonpatch.apply_patch(shaped, smt.align(profile, shaped, GATE, SMT2).patch)
    for candidate in (shaped, aligned):
        defaulted = kubevirt_oracle.default(candidate, GATE)
        rendered = kubevirt_oracle.sizing(defaulted, GATE).pod_requests["cpu"]
        assert int(rendered) == smt.exclusive_cpus(defaulted), candidate["metadata"]
    assert kubevirt_oracle.admit(kubevirt_oracle.default(aligned, GATE), GATE).allowed
    final = int(kubevirt_oracle.sizing(kubevirt_oracle.default(aligned, GATE), GATE)
                .pod_requests["cpu"])
    # kvtune admits exactly the VMIs whose pod KubeVirt renders with whole cores.
    assert (final % 2 == 0) == (not smt.align(profile, aligned, GATE, SMT2).refused)
