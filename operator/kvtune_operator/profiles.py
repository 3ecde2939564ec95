"""A profile as the operator sees it: the validated spec plus the metadata it acts on."""

from __future__ import annotations

import dataclasses
import typing as t

from kvtune_api.v1alpha1.profile import HypervisorProfileSpec

PAUSE_ANNOTATION = "kvtune.io/paused"
T = t.TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Profile:
    name: str
    uid: str
    generation: int
    spec: HypervisorProfileSpec
    deleting: bool
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
        spec = HypervisorProfileSpec.model_validate(body.get("spec") or {})
        if (meta.get("annotations") or {}).get(PAUSE_ANNOTATION) == "true":
            spec = spec.model_copy(update={"paused": True})
        return cls(
            name=meta["name"],
            uid=meta.get("uid", ""),
            generation=int(meta.get("generation") or 0),
            spec=spec,
            deleting=bool(meta.get("deletionTimestamp")),
        )
