"""docs/api.md, the API reference, rendered from the CRDs (`kvtune docs`).

Why from the CRDs rather than the models: the CRD schema is what the apiserver enforces and what
`kubectl explain` shows, defaults and CEL rules included, so the reference documents exactly
that. crds/ is itself generated from the models (`kvtune crds`), and a test fails when either
file is stale. One table per kind and section: every field by its path (`a.b[].c` for the items
of a list), its type, its default, its description and the validation the apiserver applies.
"""

from __future__ import annotations

import json
import pathlib
import typing as t
from collections.abc import Iterator, Mapping, Sequence

import yaml

Schema = Mapping[str, t.Any]
#: The kind a person writes comes first; any other kind follows by name.
ORDER = ("HypervisorProfile", "HypervisorNodeState")
HEADER = """# API reference

Generated from [`crds/`](../crds/) by `kvtune docs` (`make docs`); do not edit by hand. The CRDs
are generated from the models in `api/kvtune_api/` (`kvtune crds`). `kubectl explain` shows the
same descriptions.

A field path reads `a.b[].c` for field `c` of each item of the list `a.b`. Defaults are applied
by the apiserver when a field is left out; validation is enforced by the apiserver on every
write, and a rule's message is what `kubectl apply` prints when it fails.
"""


def render_files(directory: pathlib.Path) -> str:
    """The reference for the CRDs in `directory` (crds/: every *.yaml is one CRD)."""
    return render([yaml.safe_load(path.read_text()) for path in directory.glob("*.yaml")])


def render(crds: Sequence[Schema]) -> str:
    """The reference for `crds` (CustomResourceDefinition manifests)."""
    kinds = sorted(crds, key=lambda crd: _rank(crd["spec"]["names"]["kind"]))
    contents = [f"- [{k['spec']['names']['kind']}](#{k['spec']['names']['kind'].lower()})"
                for k in kinds]
    return "\n".join([HEADER, *contents, "", *(_kind(crd) for crd in kinds)])


def _rank(kind: str) -> tuple[int, str]:
    return (ORDER.index(kind) if kind in ORDER else len(ORDER), kind)


def _kind(crd: Schema) -> str:
    spec = crd["spec"]
    names = spec["names"]
    [version] = spec["versions"]
    schema = version["schema"]["openAPIV3Schema"]
    short = ", ".join(f"`{n}`" for n in names.get("shortNames", []))
    lines = [
        f"## {names['kind']}",
        "",
        f"`{spec['group']}/{version['name']}`, {spec['scope'].lower()}-scoped; "
        f"`kubectl get {names['plural']}`" + (f" (short: {short})" if short else "") + ".",
        "",
        _cell(schema.get("description", "")),
        "",
    ]
    columns = version.get("additionalPrinterColumns", [])
    if columns:
        lines += ["Columns of `kubectl get`: " + ", ".join(
            f"{c['name']} (`{c['jsonPath']}`)" for c in columns) + ".", ""]
    for section in ("spec", "status"):
        node = schema.get("properties", {}).get(section)
        if node is None:
            continue
        lines += [f"### {names['kind']} {section}", "", _cell(node.get("description", "")), "",
                  "| Field | Type | Default | Description |", "|---|---|---|---|"]
        lines += [_row(path, field, required) for path, field, required in
                  _fields(node, section)]
        lines.append("")
    return "\n".join(lines)


def _fields(node: Schema, path: str) -> Iterator[tuple[str, Schema, bool]]:
    """(path, schema, required) of every field below `node`, depth first, by name."""
    required = set(node.get("required", []))
    for name, field in sorted(node.get("properties", {}).items()):
        child = f"{path}.{name}"
        yield child, field, name in required
        yield from _fields(field, child)
        items = field.get("items")
        if isinstance(items, Mapping):
            yield from _fields(items, f"{child}[]")


def _row(path: str, field: Schema, required: bool) -> str:
    type_ = _type(field) + (", required" if required else "")
    default = f"`{_compact(field['default'])}`" if "default" in field else ""
    text = " ".join(filter(None, [field.get("description", ""), *_rules(field)]))
    return f"| `{path}` | {type_} | {_cell(default)} | {_cell(text)} |"


def _type(field: Schema) -> str:
    if field.get("x-kubernetes-int-or-string"):
        return "integer or string"
    kind = field.get("type", "")
    if kind == "array":
        return "[]" + _type(field.get("items") or {})
    if kind == "object" and isinstance(field.get("additionalProperties"), Mapping):
        return "map[string]" + _type(field["additionalProperties"])
    if "format" in field:
        return f"{kind} ({field['format']})"
    return str(kind)


def _rules(field: Schema) -> list[str]:
    """The validation of a field, in words; a list's item constraints are prefixed "Each item"."""
    rules = _constraints(field)
    items = field.get("items")
    if isinstance(items, Mapping):
        rules += [f"Each item: {rule}" for rule in _constraints(items)]
    return rules


def _constraints(field: Schema) -> list[str]:
    found = []
    if "enum" in field:
        found.append("One of " + ", ".join(f"`{v}`" for v in field["enum"]) + ".")
    for key, words in (("minimum", "At least"), ("maximum", "At most"),
                       ("minLength", "Minimum length {}"), ("maxLength", "Maximum length {}"),
                       ("minItems", "At least {} items"), ("maxItems", "At most {} items")):
        if key in field:
            found.append((words.format(field[key]) if "{}" in words
                          else f"{words} {field[key]}") + ".")
    if "pattern" in field:
        found.append(f"Matches `{field['pattern']}`.")
    for rule in field.get("x-kubernetes-validations", []):
        message = rule.get("message") or "the rule must hold"
        found.append(f"Rule `{rule['rule']}`: {message.rstrip('.')}.")
    return found


def _compact(value: object) -> str:
    """A default as written in YAML: a word bare, anything else (the empty string too) as JSON."""
    if isinstance(value, str) and value:
        return value
    return json.dumps(value, separators=(",", ":"))


def _cell(text: str) -> str:
    """Text fit for one table cell (and for a paragraph): one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")
