"""The webhook's answers from its indexes: which profile decides, which nodes count, and the
AdmissionReview that carries the answer.

Pure tests of `admission.py`; the same answers given through a real apiserver are in
`test_serving.py`.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import jsonpatch
import pytest
from controller.builders import state
from kvtune_api.labels import READY_LABEL
from kvtune_operator.common.profiles import PROFILE_LABEL, Profile
from kvtune_operator.webhook.admission import (
    ClusterView,
    Refused,
    check,
    node_capacity,
    ready_nodes,
    review,
    shape,
)
from kvtune_operator.webhook.vmi import KubeVirtConfig, NodeCapacity
from kvtune_operator.webhook.vmi.mutate import MUTATED_BY_ANNOTATION

from webhook import Obj, make_profile, make_vmi

Gi = 1024**3
SMALL_VMI = make_vmi({"cpu": {"cores": 2}, "memory": {"guest": "2Gi"}})


def view(*profiles: Profile, **kwargs: Any) -> ClusterView:
    fields: dict[str, Any] = {"node_labels": {}, "node_states": {}, "allocatable": {}, **kwargs}
    return ClusterView(profiles={p.name: p for p in profiles}, **fields)


def shaped(cluster: ClusterView, vmi: Obj) -> Obj:
    """The VMI as the apiserver stores it after the mutating webhook's patch."""
    result: Obj = jsonpatch.apply_patch(vmi, shape(cluster, vmi, {}, []))
    return result


def test_the_one_profile_that_selects_a_vmi_shapes_it() -> None:
    result = shaped(view(make_profile("fast")), SMALL_VMI)
    assert result["metadata"]["annotations"][MUTATED_BY_ANNOTATION] == "fast"
    assert result["spec"]["domain"]["cpu"]["dedicatedCpuPlacement"] is True


def test_a_vmi_no_profile_selects_gets_no_patch() -> None:
    picky = make_profile("picky", vmi={"selector": {"matchLabels": {"app": "db"}}})
    assert shape(view(picky), SMALL_VMI, {}, []) == []


def test_a_profile_being_deleted_claims_no_vmi() -> None:
    going = Profile.from_body({"metadata": {"name": "going", "deletionTimestamp": "2026-01-01"},
                               "spec": {"nodeSelector": {}, "mode": "Enforce",
                                        "vmi": {"namespaceSelector": {}}}})
    assert MUTATED_BY_ANNOTATION not in shaped(view(going), SMALL_VMI)["metadata"].get(
        "annotations", {})


def test_a_vmi_two_enforcing_profiles_select_is_refused_naming_both() -> None:
    cluster = view(make_profile("b"), make_profile("a", mode="Audit"))
    with pytest.raises(Refused) as refused:
        shape(cluster, SMALL_VMI, {}, [])
    assert refused.value.code == 403
    assert "selected by the HypervisorProfiles a, b" in str(refused.value)
    with pytest.raises(Refused):
        check(cluster, SMALL_VMI, {}, [])


def test_a_vmi_only_audit_profiles_select_is_admitted_with_a_warning() -> None:
    cluster = view(make_profile("a", mode="Audit"), make_profile("b", mode="Audit"))
    assert shape(cluster, SMALL_VMI, {}, []) == []
    warnings: list[str] = []
    check(cluster, SMALL_VMI, {}, warnings)
    assert len(warnings) == 1 and warnings[0].startswith("Audit mode, would be refused:")


def test_a_contradiction_is_refused_with_422_naming_the_vmi_and_the_field() -> None:
    vmi = make_vmi({"cpu": {"cores": 2, "dedicatedCpuPlacement": False}})
    with pytest.raises(Refused) as refused:
        check(view(make_profile("fast")), vmi, {}, [])
    assert refused.value.code == 422
    assert str(refused.value).startswith("VirtualMachineInstance vms/vm: spec.domain.cpu.")


def test_an_unreadable_field_is_refused_with_400() -> None:
    vmi = make_vmi({"resources": {"requests": {"memory": "lots"}}})
    with pytest.raises(Refused) as refused:
        shape(view(make_profile("fast")), vmi, {}, [])
    assert refused.value.code == 400
    assert "spec.domain.resources.requests.memory: 'lots'" in str(refused.value)


def test_a_bad_kubevirt_ratio_is_the_clusters_fault_not_the_vmis() -> None:
    with pytest.raises(Refused) as refused:
        shape(view(make_profile("fast"), kubevirt=KubeVirtConfig(overhead_ratio="0.5")), SMALL_VMI,
              {}, [])
    assert refused.value.code == 500
    assert "additionalGuestMemoryOverheadRatio" in str(refused.value)
    assert "fix the KubeVirt CR" in str(refused.value)


def roomy(name: str) -> NodeCapacity:
    return NodeCapacity(name, cpu_millis=64_000, memory_bytes=256 * Gi)


@pytest.mark.parametrize(
    ("labels", "states", "ready"),
    [
        ({PROFILE_LABEL: "fast", READY_LABEL: "true"}, {}, True),
        ({PROFILE_LABEL: "fast"}, {"n": state("n", ready=True, owner="fast")}, True),
        ({PROFILE_LABEL: "fast"}, {"n": state("n", ready=True, observed=0, owner="fast")}, False),
        ({PROFILE_LABEL: "fast"}, {"n": state("n", ready=False, owner="fast")}, False),
        ({PROFILE_LABEL: "slow", READY_LABEL: "true"}, {}, False),
        ({READY_LABEL: "true"}, {}, False),
    ],
    ids=["labelled ready", "state Ready", "state Ready for an older spec", "state not Ready",
         "another profile's node", "no profile label"],
)
def test_a_node_counts_for_capacity_when_it_is_the_profiles_and_ready(
    labels: dict[str, str], states: dict[str, Any], ready: bool
) -> None:
    cluster = view(node_labels={"n": labels}, node_states=states, allocatable={"n": roomy("n")})
    assert list(ready_nodes(cluster, "fast")) == ([roomy("n")] if ready else [])


def test_a_vmi_larger_than_every_ready_node_gets_a_warning_naming_the_profile() -> None:
    small = NodeCapacity("n", cpu_millis=4000, memory_bytes=4 * Gi)
    cluster = view(make_profile("fast"), node_labels={"n": {PROFILE_LABEL: "fast",
                                                            READY_LABEL: "true"}},
                   allocatable={"n": small})
    warnings: list[str] = []
    check(cluster, make_vmi({"cpu": {"cores": 2}, "memory": {"guest": "8Gi"}}), {}, warnings)
    assert len(warnings) == 1
    assert warnings[0].startswith("HypervisorProfile fast: no ready node of the profile has room")
    warnings.clear()
    check(cluster, SMALL_VMI, {}, warnings)
    assert warnings == []


def test_an_audit_profile_warns_about_contradictions_but_not_capacity() -> None:
    vmi = make_vmi({"cpu": {"cores": 2, "dedicatedCpuPlacement": False},
                    "memory": {"guest": "2Gi"}})
    warnings: list[str] = []
    check(view(make_profile("fast", mode="Audit")), vmi, {}, warnings)
    assert len(warnings) == 1 and "dedicatedCpuPlacement is false" in warnings[0]


def test_node_capacity_reads_allocatable_quantities_and_hugepage_sizes() -> None:
    capacity = node_capacity("n", {"cpu": "7500m", "memory": "16Gi", "hugepages-1Gi": "8Gi",
                                   "hugepages-2Mi": "0", "pods": "110"})
    assert capacity == NodeCapacity("n", 7500, 16 * Gi, {"1Gi": 8 * Gi, "2Mi": 0})


def request(vmi: Obj, operation: str = "CREATE") -> Obj:
    return {"uid": "u-1", "operation": operation, "namespace": "vms", "object": vmi}


def test_a_mutation_answers_with_its_json_patch_in_base64() -> None:
    answer, decision = review("mutate", view(make_profile("fast")), request(SMALL_VMI), {})
    response = answer["response"]
    assert (answer["kind"], response["uid"], response["allowed"]) == ("AdmissionReview", "u-1",
                                                                     True)
    assert (response["patchType"], decision) == ("JSONPatch", "patched")
    patch = json.loads(base64.b64decode(response["patch"]))
    assert jsonpatch.apply_patch(SMALL_VMI, patch) == shaped(view(make_profile("fast")),
                                                             SMALL_VMI)


def test_a_vmi_left_alone_is_allowed_without_a_patch() -> None:
    picky = make_profile("picky", vmi={"selector": {"matchLabels": {"app": "db"}}})
    answer, decision = review("mutate", view(picky), request(SMALL_VMI), {})
    assert answer["response"] == {"uid": "u-1", "allowed": True}
    assert decision == "skipped"


def test_only_creations_are_judged() -> None:
    vmi = make_vmi({"cpu": {"cores": 2, "dedicatedCpuPlacement": False}})
    answer, decision = review("validate", view(make_profile("fast")), request(vmi, "UPDATE"), {})
    assert (answer["response"]["allowed"], decision) == (True, "skipped")


def test_a_refusal_carries_its_code_and_message_and_warnings_travel_with_an_allowance() -> None:
    vmi = make_vmi({"cpu": {"cores": 2, "dedicatedCpuPlacement": False}})
    answer, decision = review("validate", view(make_profile("fast")), request(vmi), {})
    assert (answer["response"]["allowed"], decision) == (False, "denied")
    assert answer["response"]["status"]["code"] == 422
    assert "dedicatedCpuPlacement is false" in answer["response"]["status"]["message"]
    answer, decision = review("validate", view(make_profile("fast", mode="Audit")),
                              request(vmi), {})
    assert (answer["response"]["allowed"], decision) == (True, "allowed")
    assert "dedicatedCpuPlacement is false" in answer["response"]["warnings"][0]
