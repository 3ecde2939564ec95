"""The Feature protocol: what one host feature module gives the feature-blind engine.

A host feature (KSM, hugepages, SR-IOV, ...) is one module or package under features/, holding
everything about it: how it is probed and judged, what the planner wants changed, and the hooks
by which it tells the engine what is special about its writes (their order, what must wait, what
is retried, how its journal entries are restored, what the report prints, which NFD labels it
publishes). The engine (engine/) runs every registered feature the same way and never names one,
so adding a feature is one module plus one line in features/__init__.py's FEATURES (see
docs/architecture.md), as TuneD's plugins and Node Feature Discovery's sources are.

Every hook has a default that does nothing, so a feature overrides only what it has. `plan`,
`check`, `unmanaged`, `settled`, `sequence` and `labels` must be pure; `probe`, `read`, `hold`
and `restage` read the host (never write it: only the engine writes, through journaled steps).
"""

from __future__ import annotations

import datetime
import typing as t
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import pydantic
from kvtune_api.features import ConditionFeature, FeatureName, ProbeFeature
from kvtune_api.v1alpha1.common import ConditionStatus
from kvtune_api.v1alpha1.host import HostReport, Problem

from ..host.hostfs import HostFS, ProcessTable
from ..host.systemd import Systemd
from .page import Page

if t.TYPE_CHECKING:
    from kvtune_api.v1alpha1.nodestate import (
        Disruption,
        HypervisorNodeStateSpec,
        HypervisorNodeStateStatus,
        PlannedStep,
        StepResult,
    )

__all__ = [
    "Backoff", "ConditionFeature", "Draft", "Feature", "FeatureName", "Finding", "Kind",
    "NodeMeta", "Page", "Plan", "PlanInputs", "ProbeFeature", "Settled", "Step", "stages_boot",
]

#: How a step's target is written (engine/change.py): sysfs/procfs values (written under a
#: deadline and read back), regular files (replaced atomically), systemd units (values like
#: "disabled,inactive"), the reboot request, boot arguments (bootloader.py), and the drivers of
#: a PF's VFs, all or nothing (pcidriver.py).
Kind = t.Literal["sysfs", "file", "unit", "reboot", "bootargs", "pcidriver"]

Found = t.TypeVar("Found", bound=pydantic.BaseModel)
Facts = t.TypeVar("Facts")
Record = t.TypeVar("Record", bound=pydantic.BaseModel)


@dataclass(frozen=True)
class NodeMeta:
    """The node's labels and annotations, passed in by the agent process (the planners' only
    view of the cluster)."""

    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Finding:
    """Something a planner found that no step fixes."""

    #: The condition it belongs to.
    feature: ConditionFeature
    #: Error: the node cannot meet the spec (Degraded). Pending: a change is made but takes
    #: effect only after a reboot. Warning: worth knowing, not failing.
    severity: t.Literal["Error", "Pending", "Warning"]
    #: CamelCase, for the condition's reason.
    reason: str
    message: str


@dataclass(frozen=True)
class Step:
    """One change: `planned` is what status shows, `kind` how it is made (engine/change.py)."""

    kind: Kind
    planned: PlannedStep


@dataclass(frozen=True)
class Plan:
    """The steps that move the host toward its spec, and the findings no step fixes."""

    steps: tuple[Step, ...] = ()
    findings: tuple[Finding, ...] = ()
    #: Status fields a feature fills from its plan (e.g. "luns", "macvtap"): field -> items.
    published: Mapping[str, tuple[t.Any, ...]] = field(default_factory=dict)

    @property
    def reboot_pending(self) -> bool:
        """A change is staged on the host and only a reboot completes it."""
        return any(finding.severity == "Pending" for finding in self.findings)

    def of(self, feature: ConditionFeature) -> Plan:
        """The part of the plan that is `feature`'s."""
        return Plan(tuple(s for s in self.steps if s.planned.feature == feature),
                    tuple(f for f in self.findings if f.feature == feature), self.published)


@dataclass(frozen=True)
class PlanInputs:
    """What every planner sees: the spec, the probe report and the node's metadata."""

    spec: HypervisorNodeStateSpec
    host: HostReport
    node: NodeMeta = NodeMeta()


class Draft:
    """A plan under construction: a planner adds its steps, findings and published items."""

    def __init__(self) -> None:
        self.steps: list[Step] = []
        self.findings: list[Finding] = []
        self.published: dict[str, list[t.Any]] = {}

    def step(
        self, kind: Kind, step_id: str, feature: ConditionFeature, path: str, current: str,
        desired: str, reason: str, disruption: Disruption = "Live",
    ) -> None:
        from kvtune_api.v1alpha1.nodestate import PlannedStep
        self.steps.append(Step(kind, PlannedStep(
            id=step_id, feature=feature, path=path, current=current, desired=desired,
            reason=reason, disruption=disruption,
        )))

    def error(self, feature: ConditionFeature, reason: str, message: str) -> None:
        self.findings.append(Finding(feature, "Error", reason, message))

    def warn(self, feature: ConditionFeature, reason: str, message: str) -> None:
        self.findings.append(Finding(feature, "Warning", reason, message))

    def find(self, required: bool, feature: ConditionFeature, reason: str, message: str) -> None:
        (self.error if required else self.warn)(feature, reason, message)

    def publish(self, status_field: str, *items: t.Any) -> None:
        """Items for a status field only this feature fills (HypervisorNodeStateStatus's
        python name, e.g. "luns"); the engine sets the field from them."""
        self.published.setdefault(status_field, []).extend(items)

    def done(self) -> Plan:
        return Plan(tuple(self.steps), tuple(self.findings),
                    {name: tuple(items) for name, items in self.published.items()})


#: A condition's (status, reason, message) when the feature is managed and nothing is left to do.
Settled = tuple[ConditionStatus, str, str]


@dataclass(frozen=True)
class Backoff(t.Generic[Record]):
    """A write the kernel refuses or honours only in part, asked again at growing intervals
    (engine/retry.py): the one retry mechanism, declared by the feature whose steps need it.

    The engine keeps the records in the status field `status_field` (a list of `Record`, each
    with step, wanted, attempts, last_attempt and next_attempt), holds the steps whose next
    attempt is still to come, and replaces them with `findings`.
    """

    #: HypervisorNodeStateStatus's python field holding the records, e.g. "sriov_retries".
    status_field: str
    #: The steps it applies to.
    applies: Callable[[PlannedStep], bool]
    #: A result that counts an attempt (a Failed write; for a pool, any write that was made).
    counts: Callable[[StepResult], bool]
    #: The record of `step` after `attempts` attempts, the last at `now` with `result`.
    record: Callable[[PlannedStep, StepResult, int, datetime.datetime, datetime.datetime,
                      HostReport], Record]
    #: What the held records say, as findings of the feature.
    findings: Callable[[list[Record]], list[Finding]]
    #: Held after the features' `restage` hooks rather than before (boot staging is planned by
    #: one, from the other back-offs' records).
    late: bool = False


class Feature(t.Generic[Found, Facts]):
    """One host feature. Subclass it, set the class attributes, override the hooks it needs,
    and register an instance in features/__init__.py's FEATURES.

    The registry's order is the order of the probe report's problems and of the feature
    conditions; steps are applied in `write_order`, then registry order.
    """

    #: The condition the feature reports (kvtune_api.features.ConditionFeature); None for a
    #: feature that only probes.
    condition: t.ClassVar[ConditionFeature | None] = None
    #: The HostReport field its probe fills (python name); None for a feature that plans from
    #: another feature's section.
    section: t.ClassVar[str | None] = None
    #: The name its probe's own failures and unreadable files are reported under (Problem.
    #: feature; the probe's vocabulary, e.g. "CPU" for the PLE feature's cpu section).
    problem_name: t.ClassVar[FeatureName | None] = None
    #: It owns the read issues of the pass's process table, as if it had read /proc.
    reads_processes: t.ClassVar[bool] = False
    #: Steps of lower order are applied (and journaled) first; default 0.
    write_order: t.ClassVar[int] = 0
    #: Status fields that change on their own and are no reason to write the status (dotted
    #: camelCase paths, lists walked through), e.g. "host.ksm.pagesShared".
    volatile: t.ClassVar[tuple[str, ...]] = ()
    #: The back-offs of its steps (engine/retry.py).
    backoffs: t.ClassVar[tuple[Backoff[t.Any], ...]] = ()

    # -- probe --------------------------------------------------------------------------------

    def probe(self, fs: HostFS, processes: ProcessTable) -> Found:
        """Read the host (never write it) into the section's model. Only when `section`."""
        raise NotImplementedError(f"{type(self).__name__} has a section but no probe")

    def check(self, found: Found) -> list[Problem]:
        """The problems in what `probe` found; pure."""
        return []

    # -- plan ---------------------------------------------------------------------------------

    def read(self, fs: HostFS, host: HostReport) -> Facts | None:
        """Host facts the planner needs that the report does not carry (e.g. I/O schedulers),
        read once per plan; None when there are none."""
        return None

    def plan(self, inputs: PlanInputs, facts: Facts | None, out: Draft) -> None:
        """Add the steps that bring the host to `inputs.spec`, and findings; pure."""

    def restage(self, plan: Plan, inputs: PlanInputs, records: Mapping[str, Sequence[t.Any]],
                fs: HostFS, journaled: Mapping[str, str], timeout: float) -> Plan:
        """A second look at the whole plan once the back-offs held their steps: `records` are
        the back-off records by status field, `journaled` the bootargs entries of the journal
        (path -> original). Returns the plan, changed or not (e.g. boot-time hugepages)."""
        return plan

    # -- writes -------------------------------------------------------------------------------

    def sequence(self, path: str, now: str | None, value: str) -> list[str] | None:
        """The values to write, in order, to move the kernel file `path` from `now` to `value`
        when the kernel needs more than one write (KSM unmerges before it stops); None when
        the file is not this feature's or one write does."""
        return None

    def hold_write(self, fs: HostFS, step: PlannedStep, approved: bool,
                   timeout: float) -> str | None:
        """Why applying `step` (any feature's) must wait now, read afresh (e.g. VFs a VM took
        since the plan was made), or None; asked right before the write, after the drain and
        reboot checks. `approved`: the operator drained the node."""
        return None

    def hold_restore(self, fs: HostFS, path: str, original: str | None, approved: bool,
                     timeout: float) -> str | None:
        """Why restoring journal entry `path` to `original` must wait now, or None; asked of
        every feature right before each restore (a journal entry names no feature)."""
        return None

    def settle(self, fs: HostFS, systemd: Systemd, path: str, timeout: float) -> str | None:
        """Make a file the engine just wrote or restored take effect, and check that it did
        (the kubelet restarted onto its drop-in): None when it did or `path` is not the
        feature's, else why not. Asked of every feature after each applied write and each
        restore (a journal entry names no feature). A write that does not take is put back to
        its journaled original, settled again, and its step fails with the reason."""
        return None

    # -- status and output --------------------------------------------------------------------

    def unmanaged(self, spec: HypervisorNodeStateSpec) -> str | None:
        """Why kvtune leaves the feature alone under this spec (the condition is then True,
        NotManaged, with it), or None when it manages it."""
        return None

    def settled(self, host: HostReport, plan: Plan, notes: str) -> Settled:
        """The condition when the feature is managed and nothing blocks or is left to do;
        `plan` is the feature's part of the plan, `notes` its warnings joined."""
        return "True", "AsSpecified", notes

    def labels(self, spec: HypervisorNodeStateSpec,
               status: HypervisorNodeStateStatus) -> dict[str, str]:
        """NFD labels (name without the kvtune.io/ domain -> value); leave out what is unknown."""
        return {}

    def report(self, page: Page, report: HostReport) -> None:
        """Write the feature's section of `kvtune probe`'s text report on `page` (headings and
        rows keyed by feature name or path, so the gutter marks them); nothing by default."""


def stages_boot(spec: HypervisorNodeStateSpec) -> bool:
    """Boot-time settings are written (boot.settings Stage) rather than only reported: Stage is
    the default, so it takes rollout.allowReboot to write anything."""
    return spec.host.boot.settings == "Stage" and spec.disruption.allow_reboot
