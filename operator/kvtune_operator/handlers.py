"""kopf wiring: every registration of the operator, each a few lines that delegate.

Indexes keep an in-memory view of profiles, nodes and node states (fed by watches, so a pass
reads no API); one daemon per profile reconciles it every `Settings.resync_seconds`; the
deletion handler holds the profile's finalizer until its nodes have reverted.
"""

from __future__ import annotations

import logging
import typing as t

import kopf
from kvtune_api.v1alpha1.profile import HypervisorProfileStatus

from . import controller
from .kube import Kube, api_client
from .profiles import Profile
from .reconcile import Snapshot, StateView
from .settings import Settings

PROFILES = ("kvtune.io", "v1alpha1", "hypervisorprofiles")
STATES = ("kvtune.io", "v1alpha1", "hypervisornodestates")
NODES = ("", "v1", "nodes")


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: t.Any) -> None:
    # `kvtune operator` passes its Settings in the memo; a bare `kopf run` gets the defaults.
    memo.setdefault("settings", Settings())
    memo.setdefault("kube", Kube(api_client()))
    # Own annotation prefix and finalizer, so kvtune never pauses or blocks another kopf operator
    # (the agents included) working on the same objects.
    settings.persistence.finalizer = "kvtune.io/operator"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix="operator.kvtune.io"
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="operator.kvtune.io", key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    settings.peering.name = "kvtune-operator"


@kopf.on.login()
def login(**kwargs: t.Any) -> kopf.ConnectionInfo | None:
    # kopf's own client-library login reads $KUBECONFIG at import time; these read it now, and
    # the service account token anew whenever kopf re-authenticates after a 401.
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.index(*NODES)
def node_labels(name: str, labels: kopf.Labels, **_: t.Any) -> dict[str, dict[str, str]]:
    return {name: dict(labels)}


@kopf.index(*STATES)
def node_states(body: kopf.Body, name: str, **_: t.Any) -> dict[str, StateView]:
    return {name: StateView.from_body(body)}


@kopf.index(*PROFILES)
def profiles(body: kopf.Body, name: str, **_: t.Any) -> dict[str, Profile]:
    return {name: Profile.from_body(body)}


def _view(index: kopf.Index[str, t.Any]) -> dict[str, t.Any]:
    # Each object contributes one value under its own name.
    return {key: value for key, store in index.items() for value in store}


def _snapshot(indexes: t.Mapping[str, t.Any]) -> Snapshot:
    # kopf passes each index as a keyword argument named after its handler.
    return controller.snapshot(
        _view(indexes["profiles"]), _view(indexes["node_labels"]), _view(indexes["node_states"])
    )


@kopf.daemon(*PROFILES, initial_delay=0)
async def run_profile(
    body: kopf.Body, stopped: kopf.DaemonStopped, memo: kopf.Memo, **indexes: t.Any
) -> None:
    name = body["metadata"]["name"]
    while not stopped:
        current = _view(indexes["profiles"]).get(name)
        if current is not None and not current.deleting:
            previous = HypervisorProfileStatus.model_validate(body.get("status") or {})
            snap = _snapshot(indexes)
            result = await controller.reconcile_profile(
                current, snap, previous, memo["kube"], memo["settings"]
            )
            for type_, status, message in result.transitions:
                kopf.info(body, reason=f"{type_}{status}", message=message)
        await stopped.wait(memo["settings"].resync_seconds)


@kopf.on.delete(*PROFILES)
async def remove_profile(body: kopf.Body, memo: kopf.Memo, **indexes: t.Any) -> None:
    profile = Profile.from_body(body)
    snap = _snapshot(indexes)
    await controller.reconcile_profile(
        profile, snap, HypervisorProfileStatus(), memo["kube"], memo["settings"]
    )
    left = [s for s in snap.states.values() if s.profile == profile.name]
    if left:
        raise kopf.TemporaryError(
            f"waiting for {len(left)} node(s) to restore their hosts before the profile goes: "
            + ", ".join(sorted(s.name for s in left)[:10]),
            delay=2,
        )
