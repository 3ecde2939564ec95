"""Validation of VMIs against their profile, and the capacity warning."""

from __future__ import annotations

from typing import Any

import pytest
from kvtune_operator.webhook.vmi import KubeVirtConfig
from kvtune_operator.webhook.vmi.validate import (
    NodeCapacity,
    capacity_warning,
    validate_vmi,
    vmi_demand,
)

from webhook import Obj, make_profile, make_vmi

Mi = 1024**2
Gi = 1024**3

HUGE_2M = {"memory": {"hugepages": {"pages": [{"size": "2Mi", "count": 4096}]}}}


def guaranteed(**domain: Any) -> Obj:
    """A VMI as the mutation leaves it: 4 dedicated vCPUs, 8Gi guaranteed, plus `domain`."""
    both = {"cpu": "4", "memory": "8Gi"}
    base: Obj = {
        "cpu": {"cores": 4, "dedicatedCpuPlacement": True, "isolateEmulatorThread": True},
        "memory": {"guest": "8Gi"},
        "resources": {"requests": dict(both), "limits": dict(both)},
    }
    for key, value in domain.items():
        base[key] = {**base.get(key, {}), **value}
    return make_vmi(base)


def findings(vmi: Obj, /, **profile: Any) -> tuple[list[str], list[str]]:
    return validate_vmi(make_profile(**profile), vmi, namespace_labels={})


def test_a_vmi_as_the_mutation_leaves_it_is_accepted() -> None:
    assert findings(guaranteed()) == ([], [])


@pytest.mark.parametrize(
    ("vmi", "profile", "field", "fix"),
    [
        pytest.param(
            guaranteed(resources={"overcommitGuestOverhead": True}),
            {},
            "spec.domain.resources.overcommitGuestOverhead",
            "set it to false",
            id="overcommitted guest overhead when overcommit is forbidden",
        ),
        pytest.param(
            guaranteed(memory={"guest": "10Gi"}),
            {},
            "spec.domain.memory.guest (10Gi) is above the memory request, "
            "spec.domain.resources.requests.memory (8Gi)",
            "raise the request",
            id="guest memory above the request",
        ),
        pytest.param(
            guaranteed(memory={"guest": "10Gi"}, resources={"requests": {"cpu": "4"}}),
            {},
            "spec.domain.memory.guest (10Gi) is above the memory request, "
            "spec.domain.resources.limits.memory (8Gi)",
            "raise the request",
            id="guest memory above a limit that stands for the request",
        ),
        pytest.param(
            guaranteed(memory={"guest": "2Gi"}, resources={"requests": {"memory": "1536Mi"},
                                                           "limits": {"memory": "1536Mi"}}),
            {},
            "spec.domain.memory.guest (2Gi) is above the memory request, "
            "spec.domain.resources.requests.memory (1536Mi)",
            "raise the request",
            id="guest memory above a request quoted as its author wrote it",
        ),
        pytest.param(
            guaranteed(resources={"limits": {"cpu": "4", "memory": "12Gi"}}),
            {},
            "spec.domain.resources.requests.memory (8Gi) differs from limits.memory (12Gi)",
            "same value",
            id="a memory limit above the request",
        ),
        pytest.param(
            guaranteed(
                cpu={"dedicatedCpuPlacement": None, "isolateEmulatorThread": None},
                resources={"requests": {"cpu": "2", "memory": "8Gi"}},
            ),
            {"vmi": {"dedicatedCpus": False, "isolateEmulatorThread": False}},
            "requests.cpu (2) differs from limits.cpu (4)",
            "same value",
            id="a CPU request below the limit",
        ),
        pytest.param(
            guaranteed(resources={"requests": {"cpu": "3500m", "memory": "8Gi"},
                                  "limits": {"cpu": "3500m", "memory": "8Gi"}}, cpu={"cores": 0}),
            {},
            "spec.domain.resources.requests.cpu is 3500m",
            "ask for a whole number of CPUs",
            id="a fractional CPU request with dedicated CPUs",
        ),
        pytest.param(
            guaranteed(cpu={"cores": 2, "threads": 3}, resources={
                "requests": {"cpu": "6", "memory": "8Gi"},
                "limits": {"cpu": "6", "memory": "8Gi"},
            }),
            {},
            "spec.domain.cpu.threads is 3",
            "use cores instead of threads",
            id="three threads per core with dedicated CPUs",
        ),
        pytest.param(
            guaranteed(resources={"requests": {"cpu": "2", "memory": "8Gi"},
                                  "limits": {"cpu": "2", "memory": "8Gi"}}),
            {},
            "spec.domain.resources.requests.cpu is 2, but the VMI gets dedicated CPUs",
            "set it to 4",
            id="a CPU request unlike the topology with dedicated CPUs",
        ),
        pytest.param(
            guaranteed(cpu={"dedicatedCpuPlacement": False, "isolateEmulatorThread": None}),
            {},
            "spec.domain.cpu.dedicatedCpuPlacement is false",
            "kvtune.io/skip",
            id="dedicated CPUs explicitly off",
        ),
        pytest.param(
            guaranteed(cpu={"isolateEmulatorThread": False}),
            {},
            "spec.domain.cpu.isolateEmulatorThread is false",
            "set it to true",
            id="the emulator thread explicitly shared",
        ),
        pytest.param(
            guaranteed(cpu={"dedicatedCpuPlacement": None}),
            {"vmi": {"dedicatedCpus": False, "isolateEmulatorThread": False}},
            "spec.domain.cpu.isolateEmulatorThread: true needs spec.domain.cpu."
            "dedicatedCpuPlacement: true",
            "remove isolateEmulatorThread",
            id="an isolated emulator thread without dedicated CPUs",
        ),
        pytest.param(
            guaranteed(
                cpu={
                    "dedicatedCpuPlacement": None,
                    "isolateEmulatorThread": None,
                    "numa": {"guestMappingPassthrough": {}},
                }
            ),
            {"vmi": {"dedicatedCpus": False, "isolateEmulatorThread": False}},
            "guestMappingPassthrough needs spec.domain.cpu.dedicatedCpuPlacement: true and "
            "spec.domain.memory.hugepages.pageSize",
            "remove guestMappingPassthrough",
            id="NUMA passthrough without dedicated CPUs or hugepages",
        ),
        pytest.param(
            guaranteed(memory={"hugepages": {"pageSize": "1Gi"}}),
            HUGE_2M,
            "pageSize is 1Gi, but the nodes of HypervisorProfile fast allocate only 2Mi",
            "use one of those sizes",
            id="a hugepage size the nodes do not allocate",
        ),
        pytest.param(
            guaranteed(
                memory={"guest": "1536Mi", "hugepages": {"pageSize": "1Gi"}},
                resources={
                    "requests": {"cpu": "4", "memory": "1536Mi"},
                    "limits": {"cpu": "4", "memory": "1536Mi"},
                },
            ),
            {"memory": {"hugepages": {"pages": [{"size": "1Gi", "count": 8}]}}},
            "spec.domain.memory.guest (1536Mi) sizes the guest, which is backed by 1Gi "
            "hugepages, but is not a whole number of them",
            "multiple of 1Gi",
            id="guest memory not a multiple of the page size",
        ),
        pytest.param(
            make_vmi(
                {"resources": {"requests": {"memory": "1Gi"}}},
                nodeSelector={"kvtune.io/profile": "slow"},
            ),
            {},
            "spec.nodeSelector asks for kvtune.io/profile=slow",
            "remove that nodeSelector entry",
            id="a nodeSelector for another profile",
        ),
    ],
)
def test_a_contradiction_is_refused_naming_the_field_and_the_fix(
    vmi: Obj, profile: Obj, field: str, fix: str
) -> None:
    errors, _ = findings(vmi, **profile)
    assert len(errors) == 1, errors
    assert field in errors[0]
    assert fix in errors[0]


def test_contradictions_are_allowed_when_the_profile_allows_memory_overcommit() -> None:
    vmi = guaranteed(resources={"overcommitGuestOverhead": True}, memory={"guest": "10Gi"})
    errors, warnings = findings(vmi, memory={"allowOvercommit": True})
    assert errors == []
    # The request below the guest leaves no room above it to reserve the floor in, and the
    # pod's limit, set to its request for dedicated CPUs, is below the guest.
    assert len(warnings) == 2 and "memory.vmOverheadFloor" in warnings[0]
    assert "OOM-killed once it uses more than 8.00Gi" in warnings[1]


def test_hugepages_on_a_profile_that_allocates_none_are_only_a_warning() -> None:
    errors, warnings = findings(guaranteed(memory={"hugepages": {"pageSize": "2Mi"}}))
    assert errors == []
    assert "allocates no hugepages" in warnings[0]


def test_audit_mode_reports_what_it_would_refuse_as_warnings() -> None:
    vmi = guaranteed(resources={"overcommitGuestOverhead": True})
    errors, warnings = findings(vmi, mode="Audit")
    assert errors == []
    assert warnings[0].startswith("Audit mode, would be refused: ")
    assert "overcommitGuestOverhead" in warnings[0]


@pytest.mark.parametrize(
    "vmi",
    [
        pytest.param(
            make_vmi({"resources": {"overcommitGuestOverhead": True}}, labels={"tier": "slow"}),
            id="outside the selector",
        ),
        pytest.param(
            make_vmi(
                {"resources": {"overcommitGuestOverhead": True}},
                labels={"tier": "fast"},
                annotations={"kvtune.io/skip": "true"},
            ),
            id="opted out",
        ),
    ],
)
def test_a_vmi_the_profile_does_not_select_is_never_refused(vmi: Obj) -> None:
    assert findings(vmi, vmi={"selector": {"matchLabels": {"tier": "fast"}}}) == ([], [])


def test_an_unreadable_field_is_an_error_not_a_crash() -> None:
    errors, _ = findings(guaranteed(memory={"guest": "eight"}))
    assert errors == [
        "spec.domain.memory.guest: 'eight' is not a Kubernetes quantity: ASCII digits with an "
        "optional fraction, then one suffix (Ki, Mi, Gi, Ti, Pi, Ei; n, u, m, k, M, G, T, P, E; or "
        "e and an integer exponent), without spaces or underscores, e.g. 8Gi, 512Mi or 1500m"]


# The demand of `guaranteed()`: overhead 16 + 220 + 32 + 8 + 32 + 100 = 408Mi (KubeVirt v1.9), and
# 4 CPUs for the vCPUs plus one for the isolated emulator thread.
OVERHEAD = 408 * Mi


@pytest.mark.parametrize(
    ("vmi", "cpu_millis", "memory", "hugepage_size", "hugepages"),
    [
        pytest.param(guaranteed(), 5000, 8 * Gi + OVERHEAD, None, 0, id="guest plus overhead"),
        pytest.param(
            guaranteed(memory={"hugepages": {"pageSize": "2Mi"}}),
            5000,
            OVERHEAD,
            "2Mi",
            8 * Gi,
            id="with hugepages memory holds only the overhead",
        ),
        pytest.param(
            make_vmi({"cpu": {"cores": 2}, "resources": {"requests": {"memory": "1Gi"}}}),
            # 2 vCPUs at KubeVirt's default cpuAllocationRatio of 10
            200,
            # 1Gi + (2 + 220 + 16 + 8 + 32)Mi
            1 * Gi + 278 * Mi,
            None,
            0,
            id="CPUs from the topology and the allocation ratio when none are requested",
        ),
    ],
)
def test_the_demand_is_what_kubevirt_requests_for_the_pod(
    vmi: Obj, cpu_millis: int, memory: int, hugepage_size: str | None, hugepages: int
) -> None:
    demand = vmi_demand(vmi)
    assert (demand.cpu_millis, demand.memory_bytes) == (cpu_millis, memory)
    assert (demand.hugepage_size, demand.hugepages_bytes) == (hugepage_size, hugepages)


def test_no_warning_when_one_node_has_room_including_overhead() -> None:
    nodes = [
        NodeCapacity("small", cpu_millis=64000, memory_bytes=8 * Gi + OVERHEAD - 1),
        NodeCapacity("exact", cpu_millis=5000, memory_bytes=8 * Gi + OVERHEAD),
    ]
    assert capacity_warning(guaranteed(), nodes) is None


def test_a_node_with_room_for_the_guest_but_not_the_overhead_does_not_count() -> None:
    nodes = [NodeCapacity("n1", cpu_millis=64000, memory_bytes=8 * Gi + OVERHEAD - 1)]
    warning = capacity_warning(guaranteed(), nodes)
    assert warning is not None
    assert "needs 5 CPU, 8.40Gi memory including KubeVirt's overhead" in warning
    assert "n1 has 64 CPU, 8.40Gi memory" in warning


def test_hugepages_of_the_vmis_size_are_what_count() -> None:
    vmi = guaranteed(memory={"hugepages": {"pageSize": "1Gi"}})
    wrong_size = NodeCapacity("n1", 8000, 1 * Gi, {"2Mi": 64 * Gi})
    right_size = NodeCapacity("n2", 8000, 1 * Gi, {"1Gi": 8 * Gi})
    assert capacity_warning(vmi, [wrong_size]) is not None
    assert capacity_warning(vmi, [wrong_size, right_size]) is None


def test_no_ready_node_at_all_is_a_warning() -> None:
    warning = capacity_warning(guaranteed(), [])
    assert warning is not None and warning.startswith("no ready node of the profile")


@pytest.mark.parametrize(
    ("kubevirt", "refused"),
    [
        pytest.param(KubeVirtConfig(installed=True), True, id="KubeVirt without the gate"),
        pytest.param(KubeVirtConfig(installed=True, feature_gates=frozenset(
            {"ReservedOverheadMemlock"})), False, id="KubeVirt with the gate"),
        pytest.param(KubeVirtConfig(), False, id="no KubeVirt CR: KubeVirt's admitter judges"),
    ],
)
def test_a_reserved_overhead_is_refused_where_kubevirts_gate_is_known_to_be_off(
    kubevirt: KubeVirtConfig, refused: bool
) -> None:
    vmi = guaranteed(memory={"reservedOverhead": {"addedOverhead": "1Gi"}})
    errors, _ = validate_vmi(make_profile(), vmi, namespace_labels={}, kubevirt=kubevirt)
    assert bool(errors) is refused
    if refused:
        assert "spec.domain.memory.reservedOverhead is set, but KubeVirt refuses it" in errors[0]
        assert "ReservedOverheadMemlock" in errors[0]


STAGE = KubeVirtConfig(installed=True, version="v1.9.0", vm_rollout_strategy="Stage")


def test_under_stage_rollout_a_guest_above_the_authors_limit_is_refused_quoting_both() -> None:
    vmi = guaranteed(memory={"guest": "10Gi"})  # requests = limits = 8Gi

    errors, _ = validate_vmi(make_profile(memory={"allowOvercommit": True}), vmi,
                             namespace_labels={}, kubevirt=STAGE)

    [error] = [e for e in errors if "Stage" in e]
    assert "spec.domain.memory.guest (10Gi) is above spec.domain.resources.limits.memory " \
        "(8Gi)" in error
    assert "vmRolloutStrategy" in error


def test_with_live_update_rollout_a_guest_above_the_limit_is_kubevirts_to_grow() -> None:
    vmi = guaranteed(memory={"guest": "10Gi"})
    config = KubeVirtConfig(installed=True, version="v1.9.0")

    errors, _ = validate_vmi(make_profile(memory={"allowOvercommit": True}), vmi,
                             namespace_labels={}, kubevirt=config)

    assert not [e for e in errors if "Stage" in e]


def test_a_kubevirt_version_that_cannot_be_placed_is_said_on_admission() -> None:
    config = KubeVirtConfig(installed=True, version="v1.9.0-beta.0.40+0123456789abcd")

    _, warnings = validate_vmi(make_profile(), guaranteed(), namespace_labels={},
                               kubevirt=config)

    assert any("counts the larger" in w and "beta.0" in w for w in warnings)


def test_a_zero_memory_request_is_no_request_as_kubevirt_reads_it() -> None:
    vmi = guaranteed(resources={"requests": {"cpu": "4", "memory": "0"}})

    errors, _ = findings(vmi)

    assert not [e for e in errors if "spec.domain.resources.requests.memory" in e]
