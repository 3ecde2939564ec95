"""The operator's in-memory view of the cluster: node states, snapshot, and the actions it plans.

Pure data, shared by the planners (`reconcile`, `rollout`), the roll-up and the API module.
Bookkeeping the operator needs across restarts (when a revert or a drain started, whether it
approved a drain) lives in annotations on the node's HypervisorNodeState, which the operator
owns, so a restarted or newly elected operator resumes where the last one stopped. That kvtune
cordoned a node is kept on the Node itself: the state goes with its profile, and a cordon must
not outlive what it was for.
"""

from __future__ import annotations

import dataclasses
import datetime
import typing as t
from collections.abc import Mapping

from kvtune_api import conditions as cond
from kvtune_api.v1alpha1.common import LabelSelector
from kvtune_api.v1alpha1.nodestate import HypervisorNodeState, HypervisorNodeStateSpec

from .assign import Assignment
from .render import PROFILE_LABEL
from .vmi.node_facts import NodeFacts

#: Condition type the agent sets once it has restored a node's journal.
REVERTED = "Reverted"
#: When the operator asked for a revert: starts the clock for a node that never answers.
REVERT_ANNOTATION = "kvtune.io/revert-requested-at"
#: When the operator started draining the node for a NeedsDrain step.
DRAIN_STARTED_ANNOTATION = "kvtune.io/drain-started-at"
#: The state generation whose drain timed out: not retried until the spec changes.
DRAIN_FAILED_ANNOTATION = "kvtune.io/drain-failed-generation"
#: Label naming the node of a PersistentVolume kvtune made for one of its LUNs.
NODE_LABEL = "kvtune.io/node"
#: On a kvtune PersistentVolume: the world wide id of its LUN, when the LUN has one.
WWID_ANNOTATION = "kvtune.io/wwid"
#: On the Node: set when kvtune cordoned it, so that it uncordons only nodes it cordoned itself,
#: whatever becomes of the node's state and profile.
CORDONED_ANNOTATION = "kvtune.io/cordoned-by-kvtune"
#: On the state: the operator approved its drain-requiring steps. spec.disruption.approved is
#: rendered from this record, never read back from the spec, so a hand-set approval is undone.
APPROVED_ANNOTATION = "kvtune.io/drain-approved"


@dataclasses.dataclass(frozen=True)
class StateView:
    """What the operator keeps of a HypervisorNodeState (not the bulky host report)."""

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
            spec=_dumped(state.spec),  # parsed once, with the state
            state=state,
            annotations=dict(meta.get("annotations") or {}),
            label=(meta.get("labels") or {}).get(PROFILE_LABEL, ""),
            facts=facts,
        )


@dataclasses.dataclass(frozen=True)
class VolumeView:
    """What the operator keeps of a PersistentVolume it created."""

    name: str
    profile: str
    node: str
    phase: str
    wwid: str = ""
    """Its LUN's world wide id; empty when the LUN has none."""

    @classmethod
    def from_body(cls, body: Mapping[str, t.Any]) -> VolumeView:
        labels = body["metadata"].get("labels") or {}
        annotations = body["metadata"].get("annotations") or {}
        return cls(body["metadata"]["name"], labels.get(PROFILE_LABEL, ""),
                   labels.get(NODE_LABEL, ""), (body.get("status") or {}).get("phase", ""),
                   annotations.get(WWID_ANNOTATION, ""))


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """The operator's in-memory view of the cluster at one moment."""

    nodes: Mapping[str, Mapping[str, str]]
    """Node name -> labels."""
    states: Mapping[str, StateView]
    assignment: Assignment
    cordoned: Mapping[str, bool] = dataclasses.field(default_factory=dict)
    """Node name -> spec.unschedulable."""
    vm_pods: Mapping[str, int] = dataclasses.field(default_factory=dict)
    """Node name -> running virt-launcher pods on it."""
    kubevirt_ksm: LabelSelector | None = None
    """The nodes KubeVirt's KSM handler may turn KSM on for; None: it manages no KSM."""
    volumes: Mapping[str, VolumeView] = dataclasses.field(default_factory=dict)
    """PersistentVolume name -> VolumeView, for the volumes kvtune created."""
    kvtune_cordoned: frozenset[str] = frozenset()
    """Nodes whose cordon is kvtune's (CORDONED_ANNOTATION on the Node)."""
    live_profiles: frozenset[str] = frozenset()
    """Profiles that exist and are not being deleted."""

    def assigned_states(self, profile: str) -> dict[str, StateView | None]:
        """The nodes assigned to `profile`, sorted by name, each with its state when the profile
        owns it (None: not created yet, or still owned by the profile the node left)."""
        return {
            node: view if (view := self.states.get(node)) and view.profile == profile else None
            for node in sorted(self.assignment.nodes.get(profile, ()))
        }


@dataclasses.dataclass(frozen=True)
class CreateState:
    manifest: Mapping[str, t.Any]


@dataclasses.dataclass(frozen=True)
class PatchState:
    """Patch a state's spec, annotations and/or labels (one set to None is removed)."""

    name: str
    spec: Mapping[str, t.Any] | None = None
    annotations: Mapping[str, str | None] = dataclasses.field(default_factory=dict)
    labels: Mapping[str, str | None] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class DeleteState:
    name: str


@dataclasses.dataclass(frozen=True)
class LabelNode:
    """Set (profile name) or remove (None) the node's kvtune.io/profile label."""

    node: str
    profile: str | None


@dataclasses.dataclass(frozen=True)
class CordonNode:
    """Cordon a node and note on it that kvtune did, or uncordon it and remove the note."""

    node: str
    unschedulable: bool


@dataclasses.dataclass(frozen=True)
class CreateVolume:
    """Create a PersistentVolume for a raw LUN (never updated or deleted by kvtune)."""

    manifest: Mapping[str, t.Any]


@dataclasses.dataclass(frozen=True)
class ApplyConfigMap:
    """Server-side apply a ConfigMap in the operator's namespace (macvtap-cni's configuration)."""

    manifest: Mapping[str, t.Any]


@dataclasses.dataclass(frozen=True)
class DeleteConfigMap:
    namespace: str
    name: str


@dataclasses.dataclass(frozen=True)
class EvictVmPods:
    """Ask (Eviction API, so PodDisruptionBudgets hold) every VM pod on the node to leave."""

    node: str


Action = (
    CreateState | PatchState | DeleteState | LabelNode | CordonNode | EvictVmPods | CreateVolume
    | ApplyConfigMap | DeleteConfigMap
)


def action_target(action: Action) -> str:
    """The object an action is about: a node (every state is named after its node), a volume
    or a ConfigMap."""
    if isinstance(action, CreateState | CreateVolume | ApplyConfigMap):
        return str(action.manifest["metadata"]["name"])
    if isinstance(action, PatchState | DeleteState | DeleteConfigMap):
        return action.name
    return action.node


def normalized(spec: Mapping[str, t.Any]) -> dict[str, t.Any]:
    """A stored spec as `render_spec` would write it, so server-side defaults compare equal."""
    return _dumped(HypervisorNodeStateSpec.model_validate(spec))


def _dumped(spec: HypervisorNodeStateSpec) -> dict[str, t.Any]:
    dumped: dict[str, t.Any] = spec.model_dump(exclude_none=True, mode="json")
    return dumped


def _parse_time(value: str | None) -> datetime.datetime | None:
    try:
        return datetime.datetime.fromisoformat(value) if value else None
    except ValueError:
        return None
