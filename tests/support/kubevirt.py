"""KubeVirt's real API schema, for the API server under test and for local validation.

Why: kvtune mutates VirtualMachineInstances. A mutation that produces a VMI KubeVirt would refuse
must fail our tests, judged by KubeVirt's own published schema rather than one written here. The
schema comes from `../shared/kubevirt/swagger.json` (OpenAPI v2, relative to the repository root)
and is turned into:

- structural `openAPIV3Schema`s for VirtualMachineInstance / VirtualMachine CRDs that a real
  kube-apiserver accepts (`kubevirt_crds()`), and
- a JSON Schema for `jsonschema` (`vmi_json_schema()`, `validate_vmi()`) that judges like the
  apiserver with `fieldValidation=Strict`: unknown fields are errors, not silently pruned, and
  fields set to null count as absent.

The conversion keeps what validates (type, properties, items, additionalProperties, required, enum,
format, nullable, list and map types) and drops what does not (descriptions, defaults, patch
strategies). Defaults are dropped on purpose: the server would fill them in, and tests must see the
object exactly as our code wrote it.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import jsonschema

Schema = dict[str, Any]

REPO_ROOT = Path(__file__).resolve().parents[2]
SWAGGER_PATH = REPO_ROOT.parent / "shared" / "kubevirt" / "swagger.json"

GROUP = "kubevirt.io"
VERSION = "v1"
# Marks CRDs installed by these helpers, so that a test run against an existing cluster replaces
# its own earlier copy but never the CRDs of a real KubeVirt installation.
MANAGED_BY_LABEL = {"app.kubernetes.io/managed-by": "kvtune-tests"}

_REF_PREFIX = "#/definitions/"
_INT_OR_STRING: Schema = {"x-kubernetes-int-or-string": True}
# An object whose content the apiserver keeps as sent, for nested ObjectMeta (a VM's template
# metadata must keep its labels, which a bare `type: object` would prune), opaque payloads, and
# the point where a recursive type would otherwise expand forever.
_OPAQUE_OBJECT: Schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
_SPECIAL: dict[str, Schema] = {
    "k8s.io.apimachinery.pkg.api.resource.Quantity": _INT_OR_STRING,
    "k8s.io.apimachinery.pkg.util.intstr.IntOrString": _INT_OR_STRING,
    "k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta": _OPAQUE_OBJECT,
    "k8s.io.apimachinery.pkg.runtime.RawExtension": _OPAQUE_OBJECT,
}
_NUMERIC = {"integer", "number"}
# Structural schema keys copied as they are; everything else (description, default,
# x-kubernetes-patch-*) is dropped.
_KEPT = ("format", "enum", "nullable", "x-kubernetes-map-type")


class VMISchemaError(ValueError):
    """A VirtualMachineInstance does not match KubeVirt's schema."""


@functools.cache
def _definitions() -> Mapping[str, Schema]:
    try:
        document = json.loads(SWAGGER_PATH.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"KubeVirt's swagger.json is not at {SWAGGER_PATH}; the tests expect the shared "
            "reference data next to the repository (../shared/kubevirt/swagger.json)."
        ) from None
    definitions: dict[str, Schema] = document["definitions"]
    return definitions


def _convert(node: Schema, expanding: tuple[str, ...]) -> Schema:
    """One swagger schema node as a structural schema node; `expanding` holds the definitions
    being expanded on the way here, to cut recursion."""
    if "$ref" in node:
        name = node["$ref"].removeprefix(_REF_PREFIX)
        if name in _SPECIAL:
            return dict(_SPECIAL[name])
        if name in expanding:
            return dict(_OPAQUE_OBJECT)
        return _convert(_definitions()[name], (*expanding, name))

    out: Schema = {}
    kind = node.get("type")
    if isinstance(kind, list):
        # OpenAPI v2 as KubeVirt writes it: ["string", "null"] for nullable timestamps, and
        # ["string", "number"] for an IntOrString port; structural schemas allow one type.
        non_null = [t for t in kind if t != "null"]
        if "string" in non_null and _NUMERIC & set(non_null):
            out.update(_INT_OR_STRING)
        else:
            (out["type"],) = non_null
        if "null" in kind:
            out["nullable"] = True
    elif kind is not None:
        out["type"] = kind
    out.update({key: node[key] for key in _KEPT if key in node})

    if "properties" in node:
        out["properties"] = {
            name: _convert(child, expanding) for name, child in node["properties"].items()
        }
        if "required" in node:
            out["required"] = list(node["required"])
    elif isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = _convert(node["additionalProperties"], expanding)
    if "items" in node:
        out["items"] = _convert(node["items"], expanding)
        out.update(_list_type(node, out["items"]))
    return out


def _list_type(node: Schema, items: Schema) -> Schema:
    list_type = node.get("x-kubernetes-list-type")
    if list_type in ("atomic", "set"):
        return {"x-kubernetes-list-type": list_type}
    keys = node.get("x-kubernetes-list-map-keys", [])
    # The apiserver requires map keys to be required or defaulted; with defaults dropped, a map
    # list whose keys are optional would make the whole CRD invalid, so it becomes a plain list.
    if list_type == "map" and set(keys) <= set(items.get("required", [])):
        return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": keys}
    return {}


@functools.cache
def _structural(definition: str) -> Schema:
    schema = _convert({"$ref": _REF_PREFIX + definition}, ())
    # At the root the apiserver owns metadata and rejects any schema for it beyond name rules.
    schema["properties"]["metadata"] = {"type": "object"}
    return schema


def structural_schema(definition: str) -> Schema:
    """The CRD `openAPIV3Schema` for a swagger definition, e.g. `v1.VirtualMachineInstance`."""
    return copy.deepcopy(_structural(definition))


def _crd(kind: str, plural: str, short_names: list[str]) -> Schema:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}", "labels": dict(MANAGED_BY_LABEL)},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short_names,
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": structural_schema(f"{VERSION}.{kind}")},
                    "subresources": {"status": {}},
                }
            ],
        },
    }


def kubevirt_crds() -> list[Schema]:
    """CRDs for virtualmachineinstances.kubevirt.io and virtualmachines.kubevirt.io."""
    return [
        _crd("VirtualMachineInstance", "virtualmachineinstances", ["vmi", "vmis"]),
        _crd("VirtualMachine", "virtualmachines", ["vm", "vms"]),
    ]


def _to_json_schema(node: Schema) -> Schema:
    """A structural schema node as JSON Schema, strict about unknown fields like the apiserver
    with fieldValidation=Strict."""
    if node.get("x-kubernetes-int-or-string"):
        return {"anyOf": [{"type": "integer"}, {"type": "string"}]}
    out: Schema = {k: v for k, v in node.items() if k in ("type", "format", "enum", "required")}
    if node.get("nullable"):
        out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    if "properties" in node:
        out["properties"] = {k: _to_json_schema(v) for k, v in node["properties"].items()}
    if "additionalProperties" in node:
        out["additionalProperties"] = _to_json_schema(node["additionalProperties"])
    elif node.get("type") == "object" and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    if "items" in node:
        out["items"] = _to_json_schema(node["items"])
    if node.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    return out


@functools.cache
def _vmi_json_schema() -> Schema:
    schema = _to_json_schema(_structural(f"{VERSION}.VirtualMachineInstance"))
    # The apiserver fills in and checks metadata itself; any object is acceptable here.
    schema["properties"]["metadata"] = {"type": "object"}
    return schema


def vmi_json_schema() -> Schema:
    """JSON Schema (draft 2020-12 compatible) for a VirtualMachineInstance object."""
    return copy.deepcopy(_vmi_json_schema())


@functools.cache
def _vmi_validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(_vmi_json_schema())


def _problems(error: jsonschema.ValidationError) -> list[str]:
    path = error.json_path.removeprefix("$").removeprefix(".")
    if error.validator == "required":
        # Named like the apiserver names it: by the missing field's own path.
        prefix = f"{path}." if path else ""
        # jsonschema types both as "Any or unset"; for "required" they are JSON: the schema's list
        # of names and the object judged.
        required = cast(list[str], error.validator_value)
        judged = cast(dict[str, Any], error.instance)
        missing = [name for name in required if name not in judged]
        return [f"{prefix}{name}: Required value" for name in missing]
    return [f"{path or '(root)'}: {error.message}"]


def _without_null_fields(value: Any) -> Any:
    # The apiserver drops object fields (and map entries) set to null before validating, as Go
    # decodes them to the zero value; a null list item, though, is an error there too.
    if isinstance(value, Mapping):
        return {k: _without_null_fields(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_null_fields(v) for v in value]
    return value


def validate_vmi(obj: Mapping[str, Any]) -> None:
    """Raises VMISchemaError naming every field of `obj` that KubeVirt's schema rejects, e.g.
    `spec.domain.cpu.cores: 'many' is not of type 'integer'`."""
    errors = _vmi_validator().iter_errors(_without_null_fields(obj))
    problems = sorted({p for e in errors for p in _problems(e)})
    if problems:
        name = obj.get("metadata", {}).get("name", "(unnamed)")
        raise VMISchemaError(
            f"VirtualMachineInstance {name!r} does not match KubeVirt's schema ({SWAGGER_PATH}):\n"
            + "\n".join(f"  {p}" for p in problems)
        )


def minimal_vmi(name: str, namespace: str = "default") -> dict[str, Any]:
    """The smallest VirtualMachineInstance KubeVirt's schema accepts, to build test cases on."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "domain": {
                "devices": {},
                "resources": {"requests": {"memory": "64Mi"}},
            }
        },
    }
