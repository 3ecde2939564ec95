"""A HypervisorNodeState as both kopf processes keep it in their indexes, and where its node stands.

Why shared: the operator plans and rolls up from these views, and the webhook steers a VMI only
to nodes whose state is Ready under the VMI's profile; both must read a state (and the
operator's bookkeeping annotations on it) the same way, or the webhook would send VMIs to nodes
the profile's status does not count as ready. Bookkeeping the operator needs across restarts
(when a revert or a drain started, whether it approved a drain) lives in annotations on the
node's HypervisorNodeState, which the operator owns, so a restarted or newly elected operator
resumes where the last one stopped.
"""

from __future__ import annotations

import dataclasses
import datetime
import typing as t
from collections.abc import Mapping

from kvtune_api import conditions as cond
from kvtune_api.v1alpha1.nodestate import HypervisorNodeState, HypervisorNodeStateSpec

from .node_facts import NodeFacts
from .profiles import PROFILE_LABEL

#: Condition type the agent sets once it has restored a node's journal.
REVERTED = "Reverted"
#: When the operator asked for a revert: starts the clock for a node that never answers.
REVERT_ANNOTATION = "kvtune.io/revert-requested-at"
#: When the operator started draining the node for a NeedsDrain step.
DRAIN_STARTED_ANNOTATION = "kvtune.io/drain-started-at"
#: The state generation whose drain timed out: not retried until the spec changes.
DRAIN_FAILED_ANNOTATION = "kvtune.io/drain-failed-generation"
#: On the state: the operator approved its drain-requiring steps. spec.disruption.approved is
#: rendered from this record, never read back from the spec, so a hand-set approval is undone.
APPROVED_ANNOTATION = "kvtune.io/drain-approved"


@dataclasses.dataclass(frozen=True)
class StateView:
    """What both processes keep of a HypervisorNodeState (not the bulky host report)."""

    name: str
    profile: str
    """The profile that rendered the state, from its spec (the operator's own write)."""
    generation: int
    spec: Mapping[str, t.Any]
    state: HypervisorNodeState
    annotations: Mapping[str, str] = dataclasses.field(default_factory=dict)
    label: str = ""
    """Its kvtune.io/profile label, which anyone may edit; put back when it differs."""
    facts: NodeFacts = dataclasses.field(default_factory=NodeFacts)
    """What admission needs of the probe report (SMT, the kubelet's whole cores, NUMA cells)."""

    @property
    def reverted(self) -> bool:
        return cond.is_true(self.state.status.conditions, REVERTED)

    @property
    def approved(self) -> bool:
        """The operator approved the drain: its own record, not the spec's field."""
        return self.annotations.get(APPROVED_ANNOTATION) == "true"

    @property
    def reported(self) -> bool:
        """The agent has reported on the current spec."""
        return self.state.status.observed_generation == self.generation

    @property
    def drain_required(self) -> bool:
        return self.reported and self.state.status.drain_required

    @property
    def revert_requested_at(self) -> datetime.datetime | None:
        return _parse_time(self.annotations.get(REVERT_ANNOTATION))

    @property
    def drain_started_at(self) -> datetime.datetime | None:
        return _parse_time(self.annotations.get(DRAIN_STARTED_ANNOTATION))

    @property
    def drain_failed(self) -> bool:
        return self.annotations.get(DRAIN_FAILED_ANNOTATION) == str(self.generation)

    @classmethod
    def from_body(cls, body: Mapping[str, t.Any]) -> StateView:
        meta = body["metadata"]
        status = dict(body.get("status") or {})
        facts = NodeFacts.from_host(status.get("host"))
        status.pop("host", None)  # the probe report is large and not needed to reconcile
        state = HypervisorNodeState.model_validate(
            {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
             "metadata": {"name": meta["name"]}, "spec": body["spec"], "status": status}
        )
        return cls(
            name=meta["name"],
            profile=state.spec.profile.name,
            generation=int(meta.get("generation") or 0),
            spec=dumped(state.spec),  # parsed once, with the state
            state=state,
            annotations=dict(meta.get("annotations") or {}),
            label=(meta.get("labels") or {}).get(PROFILE_LABEL, ""),
            facts=facts,
        )


#: Differs: an Audit (or paused) node whose host differs from the spec. It is not moving
#: (nothing will change it until Enforce) and not broken, so it is neither Progressing nor Degraded.
Phase = t.Literal["Ready", "Progressing", "Degraded", "Waiting", "Differs"]


def node_phase(view: StateView | None) -> tuple[Phase, str, str]:
    """Where one node stands, with a reason and message, from its agent's report and the
    operator's own drain bookkeeping. A status older than the spec is stale."""
    if view is None:
        return "Progressing", "NotRendered", "the node's state has not been created yet"
    status = view.state.status
    if not view.reported:
        return "Progressing", "AgentPending", "the node agent has not reported on this spec yet"
    if view.drain_failed:
        return "Degraded", "DrainFailed", (
            "its VM pods did not leave within rollout.drainTimeoutSeconds; the node was "
            "uncordoned. Check PodDisruptionBudgets and VM eviction strategies, then drain it "
            "by hand (kubectl drain) or change the profile to retry")
    degraded = cond.find(status.conditions, cond.DEGRADED)
    if degraded is not None and degraded.status == "True":
        return "Degraded", degraded.reason, degraded.message
    if status.drain_required or status.reboot_required:
        waiting = cond.find(status.conditions, cond.WAITING)
        reason = waiting.reason if waiting else "WaitingForDisruption"
        return "Waiting", reason, waiting.message if waiting else ""
    ready = cond.find(status.conditions, cond.READY)
    if ready is not None and ready.status == "True":
        return "Ready", "Ready", ""
    if ready is not None and ready.reason in (cond.WOULD_CHANGE, cond.PAUSED):
        return "Differs", ready.reason, ready.message
    progressing = cond.find(status.conditions, cond.PROGRESSING)
    if progressing is not None:
        return "Progressing", progressing.reason, progressing.message
    return "Progressing", "Applying", ""


def dumped(spec: HypervisorNodeStateSpec) -> dict[str, t.Any]:
    """A state's spec as plain JSON data, as `render_spec` writes it and `StateView.spec` holds
    it, so that the operator compares like with like."""
    plain: dict[str, t.Any] = spec.model_dump(exclude_none=True, mode="json")
    return plain


def _parse_time(value: str | None) -> datetime.datetime | None:
    try:
        return datetime.datetime.fromisoformat(value) if value else None
    except ValueError:
        return None
