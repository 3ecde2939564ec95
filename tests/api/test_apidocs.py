"""docs/api.md is rendered from crds/ (`kvtune docs`): a stale file fails the build, and the
rendering says what the apiserver enforces."""

from __future__ import annotations

import pathlib
import typing as t

from kvtune_api import apidocs

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_the_checked_in_api_reference_matches_the_crds() -> None:
    assert (REPO / "docs" / "api.md").read_text() == apidocs.render_files(REPO / "crds"), (
        "docs/api.md is stale: run `make docs` (or `kvtune docs`) and commit the result"
    )


def crd(kind: str, spec: dict[str, t.Any]) -> dict[str, t.Any]:
    schema = {"type": "object", "properties": {"spec": {"type": "object", "properties": spec}}}
    return {"spec": {"group": "kvtune.io", "scope": "Cluster",
                     "names": {"kind": kind, "plural": kind.lower() + "s"},
                     "versions": [{"name": "v1alpha1", "schema": {"openAPIV3Schema": schema}}]}}


def rows(spec: dict[str, t.Any]) -> list[str]:
    return [line for line in apidocs.render([crd("Thing", spec)]).splitlines()
            if line.startswith("| `spec.")]


def test_each_field_of_a_list_item_is_listed_under_the_lists_path() -> None:
    spec = {"pages": {"type": "array", "maxItems": 2, "items": {
        "type": "object", "required": ["size"],
        "properties": {"size": {"type": "string", "enum": ["2Mi", "1Gi"]}}}}}
    assert rows(spec) == [
        "| `spec.pages` | []object |  | At most 2 items. |",
        "| `spec.pages[].size` | string, required |  | One of `2Mi`, `1Gi`. |",
    ]


def test_a_rule_is_shown_with_its_message_and_its_pipes_escaped_for_the_table() -> None:
    spec = {"cpu": {"type": "object", "description": "CPUs.", "x-kubernetes-validations": [
        {"rule": "!self.a || self.b", "message": "a needs b."}]}}
    assert rows(spec) == ["| `spec.cpu` | object |  | CPUs. Rule `!self.a \\|\\| self.b`: "
                          "a needs b. |"]


def test_defaults_are_shown_as_written_and_the_empty_string_as_quotes() -> None:
    spec = {"mode": {"type": "string", "default": "Audit"},
            "message": {"type": "string", "default": ""},
            "rollout": {"type": "object", "default": {"maxUnavailable": 1}},
            "maxUnavailable": {"x-kubernetes-int-or-string": True}}
    assert rows(spec) == [
        "| `spec.maxUnavailable` | integer or string |  |  |",
        '| `spec.message` | string | `""` |  |',
        "| `spec.mode` | string | `Audit` |  |",
        '| `spec.rollout` | object | `{"maxUnavailable":1}` |  |',
    ]


def test_the_kind_people_write_comes_first() -> None:
    text = apidocs.render([crd("HypervisorNodeState", {}), crd("HypervisorProfile", {})])
    assert text.index("## HypervisorProfile") < text.index("## HypervisorNodeState")
