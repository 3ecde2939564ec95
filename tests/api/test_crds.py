"""The CRDs in crds/ are generated from the models: stale files fail the build."""

from __future__ import annotations

import pathlib

from kvtune_api import crdgen

CRDS = pathlib.Path(__file__).resolve().parents[2] / "crds"


def test_the_checked_in_crds_match_the_models() -> None:
    rendered = crdgen.render_crds()
    on_disk = {p.name for p in CRDS.glob("*.yaml")}
    assert on_disk == set(rendered), "crds/ holds other files than the models render"
    for name, manifest in rendered.items():
        assert (CRDS / name).read_text() == crdgen.dump(manifest), (
            f"crds/{name} is stale: run `kvtune crds` and commit the result"
        )


def _walk(node: object, path: str = "") -> list[str]:
    """Paths of schema nodes that break the apiserver's structural-schema rules."""
    bad: list[str] = []
    if isinstance(node, dict):
        if "properties" in node and "additionalProperties" in node:
            bad.append(f"{path}: properties with additionalProperties")
        if "anyOf" in node or "$ref" in node:
            bad.append(f"{path}: anyOf/$ref")
        for key in ("properties",):
            for name, child in node.get(key, {}).items():
                bad += _walk(child, f"{path}.{name}")
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                bad += _walk(node[key], f"{path}[{key}]")
    return bad


def test_every_generated_schema_is_structural_and_documented() -> None:
    for name, manifest in crdgen.render_crds().items():
        schema = manifest["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        assert _walk(schema) == [], name
        spec = schema["properties"]["spec"]
        undocumented = [k for k, v in spec["properties"].items() if not v.get("description")]
        assert undocumented == [], f"{name}: spec fields without a description"
