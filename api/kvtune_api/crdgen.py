"""Renders the CustomResourceDefinitions from the pydantic models (the single source of the API).

`kvtune crds` writes them to crds/; a test regenerates them and fails when the files are stale.
"""

from __future__ import annotations

import pathlib
import typing as t

import yaml
from kube_custom_resource.registry import CustomResourceRegistry

from .v1alpha1 import API_GROUP, HypervisorNodeState, HypervisorProfile

CATEGORIES = ["kvtune"]


def _drop_null_defaults(node: t.Any) -> t.Any:
    """Remove `default: null`, which optional fields would otherwise carry.

    The apiserver would store an explicit null for every absent optional field, which clutters
    `kubectl get -o yaml` and looks like drift to GitOps tools.
    """
    if isinstance(node, dict):
        return {
            k: _drop_null_defaults(v)
            for k, v in node.items()
            if not (k == "default" and v is None)
        }
    if isinstance(node, list):
        return [_drop_null_defaults(v) for v in node]
    return node


def render_crds() -> dict[str, dict[str, t.Any]]:
    """CRD manifests by file name, with schema defaults kept (defaults live in the schema)."""
    registry = CustomResourceRegistry(API_GROUP, CATEGORIES)
    for model in (HypervisorProfile, HypervisorNodeState):
        registry.register_model(model)
    out: dict[str, dict[str, t.Any]] = {}
    for crd in registry:
        manifest = _drop_null_defaults(crd.kubernetes_resource(include_defaults=True))
        out[f"{crd.plural_name}.{crd.api_group}.yaml"] = manifest
    return out


def dump(manifest: dict[str, t.Any]) -> str:
    header = "# Generated from api/kvtune_api by `kvtune crds`; do not edit by hand.\n"
    return header + yaml.safe_dump(manifest, sort_keys=True, width=100)


def write_crds(directory: pathlib.Path) -> list[pathlib.Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, manifest in render_crds().items():
        path = directory / name
        path.write_text(dump(manifest))
        written.append(path)
    return written
