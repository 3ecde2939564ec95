"""Properties of the mutation over generated profiles and VMIs.

Judged by KubeVirt's real schema (`support.kubevirt`, built from ../shared/kubevirt/swagger.json):
the mutation's output is always a VMI KubeVirt accepts; applying it twice equals applying it once;
it never changes a value the VMI's author set (and only raises addedOverhead); outside the
profile's selectors it changes nothing; its patch reproduces its result; and a VMI that makes no
choices of its own passes validation once mutated.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator
from typing import Any

import jsonpatch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from kvtune_operator.common.profiles import Profile
from kvtune_operator.webhook.vmi import KubeVirtConfig
from kvtune_operator.webhook.vmi.mutate import (
    MUTATED_BY_ANNOTATION,
    OVERHEAD_ANNOTATION,
    MutationResult,
    mutate_vmi,
    reservation,
)
from kvtune_operator.webhook.vmi.paths import ADDED_OVERHEAD
from kvtune_operator.webhook.vmi.read import quantity_bytes
from kvtune_operator.webhook.vmi.selection import out_of_scope
from kvtune_operator.webhook.vmi.validate import validate_vmi
from support.kubevirt import validate_vmi as validate_schema

from webhook import Obj, make_profile, make_vmi

SIZES = ["2Mi", "1Gi"]
MEMORY = st.sampled_from(["512Mi", "1Gi", "1536Mi", "2Gi", "8Gi", "1G", "3000M", 1073741824])
CPUS = st.sampled_from(["1", "2", "4", "500m", "1500m", 2])
TOPOLOGY = st.integers(min_value=1, max_value=4)
LABELS = st.dictionaries(st.just("tier"), st.sampled_from(["fast", "slow"]), max_size=1)
NS_LABELS = st.dictionaries(st.just("env"), st.sampled_from(["prod", "dev"]), max_size=1)
RATIOS = st.none() | st.sampled_from(["1.0", "1.5", "2.0", "2.332"])
KUBEVIRTS = st.builds(
    KubeVirtConfig,
    feature_gates=st.sampled_from([frozenset(), frozenset({"ReservedOverheadMemlock"})]),
    overhead_ratio=RATIOS,
)
ENFORCE = st.just("Enforce")
ASSUMPTIONS = settings(deadline=None, max_examples=150)


def some_of(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[Obj]:
    """Objects holding any subset of `fields`."""
    return st.fixed_dictionaries({}, optional=fields)


RESOURCE_LIST = some_of(cpu=CPUS, memory=MEMORY)
INTERFACE_CHOICES: list[Obj] = [{"name": "default", "masquerade": {}}, {"name": "vf", "sriov": {}}]
INTERFACES = st.lists(
    st.sampled_from(INTERFACE_CHOICES), max_size=2, unique_by=lambda i: str(i["name"])
)
DOMAINS = st.fixed_dictionaries(
    {
        "devices": some_of(
            autoattachGraphicsDevice=st.booleans(),
            interfaces=INTERFACES,
            tpm=st.just({}),
        )
    },
    optional={
        "cpu": some_of(
            cores=TOPOLOGY,
            sockets=TOPOLOGY,
            threads=TOPOLOGY,
            dedicatedCpuPlacement=st.booleans(),
            isolateEmulatorThread=st.booleans(),
            numa=st.just({"guestMappingPassthrough": {}}),
        ),
        "memory": some_of(
            guest=MEMORY,
            hugepages=st.fixed_dictionaries({"pageSize": st.sampled_from(SIZES)}),
            reservedOverhead=some_of(addedOverhead=st.sampled_from(["0", "100Mi", "1Gi", "3Gi"])),
        ),
        "resources": some_of(
            requests=RESOURCE_LIST, limits=RESOURCE_LIST, overcommitGuestOverhead=st.booleans()
        ),
    },
)


@st.composite
def vmis(draw: st.DrawFn) -> Obj:
    spec = draw(
        some_of(
            nodeSelector=st.dictionaries(
                st.sampled_from(["disk", "kvtune.io/ready"]), st.sampled_from(["ssd", "true"])
            ),
            architecture=st.sampled_from(["amd64", "arm64"]),
            livenessProbe=st.just({"exec": {"command": ["true"]}}),
        )
    )
    annotations = draw(some_of(**{"kvtune.io/skip": st.sampled_from(["true", "false"])}))
    return make_vmi(draw(DOMAINS), labels=draw(LABELS), annotations=annotations, **spec)


@st.composite
def profiles(draw: st.DrawFn, mode: st.SearchStrategy[str] = ENFORCE) -> Profile:
    dedicated = draw(st.booleans())
    size = draw(st.none() | st.sampled_from(SIZES))
    allocated = draw(st.sets(st.sampled_from(SIZES))) | ({size} if size else set())
    cpu_overcommit = draw(st.booleans())
    return make_profile(
        mode=draw(mode),
        vmi={
            "namespaceSelector": {"matchLabels": draw(NS_LABELS)},
            "selector": {"matchLabels": draw(LABELS)},
            "dedicatedCpus": dedicated,
            "isolateEmulatorThread": dedicated and draw(st.booleans()),
            "hugepageSize": size,
            "numaPassthrough": dedicated and size is not None and draw(st.booleans()),
        },
        memory={
            "allowOvercommit": draw(st.booleans()),
            "vmOverheadFloor": draw(st.sampled_from(["0", "256Mi", "1Gi", "1500Mi", "3Gi"])),
            "hugepages": {"pages": [{"size": s, "count": 8} for s in sorted(allocated)]},
        },
        cpu={"allowOvercommit": cpu_overcommit, "ple": "Required" if cpu_overcommit else "Ignored"},
    )


def leaves(obj: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every (path, value) whose value is not a non-empty object."""
    if isinstance(obj, dict) and obj:
        for key, value in obj.items():
            yield from leaves(value, (*path, key))
    else:
        yield path, obj


def at(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        obj = obj[key]
    return obj


OURS = {
    ("metadata", "annotations", MUTATED_BY_ANNOTATION),
    ("metadata", "annotations", OVERHEAD_ANNOTATION),
}
#: Amounts the mutation may raise (never lower) to reserve the overhead floor.
RAISED = {
    ADDED_OVERHEAD,
    ("spec", "domain", "resources", "requests", "memory"),
    ("spec", "domain", "resources", "limits", "memory"),
}


@dataclasses.dataclass(frozen=True)
class Case:
    """A profile, a VMI, its namespace's labels and what the KubeVirt CR says."""

    profile: Profile
    vmi: Obj
    namespace_labels: dict[str, str]
    kubevirt: KubeVirtConfig

    def mutate(self, vmi: Obj | None = None) -> MutationResult:
        return mutate_vmi(
            self.profile,
            self.vmi if vmi is None else vmi,
            namespace_labels=self.namespace_labels,
            kubevirt=self.kubevirt,
        )


def cases(modes: st.SearchStrategy[str] = ENFORCE) -> st.SearchStrategy[Case]:
    return st.builds(Case, profiles(modes), vmis(), NS_LABELS, KUBEVIRTS)


@ASSUMPTIONS
@given(cases(st.sampled_from(["Enforce", "Audit"])))
def test_the_mutation_always_yields_a_vmi_kubevirts_schema_accepts(case: Case) -> None:
    validate_schema(case.vmi)  # the generator itself writes only valid VMIs
    validate_schema(case.mutate().vmi)


@ASSUMPTIONS
@given(cases())
def test_mutating_twice_is_the_same_as_mutating_once(case: Case) -> None:
    once = case.mutate()
    twice = case.mutate(once.vmi)
    assert twice.vmi == once.vmi
    assert twice.patch == []


@ASSUMPTIONS
@given(cases())
def test_the_mutation_never_changes_a_value_the_author_set_and_only_raises_amounts(
    case: Case,
) -> None:
    result = case.mutate()
    for path, value in leaves(case.vmi):
        after = at(result.vmi, path)
        if path in OURS:
            continue
        if path in RAISED:
            assert quantity_bytes(after, "after") >= quantity_bytes(value, "before")
        elif value == {}:
            assert isinstance(after, dict), path  # an empty object may gain fields, not vanish
        else:
            assert after == value, path


@ASSUMPTIONS
@given(cases())
def test_outside_the_selectors_nothing_changes(case: Case) -> None:
    assume(out_of_scope(case.profile, case.vmi, case.namespace_labels) is not None)
    before = copy.deepcopy(case.vmi)
    result = case.mutate()
    assert result.vmi == before
    assert result.patch == []
    findings = validate_vmi(case.profile, case.vmi, namespace_labels=case.namespace_labels)
    assert findings == ([], [])


@ASSUMPTIONS
@given(cases())
def test_the_patch_applied_to_the_input_gives_the_result(case: Case) -> None:
    result = case.mutate()
    assert jsonpatch.apply_patch(case.vmi, result.patch) == result.vmi


@ASSUMPTIONS
@given(cases())
def test_a_shaped_vmi_reserves_at_least_the_profiles_overhead_floor(case: Case) -> None:
    result = case.mutate()
    # Refused (by either webhook), not selected, or an overcommitted request (below the guest)
    # left alone with a warning from the validation: nothing to reserve.
    errors, warnings = validate_vmi(
        case.profile, result.vmi, namespace_labels=case.namespace_labels, kubevirt=case.kubevirt
    )
    if result.overhead is None or errors or warnings:
        return
    floor = quantity_bytes(case.profile.spec.memory.vm_overhead_floor, "floor")
    assert reservation(result.vmi, case.kubevirt) >= floor


@ASSUMPTIONS
@given(cases())
def test_a_refused_vmi_is_left_alone(case: Case) -> None:
    result = case.mutate()
    if result.refused:
        assert (result.patch, result.vmi) == ([], case.vmi)


@ASSUMPTIONS
@given(
    profiles(),
    st.fixed_dictionaries(
        # KubeVirt pins at most two threads per core: more is a choice of the author's.
        {"cores": TOPOLOGY},
        optional={"sockets": TOPOLOGY, "threads": st.integers(min_value=1, max_value=2)},
    ),
    st.sampled_from(["1Gi", "2Gi", "8Gi"]),
    st.sampled_from(["requests", "limits", "guest"]),
    KUBEVIRTS,
)
def test_a_vmi_that_makes_no_choices_of_its_own_passes_validation_once_mutated(
    profile: Profile, cpu: Obj, memory: str, where: str, kubevirt: KubeVirtConfig
) -> None:
    domain: Obj = {"cpu": cpu}
    if where == "guest":
        domain["memory"] = {"guest": memory}
    else:
        domain["resources"] = {where: {"memory": memory}}
    vmi = make_vmi(domain, labels={"tier": "fast"})
    namespace_labels = {"env": "prod"}
    shaped = mutate_vmi(profile, vmi, namespace_labels=namespace_labels, kubevirt=kubevirt)
    errors, _ = validate_vmi(profile, shaped.vmi, namespace_labels=namespace_labels,
                             kubevirt=kubevirt)
    assert (shaped.refused, errors) == ([], [])
