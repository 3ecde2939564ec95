"""Label selectors match as Kubernetes matches them (k8s.io/apimachinery/pkg/labels)."""

from __future__ import annotations

import typing as t

import pytest
from kvtune_api.v1alpha1.common import LabelSelector

LABELS = {"role": "hv", "zone": "a"}

CASES: list[tuple[str, dict[str, t.Any], bool]] = [
    ("an empty selector selects everything", {}, True),
    ("matching matchLabels select", {"matchLabels": {"role": "hv"}}, True),
    ("a differing matchLabels value does not select", {"matchLabels": {"role": "db"}}, False),
    ("a missing matchLabels key does not select", {"matchLabels": {"rack": "1"}}, False),
    ("In with the value selects",
     {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}, True),
    ("In on an absent key does not select",
     {"matchExpressions": [{"key": "rack", "operator": "In", "values": ["1"]}]}, False),
    ("NotIn with the value does not select",
     {"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]}, False),
    ("NotIn on an absent key selects",
     {"matchExpressions": [{"key": "rack", "operator": "NotIn", "values": ["1"]}]}, True),
    ("Exists on a present key selects",
     {"matchExpressions": [{"key": "role", "operator": "Exists"}]}, True),
    ("DoesNotExist on a present key does not select",
     {"matchExpressions": [{"key": "role", "operator": "DoesNotExist"}]}, False),
    ("labels and expressions must all hold",
     {"matchLabels": {"role": "hv"},
      "matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}, False),
]


@pytest.mark.parametrize(("selector", "expected"), [(s, e) for _, s, e in CASES],
                         ids=[n for n, _, _ in CASES])
def test_selector_matching(selector: dict[str, t.Any], expected: bool) -> None:
    assert LabelSelector.model_validate(selector).matches(LABELS) is expected
