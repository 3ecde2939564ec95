"""Transparent hugepages: the kernel's THP mode as the profile wants it."""

from __future__ import annotations

import typing as t

from ..base import (
    Draft,
    Feature,
    PlanInputs,
)
from .probe import THP

if t.TYPE_CHECKING:
    from kvtune_api.v1alpha1.nodestate import (
        HypervisorNodeStateSpec,
    )

THP_ENABLED = f"{THP}/enabled"


def _thp(mode: str, now: str | None, out: Draft) -> None:
    if mode == "Unmanaged" or now == mode:
        return
    if now is None:
        if mode != "never":  # a kernel without THP already never uses it
            out.error("THP", "THPUnavailable", (
                f"memory.transparentHugepages is {mode}, but {THP_ENABLED} is missing or "
                "unreadable: this kernel has no transparent hugepages; set it to Unmanaged"))
        return
    out.step("sysfs", "thp", "THP", THP_ENABLED, now, mode,
             f"memory.transparentHugepages is {mode}")


class Thp(Feature[t.Any, None]):
    condition = "THP"

    def plan(self, inputs: PlanInputs, facts: None, out: Draft) -> None:
        _thp(inputs.spec.host.memory.transparent_hugepages,
             inputs.host.memory.transparent_hugepage, out)

    def unmanaged(self, spec: HypervisorNodeStateSpec) -> str | None:
        return ("spec.host.memory.transparentHugepages is Unmanaged"
                if spec.host.memory.transparent_hugepages == "Unmanaged" else None)


FEATURE = Thp()
