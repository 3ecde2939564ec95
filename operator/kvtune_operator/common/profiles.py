"""A profile as the operator and the webhook see it: the validated spec plus the metadata they
act on, and the label that marks the nodes it took.

Why shared: the operator selects nodes with a profile and labels them `PROFILE_LABEL`; the
webhook selects VMIs with the same profile and steers them to nodes with that label. One reading
of a profile and one label name keep the two processes from disagreeing about either."""

from __future__ import annotations

import dataclasses
import typing as t

import pydantic
from kvtune_api.v1alpha1.common import LabelSelector, LabelSelectorRequirement
from kvtune_api.v1alpha1.profile import HypervisorProfileSpec

#: On every node a profile took, naming it: the operator sets it, the webhook's VMIs select it.
PROFILE_LABEL = "kvtune.io/profile"
PAUSE_ANNOTATION = "kvtune.io/paused"
T = t.TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Profile:
    name: str
    uid: str
    generation: int
    spec: HypervisorProfileSpec
    deleting: bool
    problem: str = ""
    """Why the stored spec cannot be read (a profile stored before the schema refused it), naming
    each field; then `spec` is a paused stand-in that selects no node."""
    _cache: dict[str, t.Any] = dataclasses.field(
        default_factory=dict, repr=False, compare=False
    )

    def cached(self, key: str, compute: t.Callable[[], T]) -> T:
        """A value derived from this (immutable) profile, computed once."""
        if key not in self._cache:
            self._cache[key] = compute()
        return t.cast(T, self._cache[key])

    @property
    def paused(self) -> bool:
        return self.spec.paused

    @classmethod
    def from_body(cls, body: t.Mapping[str, t.Any]) -> Profile:
        """Parse a HypervisorProfile as the API returns it (already validated by its schema).

        The pause annotation is folded into spec.paused so that one flag drives every decision.
        """
        meta = body["metadata"]
        problem = ""
        try:
            spec = HypervisorProfileSpec.model_validate(body.get("spec") or {})
        except pydantic.ValidationError as invalid:
            spec, problem = _STAND_IN, _described(invalid)
        if (meta.get("annotations") or {}).get(PAUSE_ANNOTATION) == "true":
            spec = spec.model_copy(update={"paused": True})
        return cls(
            name=meta["name"],
            uid=meta.get("uid", ""),
            generation=int(meta.get("generation") or 0),
            spec=spec,
            deleting=bool(meta.get("deletionTimestamp")),
            problem=problem,
        )


def _described(invalid: pydantic.ValidationError) -> str:
    """Each unreadable field as `spec.<path>: <what is wrong>`, then what to do."""
    fields = [
        "spec." + ".".join(str(part) for part in error["loc"]) + ": " + error["msg"]
        for error in invalid.errors()[:5]
    ]
    return ("; ".join(fields) + ". Correct the profile (the schema now refuses this) and apply "
            "it again; until then its nodes are left as they are")


#: What an unreadable profile stands on: paused, and a selector no node can meet (a key both
#: present and absent), so that it takes no node and changes none.
_NEVER = "kvtune.io/unreadable-profile"
_STAND_IN = HypervisorProfileSpec(
    node_selector=LabelSelector(match_expressions=[
        LabelSelectorRequirement(key=_NEVER, operator="Exists"),
        LabelSelectorRequirement(key=_NEVER, operator="DoesNotExist"),
    ]),
    paused=True,
)
