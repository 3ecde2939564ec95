"""The suggested profile as YAML with a comment above each choice saying why.

ruamel.yaml writes comments attached to keys, which PyYAML cannot; the output stays plain YAML
that `kubectl apply -f` and the apiserver take as it is.
"""

from __future__ import annotations

import io
import textwrap
import typing as t
from collections.abc import Sequence

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from .suggest import Suggestion

WIDTH = 100


def _commented(value: t.Any) -> t.Any:
    if isinstance(value, dict):
        out = CommentedMap()
        for key, item in value.items():
            out[key] = _commented(item)
        return out
    if isinstance(value, list):
        return CommentedSeq([_commented(item) for item in value])
    return value


def _wrapped(lines: Sequence[str], column: int) -> str:
    width = WIDTH - column - 2
    return "\n".join(part for line in lines
                     for part in textwrap.wrap(line, width, break_long_words=False,
                                                 break_on_hyphens=False))


def render(suggestion: Suggestion, header: Sequence[str]) -> str:
    """The manifest with its reasons as comments, `header` lines first."""
    doc = _commented(suggestion.manifest)
    spec = doc["spec"]
    notes: dict[tuple[str | int, ...], list[str]] = {}
    for path, lines in suggestion.why.items():
        # A reason for something absent (a section left out whole) goes to its nearest
        # ancestor that is there (one with none to spec itself), naming the section.
        missing: list[str] = []
        while path and _find(spec, path) is None:
            missing.insert(0, str(path[-1]))
            path = path[:-1]
        prefix = ".".join(missing) + ": " if missing else ""
        notes.setdefault(path, []).extend(prefix + line for line in lines)
    for path, lines in notes.items():
        if not path:
            doc.yaml_set_comment_before_after_key("spec", before=_wrapped(lines, 0), indent=0)
            continue
        parent = _find(spec, path[:-1])
        column = 2 * len(path)
        parent.yaml_set_comment_before_after_key(path[-1], before=_wrapped(lines, column),
                                                 indent=column)
    doc.yaml_set_start_comment(_wrapped(header, 0))
    yaml = YAML()
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096  # values are never folded; the comments are wrapped above
    out = io.StringIO()
    yaml.dump(doc, out)
    return out.getvalue()


def _find(spec: CommentedMap, path: tuple[str | int, ...]) -> t.Any:
    here: t.Any = spec
    for key in path:
        if not isinstance(here, dict) or key not in here:
            return None
        here = here[key]
    return here
