"""Which VMIs a profile shapes: namespace and VMI selectors, the opt-out, a missing vmi section."""

from __future__ import annotations

import pytest
from kvtune_operator.common.profiles import Profile
from kvtune_operator.webhook.vmi.selection import out_of_scope

from webhook import Obj, make_profile, make_vmi

PROD = {"env": "prod"}


@pytest.mark.parametrize(
    ("vmi_settings", "labels", "namespace_labels", "selected"),
    [
        pytest.param({}, {}, {}, True, id="empty selectors select every VMI"),
        pytest.param({"namespaceSelector": {"matchLabels": PROD}}, {}, PROD, True, id="namespace"),
        pytest.param(
            {"namespaceSelector": {"matchLabels": PROD}}, {}, {"env": "dev"}, False, id="other ns"
        ),
        pytest.param(
            {"selector": {"matchLabels": {"tier": "fast"}}}, {"tier": "fast"}, {}, True, id="label"
        ),
        pytest.param(
            {"selector": {"matchLabels": {"tier": "fast"}}}, {}, {}, False, id="unlabelled VMI"
        ),
        pytest.param(
            {
                "selector": {
                    "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["slow"]}]
                }
            },
            {},
            {},
            True,
            id="NotIn holds for an absent label",
        ),
        pytest.param(
            {"selector": {"matchExpressions": [{"key": "tier", "operator": "Exists"}]}},
            {"tier": "x"},
            {},
            True,
            id="Exists",
        ),
        pytest.param(
            {
                "namespaceSelector": {"matchLabels": PROD},
                "selector": {"matchLabels": {"tier": "fast"}},
            },
            {"tier": "fast"},
            {"env": "dev"},
            False,
            id="both selectors must hold",
        ),
    ],
)
def test_a_vmi_is_selected_by_its_namespace_and_its_labels(
    vmi_settings: Obj, labels: dict[str, str], namespace_labels: dict[str, str], selected: bool
) -> None:
    reason = out_of_scope(make_profile(vmi=vmi_settings), make_vmi(labels=labels), namespace_labels)
    assert (reason is None) is selected


@pytest.mark.parametrize(
    ("value", "selected"),
    [pytest.param("true", False, id="true opts out"), pytest.param("false", True, id="false not")],
)
def test_the_skip_annotation_opts_a_vmi_out(value: str, selected: bool) -> None:
    vmi = make_vmi(annotations={"kvtune.io/skip": value})
    assert (out_of_scope(make_profile(), vmi, {}) is None) is selected


def test_a_profile_without_a_vmi_section_selects_nothing() -> None:
    bare = Profile.from_body({"metadata": {"name": "bare"}, "spec": {"nodeSelector": {}}})
    assert out_of_scope(bare, make_vmi(), {}) == "HypervisorProfile bare has no vmi section"
