"""Conflicts with KubeVirt's own KSM handler and CPU manager label are reported, with the fix."""

from __future__ import annotations

from kvtune_api.v1alpha1.common import LabelSelector
from kvtune_operator.controller.kubevirt import CPUMANAGER_LABEL, ksm_selector, problems

from .builders import profile

LABELS = {"a": {"ksm": "on", CPUMANAGER_LABEL: "true"}, "b": {}}


def test_kubevirt_without_ksm_configuration_manages_no_ksm() -> None:
    assert ksm_selector({"configuration": {}}) is None


def test_an_empty_ksm_selector_means_every_node() -> None:
    selector = ksm_selector({"configuration": {"ksmConfiguration": {}}})
    assert selector is not None and selector.matches({"any": "node"})


def test_a_ksm_selector_kvtune_cannot_read_is_taken_as_every_node() -> None:
    # KubeVirt's CR checks selectors less strictly than kvtune's models: reading one must not
    # fail the operator's index of it.
    unreadable = {"matchExpressions": [{"key": "bad key!", "operator": "Exists"}]}
    selector = ksm_selector({"configuration": {"ksmConfiguration": {
        "nodeLabelSelector": unreadable}}})
    assert selector is not None and selector.matches({"any": "node"})


def test_ksm_disabled_on_nodes_kubevirt_may_enable_it_is_a_conflict() -> None:
    found = problems(profile(), ["a", "b"], LABELS, LabelSelector(match_labels={"ksm": "on"}))
    assert len(found) == 1
    assert "1 node(s) (a)" in found[0] and "memory.ksm: Unmanaged" in found[0]


def test_ksm_left_unmanaged_is_no_conflict() -> None:
    p = profile(memory={"ksm": "Unmanaged"})
    assert problems(p, ["a"], LABELS, LabelSelector()) == []


def test_dedicated_cpus_on_nodes_without_the_cpumanager_label_are_reported() -> None:
    p = profile(vmi={"namespaceSelector": {}})
    found = problems(p, ["a", "b"], LABELS, None)
    assert len(found) == 1 and "1 node(s) (b)" in found[0]
    assert "cpuManagerPolicy: static" in found[0]


def test_long_node_lists_are_cut_short() -> None:
    p = profile(vmi={"namespaceSelector": {}})
    nodes = [f"n{i}" for i in range(12)]
    [found] = problems(p, nodes, {}, None)
    assert "12 node(s)" in found and "and 7 more" in found
