"""The operator's in-memory view of the cluster (snapshot, its volumes) and the actions it plans.

Pure data, shared by the planners (`reconcile`, `rollout`), the roll-up and the API module. The
node states in it are `common.nodestate.StateView`s, which the webhook reads too. That kvtune
cordoned a node is kept on the Node itself: the state goes with its profile, and a cordon must
not outlive what it was for.
"""

from __future__ import annotations

import dataclasses
import typing as t
from collections.abc import Mapping

from kvtune_api.v1alpha1.common import LabelSelector
from kvtune_api.v1alpha1.nodestate import HypervisorNodeStateSpec

from ..common.nodestate import StateView, dumped
from ..common.profiles import PROFILE_LABEL
from .assign import Assignment

#: Label naming the node of a PersistentVolume kvtune made for one of its LUNs.
NODE_LABEL = "kvtune.io/node"
#: On a kvtune PersistentVolume: the world wide id of its LUN, when the LUN has one.
WWID_ANNOTATION = "kvtune.io/wwid"
#: On the Node: set when kvtune cordoned it, so that it uncordons only nodes it cordoned itself,
#: whatever becomes of the node's state and profile.
CORDONED_ANNOTATION = "kvtune.io/cordoned-by-kvtune"


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
    return dumped(HypervisorNodeStateSpec.model_validate(spec))
