"""Which profile each node belongs to: the pure core of the operator's reconcile.

A node selected by exactly one profile belongs to it. A node selected by several is a conflict:
none of them may change it, and each reports it, because silently picking one would let the
order of objects in etcd decide how a production host is configured.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from kvtune_api.v1alpha1.common import LabelSelector


@dataclasses.dataclass(frozen=True)
class Assignment:
    """Nodes per profile and the nodes that more than one profile selects."""

    nodes: Mapping[str, frozenset[str]]
    conflicts: Mapping[str, tuple[str, ...]]

    def conflicts_of(self, profile: str) -> dict[str, tuple[str, ...]]:
        """Conflicting nodes this profile selects, with the other profiles involved."""
        return {
            node: tuple(p for p in profiles if p != profile)
            for node, profiles in self.conflicts.items()
            if profile in profiles
        }


def assign(
    selectors: Mapping[str, LabelSelector], node_labels: Mapping[str, Mapping[str, str]]
) -> Assignment:
    """Assign nodes (name -> labels) to profiles (name -> nodeSelector)."""
    selected: dict[str, list[str]] = {}
    for profile in sorted(selectors):
        for node, labels in node_labels.items():
            if selectors[profile].matches(labels):
                selected.setdefault(node, []).append(profile)
    nodes: dict[str, set[str]] = {p: set() for p in selectors}
    conflicts: dict[str, tuple[str, ...]] = {}
    for node, profiles in selected.items():
        if len(profiles) == 1:
            nodes[profiles[0]].add(node)
        else:
            conflicts[node] = tuple(profiles)
    return Assignment({p: frozenset(n) for p, n in nodes.items()}, conflicts)
