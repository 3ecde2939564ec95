"""The VMI mutation: what it fills in, what it keeps, the patch and the recorded overhead."""

from __future__ import annotations

import copy
import json
from typing import Any, Unpack

import jsonpatch
import pytest
from kvtune_operator.common.profiles import Profile
from kvtune_operator.webhook.vmi import KubeVirtConfig
from kvtune_operator.webhook.vmi.mutate import json_patch, mutate_vmi
from kvtune_operator.webhook.vmi.read import VmiFieldError
from support.sections import HostSections

from webhook import Obj, ProfileArgs, make_profile, make_vmi

Mi = 1024**2
Gi = 1024**3
#: KubeVirt with its ReservedOverheadMemlock feature gate on (it is off in a default install).
GATE_ON = KubeVirtConfig(feature_gates=frozenset({"ReservedOverheadMemlock"}))
NO_FLOOR: HostSections = {"memory": {"vmOverheadFloor": "0"}}

HUGE_1G: HostSections = {"memory": {"hugepages": {"pages": [{"size": "1Gi", "count": 64}]}}}
HUGE_BOTH: HostSections = {
    "memory": {
        "hugepages": {"pages": [{"size": "2Mi", "count": 4096}, {"size": "1Gi", "count": 8}]}
    }
}


def sized(domain: Obj | None = None, memory: str = "8Gi") -> Obj:
    """A VMI with 4 cores and a memory request, plus `domain`."""
    base: Obj = {"cpu": {"cores": 4}, "resources": {"requests": {"memory": memory}}}
    for key, value in (domain or {}).items():
        base[key] = {**base.get(key, {}), **value}
    return make_vmi(base)


DEFAULT_INSTALL = KubeVirtConfig()


def mutated(
    vmi: Obj, /, kubevirt: KubeVirtConfig = DEFAULT_INSTALL, **profile: Unpack[ProfileArgs]
) -> Obj:
    return mutate_vmi(make_profile(**profile), vmi, namespace_labels={}, kubevirt=kubevirt).vmi


def domain(vmi: Obj) -> Any:
    return vmi["spec"]["domain"]


def test_a_plain_vmi_gets_dedicated_cpus_and_an_isolated_emulator_thread() -> None:
    cpu = domain(mutated(sized()))["cpu"]
    assert cpu == {"cores": 4, "dedicatedCpuPlacement": True, "isolateEmulatorThread": True}


@pytest.mark.parametrize("field", ["dedicatedCpuPlacement", "isolateEmulatorThread"])
def test_an_explicit_false_against_the_profile_is_refused_before_kubevirt_drops_it(
    field: str,
) -> None:
    # KubeVirt's own mutating webhook runs next and drops an omitempty false: by validation
    # time, and when kvtune is reinvoked, the author's choice would be gone.
    vmi = sized({"cpu": {field: False}})
    result = mutate_vmi(make_profile(), vmi, namespace_labels={})
    assert result.patch == []
    assert len(result.refused) == 1 and f"spec.domain.cpu.{field} is false" in result.refused[0]


def test_in_audit_mode_an_explicit_false_is_only_a_warning() -> None:
    vmi = sized({"cpu": {"dedicatedCpuPlacement": False}})
    result = mutate_vmi(make_profile(mode="Audit"), vmi, namespace_labels={})
    assert (result.patch, result.refused) == ([], [])
    assert len(result.warnings) == 1 and "Audit mode, would be refused" in result.warnings[0]


def test_a_vmi_without_a_memory_size_is_refused_before_kubevirt_gives_it_one_hugepage() -> None:
    result = mutate_vmi(make_profile(vmi={"hugepageSize": "2Mi"}), make_vmi({"cpu": {"cores": 2}}),
                        namespace_labels={})
    assert len(result.refused) == 1 and "no memory size" in result.refused[0]


def test_a_profile_without_dedicated_cpus_leaves_cpu_placement_alone() -> None:
    vmi = mutated(sized(), vmi={"dedicatedCpus": False, "isolateEmulatorThread": False})
    assert domain(vmi)["cpu"] == {"cores": 4}


@pytest.mark.parametrize(
    ("profile_size", "vmi_memory", "expected"),
    [
        pytest.param("1Gi", {}, "1Gi", id="the profile's size fills an unset one"),
        pytest.param("2Mi", {"hugepages": {"pageSize": "1Gi"}}, "1Gi", id="the VMI's 1Gi stays"),
        pytest.param("1Gi", {"hugepages": {"pageSize": "2Mi"}}, "2Mi", id="the VMI's 2Mi stays"),
    ],
)
def test_the_hugepage_size_is_filled_in_but_never_replaced(
    profile_size: str, vmi_memory: Obj, expected: str
) -> None:
    vmi = mutated(sized({"memory": vmi_memory}), vmi={"hugepageSize": profile_size}, **HUGE_BOTH)
    assert domain(vmi)["memory"]["hugepages"] == {"pageSize": expected}


def test_no_hugepages_are_asked_for_when_the_profile_names_no_size() -> None:
    assert "hugepages" not in domain(mutated(sized()))["memory"]


@pytest.mark.parametrize(
    ("cpu", "hugepages", "passthrough"),
    [
        pytest.param({}, "1Gi", True, id="with dedicated CPUs and hugepages"),
        pytest.param({}, None, False, id="not without hugepages"),
    ],
)
def test_numa_passthrough_needs_dedicated_cpus_and_hugepages(
    cpu: Obj, hugepages: str | None, passthrough: bool
) -> None:
    vmi_settings = {"hugepageSize": hugepages, "numaPassthrough": hugepages is not None}
    vmi = mutated(sized({"cpu": cpu}), vmi=vmi_settings, **HUGE_1G)
    numa = domain(vmi)["cpu"].get("numa")
    assert (numa == {"guestMappingPassthrough": {}}) is passthrough


@pytest.mark.parametrize(
    ("vmi_domain", "requests", "limits", "guest"),
    [
        pytest.param(
            {"resources": {"requests": {"memory": "8Gi"}}},
            {"memory": "8Gi", "cpu": "4"},
            {"memory": "8Gi", "cpu": "4"},
            "8Gi",
            id="limits and guest follow the request, CPUs the topology",
        ),
        pytest.param(
            {"resources": {"limits": {"memory": "6Gi", "cpu": "2"}}},
            {"memory": "6Gi", "cpu": "2"},
            {"memory": "6Gi", "cpu": "2"},
            "6Gi",
            id="requests follow the limits as in KubeVirt's defaulting",
        ),
        pytest.param(
            {"memory": {"guest": "4Gi"}, "resources": {}},
            {"memory": "4Gi", "cpu": "4"},
            {"memory": "4Gi", "cpu": "4"},
            "4Gi",
            id="requests and limits follow the guest memory",
        ),
        pytest.param(
            {"memory": {"guest": "4Gi"}, "resources": {"limits": {"memory": "6Gi"}}},
            {"memory": "6Gi", "cpu": "4"},
            {"memory": "6Gi", "cpu": "4"},
            "4Gi",
            id="a smaller guest under a larger limit is kept",
        ),
    ],
)
def test_resources_become_guaranteed(
    vmi_domain: Obj, requests: Obj, limits: Obj, guest: str
) -> None:
    vmi = make_vmi({"cpu": {"cores": 4}, **vmi_domain})
    shaped = domain(mutated(vmi, **NO_FLOOR))
    resources = shaped["resources"]
    assert resources["requests"] == requests
    assert resources["limits"] == limits
    assert resources["overcommitGuestOverhead"] is False
    # KubeVirt's defaulting sets an unset guest from the request, as later tests replay.
    assert shaped.get("memory", {}).get("guest", requests["memory"]) == guest


def test_memory_is_not_made_guaranteed_when_the_profile_allows_overcommit() -> None:
    shared = {"dedicatedCpus": False, "isolateEmulatorThread": False}
    vmi = mutated(sized(), vmi=shared, memory={"allowOvercommit": True, "vmOverheadFloor": "0"})
    resources = domain(vmi)["resources"]
    assert "memory" not in resources.get("limits", {})
    assert "overcommitGuestOverhead" not in resources


def test_dedicated_cpus_make_memory_guaranteed_even_where_overcommit_is_allowed() -> None:
    # KubeVirt refuses a memory request unlike its limit with dedicated CPUs.
    vmi = mutated(sized(), memory={"allowOvercommit": True, "vmOverheadFloor": "0"})
    resources = domain(vmi)["resources"]
    assert resources["limits"]["memory"] == resources["requests"]["memory"] == "8Gi"


def test_cpu_is_left_shared_when_the_profile_allows_cpu_overcommit_without_pinning() -> None:
    vmi = mutated(
        sized(),
        vmi={"dedicatedCpus": False, "isolateEmulatorThread": False},
        cpu={"allowOvercommit": True, "ple": "Required"},
    )
    assert "cpu" not in domain(vmi)["resources"]["requests"]


def test_with_the_gate_overhead_below_the_floor_is_topped_up_as_added_overhead() -> None:
    # 4 vCPU / 8Gi dedicated: 16 + 220 + 32 + 8 + 32 + 100 = 408Mi; floor 1Gi: 1024 - 408 = 616Mi
    result = mutate_vmi(make_profile(), sized(), namespace_labels={}, kubevirt=GATE_ON)
    assert domain(result.vmi)["memory"]["reservedOverhead"] == {"addedOverhead": "616Mi"}
    assert result.overhead is not None
    assert result.overhead.total == 1 * Gi


@pytest.mark.parametrize(
    ("user_added", "floor", "expected"),
    [
        pytest.param("2Gi", "1Gi", "2Gi", id="a larger value of the user's is kept"),
        pytest.param("100Mi", "1Gi", "616Mi", id="a smaller one is raised to the floor"),
        pytest.param(None, "256Mi", None, id="nothing is added above the floor"),
        pytest.param(None, "2Gi", "1640Mi", id="2048 - 408 = 1640Mi"),
        pytest.param(None, "1432Mi", "1Gi", id="printed in Gi when whole"),
    ],
)
def test_with_the_gate_added_overhead_only_ever_grows(
    user_added: str | None, floor: str, expected: str | None
) -> None:
    extra = {} if user_added is None else {"reservedOverhead": {"addedOverhead": user_added}}
    vmi = mutated(sized({"memory": extra}), GATE_ON, memory={"vmOverheadFloor": floor})
    reserved = domain(vmi)["memory"].get("reservedOverhead", {})
    assert reserved.get("addedOverhead") == expected


@pytest.mark.parametrize(
    ("vmi_memory", "profile", "raised", "guest"),
    [
        pytest.param({}, {}, "8808Mi", "8Gi", id="8Gi + (1024 - 408)Mi, the guest pinned"),
        pytest.param({}, {"vmi": {"hugepageSize": "1Gi"}, **HUGE_1G}, "9Gi", "8Gi",
                     id="whole 1Gi pages: the gap rounds up to a page"),
        pytest.param({"guest": "6Gi"}, {}, "8Gi", "6Gi",
                     id="a request already 2Gi above the guest reaches the floor as it is"),
    ],
)
def test_without_the_gate_the_memory_request_is_raised_above_the_guest(
    vmi_memory: Obj, profile: Obj, raised: str, guest: str
) -> None:
    # A default KubeVirt refuses any reservedOverhead; it reserves what the request holds above
    # the guest in the pod instead, beside its own estimate.
    shaped = domain(mutated(sized({"memory": vmi_memory}), **profile))
    assert "reservedOverhead" not in shaped["memory"]
    assert shaped["memory"]["guest"] == guest
    assert shaped["resources"]["requests"]["memory"] == raised
    assert shaped["resources"]["limits"]["memory"] == raised


def test_without_the_gate_an_overcommitted_request_is_not_raised() -> None:
    shared = {"dedicatedCpus": False, "isolateEmulatorThread": False}
    vmi = sized({"memory": {"guest": "16Gi"}})
    shaped = domain(mutated(vmi, vmi=shared, memory={"allowOvercommit": True}))
    assert shaped["resources"]["requests"]["memory"] == "8Gi"  # the validation warns instead


def test_a_ratio_is_counted_before_topping_up() -> None:
    # 408Mi * 2.0 (through whole kB) is above a floor of 800Mi: nothing added
    ratio = KubeVirtConfig(overhead_ratio="2.0")
    vmi = mutated(sized(), ratio, memory={"vmOverheadFloor": "800Mi"})
    assert domain(vmi)["resources"]["requests"]["memory"] == "8Gi"


def test_the_vmi_is_steered_to_the_profiles_ready_nodes() -> None:
    vmi = mutated(sized(), name="fast")
    assert vmi["spec"]["nodeSelector"] == {"kvtune.io/profile": "fast", "kvtune.io/ready": "true"}


def test_the_overhead_figures_and_the_profile_are_recorded_in_annotations() -> None:
    vmi = mutated(sized(), GATE_ON, name="fast")
    annotations = vmi["metadata"]["annotations"]
    assert annotations["kvtune.io/mutated-by"] == "fast"
    figures = json.loads(annotations["kvtune.io/overhead"])
    assert figures["floor"] == 1 * Gi
    assert figures["total"] == 1 * Gi
    assert figures["components"]["addedOverhead"] == 616 * Mi
    assert figures["components"]["processes"] == 220 * Mi


@pytest.mark.parametrize(
    ("profile", "vmi", "reason"),
    [
        pytest.param(
            make_profile(),
            make_vmi(annotations={"kvtune.io/skip": "true"}),
            "kvtune.io/skip",
            id="the skip annotation",
        ),
        pytest.param(make_profile(mode="Audit"), make_vmi({"memory": {"guest": "1Gi"}}), "Audit",
                     id="a profile in Audit"),
        pytest.param(
            make_profile(vmi={"selector": {"matchLabels": {"tier": "fast"}}}),
            make_vmi(labels={"tier": "slow"}),
            "do not select",
            id="a VMI outside the selector",
        ),
    ],
)
def test_a_vmi_the_profile_does_not_shape_is_returned_unchanged(
    profile: Any, vmi: Obj, reason: str
) -> None:
    before = copy.deepcopy(vmi)
    result = mutate_vmi(profile, vmi, namespace_labels={})
    assert result.vmi == before
    assert result.patch == []
    assert result.overhead is None
    assert result.skipped is not None and reason in result.skipped


def test_a_profile_without_a_vmi_section_shapes_nothing() -> None:
    bare = Profile.from_body({"metadata": {"name": "bare"}, "spec": {"nodeSelector": {}}})
    result = mutate_vmi(bare, sized(), namespace_labels={})
    assert result.patch == []
    assert result.skipped == "HypervisorProfile bare has no vmi section"


def test_the_input_is_never_modified() -> None:
    vmi = sized()
    before = copy.deepcopy(vmi)
    mutate_vmi(make_profile(), vmi, namespace_labels={})
    assert vmi == before


def test_the_patch_turns_the_input_into_the_result() -> None:
    vmi = sized({"memory": {"guest": "8Gi"}})
    result = mutate_vmi(make_profile(), vmi, namespace_labels={})
    assert jsonpatch.apply_patch(vmi, result.patch) == result.vmi


def test_the_patch_escapes_slashes_in_annotation_keys() -> None:
    vmi = make_vmi({"resources": {"requests": {"memory": "1Gi"}}}, annotations={"a": "b"})
    paths = [op["path"] for op in mutate_vmi(make_profile(), vmi, namespace_labels={}).patch]
    assert "/metadata/annotations/kvtune.io~1mutated-by" in paths


@pytest.mark.parametrize(
    ("old", "new", "ops"),
    [
        pytest.param({"a": 1}, {"a": 1}, [], id="equal objects need nothing"),
        pytest.param({"a": 1, "b": 2}, {"a": 1}, [{"op": "remove", "path": "/b"}], id="removal"),
        pytest.param(
            {"l": [1, 2]}, {"l": [1]}, [{"op": "replace", "path": "/l", "value": [1]}], id="list"
        ),
        pytest.param(
            {"x": 1}, {"x": True}, [{"op": "replace", "path": "/x", "value": True}], id="bool"
        ),
        pytest.param(
            {}, {"m~n": {"k": 1}}, [{"op": "add", "path": "/m~0n", "value": {"k": 1}}], id="tilde"
        ),
    ],
)
def test_json_patch_follows_rfc_6902(old: Obj, new: Obj, ops: list[Obj]) -> None:
    assert json_patch(old, new) == ops
    assert jsonpatch.apply_patch(old, ops) == new


def test_an_unreadable_quantity_is_an_error_naming_the_field() -> None:
    with pytest.raises(VmiFieldError, match=r"spec\.domain\.resources\.requests\.memory"):
        mutate_vmi(make_profile(), sized(memory="eight gigs"), namespace_labels={})


def test_a_malformed_level_is_left_for_the_apiserver_schema_to_reject() -> None:
    vmi = make_vmi({"resources": {"requests": {"memory": "1Gi"}}, "cpu": "four"})
    assert domain(mutated(vmi))["cpu"] == "four"


def test_kubevirts_memory_overcommit_is_not_undone_by_the_floor() -> None:
    # KubeVirt requests guest * 100 / 150 for a VMI that gives only its guest: raising the request
    # above the guest to reach the floor would undo the cluster's overcommit.
    shared = {"dedicatedCpus": False, "isolateEmulatorThread": False}
    vmi = make_vmi({"memory": {"guest": "4Gi"}})
    shaped = domain(mutated(vmi, KubeVirtConfig(memory_overcommit=150), vmi=shared,
                            memory={"allowOvercommit": True}))
    assert "memory" not in shaped.get("resources", {}).get("requests", {})


@pytest.mark.parametrize("zero", ["0", "0Gi", "0M"])
def test_a_zero_memory_limit_is_none_and_the_floor_does_not_turn_it_into_one(zero: str) -> None:
    # KubeVirt reads a zero limit as no limit: raising the request for the overhead floor must
    # not give the pod a limit its author did not set.
    shared = {"dedicatedCpus": False, "isolateEmulatorThread": False}
    vmi = make_vmi({"memory": {"guest": "2Gi"},
                    "resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": zero}}})

    resources = domain(mutated(vmi, vmi=shared, memory={"allowOvercommit": True,
                                                        "vmOverheadFloor": "1Gi"}))["resources"]

    assert resources["requests"]["memory"] != "2Gi"  # raised for the floor
    assert resources["limits"]["memory"] == zero
