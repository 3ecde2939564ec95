"""KubeVirt itself judges the VMIs kvtune shapes (`support.kubevirt_oracle`).

Every case is replayed as the apiserver runs a VMI create with both webhooks: kvtune mutates,
KubeVirt's virt-api defaults (re-serialising the spec), kvtune is reinvoked, kvtune validates,
KubeVirt's create admitter decides. A shaped VMI must be admitted by KubeVirt, or refused by
kvtune first with its own message naming the field. What KubeVirt then makes of the VMI is
checked against kvtune's own figures: the overhead kvtune records is the one virt-controller
computes, the virt-launcher pod's requests are what the capacity check counts, and the pod
reserves at least the profile's overhead floor beside the guest.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kvtune_api.kubevirt_overhead import Mi, parse_version
from kvtune_operator.common.profiles import Profile
from kvtune_operator.webhook.vmi import KubeVirtConfig, memory_overhead, validate_vmi, vmi_demand
from kvtune_operator.webhook.vmi.mutate import OVERHEAD_ANNOTATION
from kvtune_operator.webhook.vmi.read import pod_memory_request_bytes, quantity, quantity_bytes
from support.kubevirt_oracle import (
    Oracle,
    Outcome,
    Verdict,
    admission_chain,
    example_vmis,
    kubevirt_version,
)

from webhook import Obj, make_vmi
from webhook.oracle_cases import PROFILES, RESERVED_OVERHEAD_GATE, Case, cases
from webhook.test_properties import profiles as generated_profiles
from webhook.test_properties import vmis as generated_vmis

CONFIGS = {
    "default install": KubeVirtConfig(),
    "ReservedOverheadMemlock on": KubeVirtConfig(feature_gates=frozenset({RESERVED_OVERHEAD_GATE})),
    "overhead ratio 1.5": KubeVirtConfig(overhead_ratio="1.5"),
    "vmRolloutStrategy Stage": KubeVirtConfig(vm_rollout_strategy="Stage"),
}
CASES = cases()


def raw_verdict(oracle: Oracle, vmi: Mapping[str, Any], config: KubeVirtConfig) -> Verdict:
    """KubeVirt's verdict on the VMI without kvtune."""
    return oracle.admit(oracle.default(vmi, config), config)


Path = tuple[str | int, ...]


def leaves(obj: Any, path: Path = ()) -> Iterator[tuple[Path, Any]]:
    """Every (path, value) whose value is neither a non-empty object nor a non-empty list
    (KubeVirt's defaulting adds fields inside list items, so lists are compared item by item)."""
    if isinstance(obj, dict) and obj:
        for key, value in obj.items():
            yield from leaves(value, (*path, key))
    elif isinstance(obj, list) and obj:
        for index, value in enumerate(obj):
            yield from leaves(value, (*path, index))
    else:
        yield path, obj


def at(obj: Any, path: Path) -> Any:
    for key in path:
        if isinstance(key, int):
            if not isinstance(obj, list) or key >= len(obj):
                return None
        elif not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


#: Amounts kvtune may raise (never lower) to reserve the overhead floor.
RAISED: set[Path] = {
    ("spec", "domain", "resources", "requests", "memory"),
    ("spec", "domain", "resources", "limits", "memory"),
    ("spec", "domain", "memory", "reservedOverhead", "addedOverhead"),
}


def check_stored(
    oracle: Oracle, profile: Profile, raw: Obj, stored: Obj, config: KubeVirtConfig
) -> None:
    """What KubeVirt makes of an admitted VMI agrees with kvtune's figures and keeps the author's
    choices."""
    sizing = oracle.sizing(stored, config)
    recorded = json.loads(stored["metadata"]["annotations"][OVERHEAD_ANNOTATION])
    assert recorded["total"] == sizing.overhead == memory_overhead(stored, config).total

    demand = vmi_demand(stored, config)
    pod = sizing.pod_requests
    assert demand.memory_bytes == quantity_bytes(pod["memory"], "pod memory")
    assert demand.cpu_millis == _millis(pod["cpu"])
    size = demand.hugepage_size
    hugepages = pod.get(f"hugepages-{size}") if size else None
    assert demand.hugepages_bytes == (quantity_bytes(hugepages, "pod hugepages") if size else 0)

    # The pod holds the floor for QEMU beside the guest's RAM (with hugepages the guest is in
    # hugepages-<size> and `memory` is all beside it).
    # An overcommitted guest (a pod request below it) has only that request in the pod.
    guest = quantity_bytes(stored["spec"]["domain"]["memory"]["guest"], "guest")
    for_guest = min(guest, pod_memory_request_bytes(stored, config.memory_overcommit))
    beside = quantity_bytes(pod["memory"], "pod memory") - (0 if size else for_guest)
    floor = quantity_bytes(profile.spec.memory.vm_overhead_floor, "floor")
    overcommitted = at(stored, ("spec", "domain", "resources", "overcommitGuestOverhead"))
    # Without the gate, an overcommitted guest leaves kvtune no room for the floor (it warns).
    if not overcommitted and (config.reserved_overhead or for_guest == guest):
        assert beside >= floor, (beside / Mi, floor / Mi)

    for path, value in leaves(raw):
        after = at(stored, path)
        if path in RAISED:
            assert quantity_bytes(after, "after") >= quantity_bytes(value, "before"), path
        elif value is False:
            assert after in (False, None), path  # KubeVirt drops an omitempty false
        elif value in ({}, []):
            # May gain items, or vanish: KubeVirt drops an empty omitempty map.
            assert after is None or isinstance(after, type(value)), path
        elif after != value:
            # KubeVirt re-serialises quantities: 2 comes back as "2", 1073741824 as "1Gi".
            assert isinstance(value, (int, str)) and not isinstance(value, bool), path
            assert quantity(after, "after") == quantity(value, "before"), path


def _millis(value: str) -> int:
    return int(quantity(value, "pod cpu") * 1000)


def check_outcome(outcome: Outcome, expected_refusal: str | None) -> None:
    if expected_refusal is None:
        assert outcome.refused_by is None, outcome.reasons
    else:
        assert outcome.refused_by in {"kvtune mutate", "kvtune validate"}, outcome
        assert any(expected_refusal in reason for reason in outcome.reasons), outcome.reasons


@pytest.mark.parametrize("config_name", CONFIGS)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_kubevirt_admits_each_shaped_vmi_or_kvtune_refuses_it_first_naming_the_field(
    kubevirt_oracle: Oracle, case: Case, config_name: str
) -> None:
    config = CONFIGS[config_name]
    profile = PROFILES[case.profile]
    outcome = admission_chain(kubevirt_oracle, profile, case.vmi, config)
    if not raw_verdict(kubevirt_oracle, case.vmi, config).allowed and case.refused is None:
        # KubeVirt refuses this VMI without kvtune too (a reservedOverhead without the gate).
        assert outcome.refused_by is not None
        return
    check_outcome(outcome, case.refused)
    if outcome.stored is not None:
        check_stored(kubevirt_oracle, profile, case.vmi, outcome.stored, config)


EXAMPLE_PROFILES = ("pinned-2Mi", "shared")


def example_cases() -> list[tuple[str, str, Obj]]:
    return [(p, name, vmi) for p in EXAMPLE_PROFILES for name, vmi in example_vmis()]


def test_kubevirts_own_examples_are_among_the_cases() -> None:
    names = {name for _, name, _ in example_cases()}
    assert {"vmi-fedora.yaml", "vmi-sriov.yaml", "vmi-arm.yaml"} <= names, names


@pytest.mark.parametrize(
    ("profile_name", "example", "vmi"), example_cases(), ids=lambda v: v if isinstance(v, str)
    else None
)
def test_kubevirts_own_example_vmis_are_admitted_once_shaped_or_refused_by_kvtune_first(
    kubevirt_oracle: Oracle, profile_name: str, example: str, vmi: Obj
) -> None:
    config = CONFIGS["default install"]
    profile = PROFILES[profile_name]
    outcome = admission_chain(kubevirt_oracle, profile, vmi, config)
    if not raw_verdict(kubevirt_oracle, vmi, config).allowed:
        return  # an example for a feature gate the default install lacks (sidecars, host disks)
    assert outcome.refused_by in {None, "kvtune mutate", "kvtune validate"}, outcome
    if outcome.refused_by is not None:
        assert all("spec." in reason for reason in outcome.reasons), outcome.reasons
    else:
        assert outcome.stored is not None
        check_stored(kubevirt_oracle, profile, vmi, outcome.stored, config)


ORACLE_SETTINGS = settings(
    deadline=None, max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@ORACLE_SETTINGS
@given(
    profile=generated_profiles(),
    vmi=generated_vmis(),
    config=st.sampled_from(list(CONFIGS.values())),
)
def test_no_generated_vmi_kubevirt_accepts_is_turned_into_one_it_refuses(
    kubevirt_oracle: Oracle, profile: Profile, vmi: Obj, config: KubeVirtConfig
) -> None:
    labels = {"env": "prod"}
    outcome = admission_chain(kubevirt_oracle, profile, vmi, config, namespace_labels=labels)
    # A VMI KubeVirt refuses on its own may be completed by the profile (hugepages for a NUMA
    # passthrough, say): only a valid VMI must stay valid. What is stored is checked either way.
    if raw_verdict(kubevirt_oracle, vmi, config).allowed:
        assert outcome.refused_by in {None, "kvtune mutate", "kvtune validate"}, outcome
    if outcome.stored is not None and profile.spec.mode == "Enforce" and (
        OVERHEAD_ANNOTATION in (outcome.stored["metadata"].get("annotations") or {})
    ):
        check_stored(kubevirt_oracle, profile, vmi, outcome.stored, config)


@ORACLE_SETTINGS
@given(vmi=generated_vmis(), config=st.sampled_from(list(CONFIGS.values())))
def test_kvtunes_overhead_and_pod_requests_are_kubevirts_own(
    kubevirt_oracle: Oracle, vmi: Obj, config: KubeVirtConfig
) -> None:
    # On any VMI as KubeVirt stores it, shaped or not.
    defaulted = kubevirt_oracle.default(vmi, config)
    sizing = kubevirt_oracle.sizing(defaulted, config)
    assert memory_overhead(defaulted, config).total == sizing.overhead
    demand = vmi_demand(defaulted, config)
    assert demand.memory_bytes == quantity_bytes(sizing.pod_requests["memory"], "pod memory")
    assert demand.cpu_millis == _millis(sizing.pod_requests["cpu"])


def test_the_oracle_is_the_kubevirt_release_kvtune_assumes_by_default() -> None:
    from kvtune_api.kubevirt_overhead import NEWEST_RELEASE

    major, minor = (int(x) for x in kubevirt_version().lstrip("v").split(".")[:2])
    assert (major, minor) == NEWEST_RELEASE


def test_under_stage_rollout_an_overcommitted_dedicated_vmi_is_admitted_and_warned_of_oom(
    kubevirt_oracle: Oracle,
) -> None:
    config = CONFIGS["vmRolloutStrategy Stage"]
    profile = PROFILES["pinned-overcommit"]
    vmi = make_vmi({"memory": {"guest": "2Gi"}, "resources": {"requests": {"memory": "1Gi"}}})

    outcome = admission_chain(kubevirt_oracle, profile, vmi, config)

    assert outcome.refused_by is None, outcome.reasons
    assert outcome.stored is not None
    # KubeVirt refuses a limit below the guest under Stage: kvtune sets none (KubeVirt gives the
    # pod a limit equal to its request for dedicated CPUs all the same).
    assert "memory" not in (outcome.stored["spec"]["domain"]["resources"].get("limits") or {})
    limits = kubevirt_oracle.sizing(outcome.stored, config).pod_limits
    assert quantity_bytes(limits["memory"], "pod limit") < 2 * 1024 * Mi
    _, warnings = validate_vmi(profile, outcome.stored, namespace_labels={}, kubevirt=config)
    assert any("OOM-killed" in w for w in warnings)


def test_a_request_off_the_page_boundary_is_rounded_to_whole_pages_not_refused(
    kubevirt_oracle: Oracle,
) -> None:
    vmi = make_vmi({"memory": {"guest": "2Gi"}, "resources": {"requests": {"memory": "2560Mi"}}})

    outcome = admission_chain(kubevirt_oracle, PROFILES["pinned-1Gi"], vmi, CONFIGS[
        "default install"])

    assert outcome.stored is not None, outcome.reasons
    request = quantity_bytes(outcome.stored["spec"]["domain"]["resources"]["requests"]["memory"],
                             "request")
    assert request % (1024 * Mi) == 0 and request >= 2560 * Mi


#: Released, pre-release, `git describe` (KubeVirt's hack/version.sh) and nightly forms, and
#: strings that are not versions.
VERSIONS = [
    "v1.9.0", "v1.9.2", "1.10.0", "v1.10.0-alpha.0", "v1.9.0-beta.0", "v1.9.0-rc.1",
    "v1.9.0-beta.0.123+5c1a0f3e2d1b4a", "v1.9.0-rc.0.7+0123456789abcd", "v1.9.2-4+abcdef",
    "v1.09.0", "v+1.9.0", "20260301_1a2b3c4", "devel", "latest", "v1.9", "v1.9.0.1",
    "v1.10.0-beta_1", "v 1.10.0", "v1.9.0-", "v1.9.0+", "vv1.9.0", "v1.9.0-beta..1", "",
    "v1.10.0-rc.1", "v1.9.0+dirty", "1.9.0", "v1.9.1-dirty", "v1.9.0-beta.0.12+0123abcd-dirty",
    "V1.9.0", "v1.9.0 ", "v1.9.0-beta.0+", "v-1.9.0",
]


@pytest.mark.parametrize("version", VERSIONS)
def test_kubevirt_versions_are_read_as_kubevirts_operator_reads_them(
    kubevirt_oracle: Oracle, version: str
) -> None:
    assert parse_version(version) == kubevirt_oracle.version(version)
