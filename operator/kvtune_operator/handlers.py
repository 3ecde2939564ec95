"""kopf wiring: every registration of the operator, each a few lines that delegate.

Indexes keep an in-memory view of profiles, nodes and node states (fed by watches, so a pass
reads no API); one daemon per profile reconciles it every `Settings.resync_seconds`; the
deletion handler holds the profile's finalizer until its nodes have reverted.
"""

from __future__ import annotations

import asyncio
import logging
import typing as t

import kopf
from kvtune_api.v1alpha1.common import LabelSelector
from kvtune_api.v1alpha1.profile import HypervisorProfileStatus

from . import admission, controller, kubevirt, metrics, webhook
from .kube import Kube, api_client
from .profiles import Profile
from .render import PROFILE_LABEL
from .settings import PEERING_NAME, Settings
from .views import Snapshot, StateView, VolumeView
from .vmi import NodeCapacity

PROFILES = ("kvtune.io", "v1alpha1", "hypervisorprofiles")
STATES = ("kvtune.io", "v1alpha1", "hypervisornodestates")
NODES = ("", "v1", "nodes")
KUBEVIRTS = ("kubevirt.io", "v1", "kubevirts")


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
    settings.peering.name = PEERING_NAME
    settings.peering.priority = memo["settings"].peering_priority
    settings.peering.lifetime = memo["settings"].peering_lifetime_seconds
    # Without the peering CRD kopf would quietly run every replica as the only one. A standalone
    # run has no peering resources at all, which kopf takes for a missing CRD: it would pause.
    settings.peering.mandatory = not settings.peering.standalone


@kopf.on.startup()
async def install_parts(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: t.Any) -> None:
    # On every start (an upgrade is a restart): the peering object, and the agent DaemonSet
    # with the operator's own image, so both halves always run the same version.
    await controller.install_parts(memo["kube"], memo["settings"], settings.peering.standalone)


@kopf.on.login()
def login(**kwargs: t.Any) -> kopf.ConnectionInfo | None:
    # kopf's own client-library login reads $KUBECONFIG at import time; these read it now, and
    # the service account token anew whenever kopf re-authenticates after a 401.
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.index(*NODES)
def node_labels(name: str, labels: kopf.Labels, **_: t.Any) -> dict[str, dict[str, str]]:
    return {name: dict(labels)}


@kopf.index(*NODES)
def node_cordoned(name: str, spec: kopf.Spec, **_: t.Any) -> dict[str, bool]:
    return {name: bool(spec.get("unschedulable"))}


@kopf.index(*KUBEVIRTS)
def kubevirt_ksm(spec: kopf.Spec, **_: t.Any) -> dict[str, LabelSelector | None]:
    # One KubeVirt CR per cluster; its KSM selector decides where KubeVirt may enable KSM.
    return {"ksm": kubevirt.ksm_selector(spec)}


@kopf.index("", "v1", "persistentvolumes", labels={PROFILE_LABEL: kopf.PRESENT})
def lun_volumes(body: kopf.Body, name: str, **_: t.Any) -> dict[str, VolumeView]:
    return {name: VolumeView.from_body(body)}


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
        _view(indexes["profiles"]),
        _view(indexes["node_labels"]),
        _view(indexes["node_states"]),
        _view(indexes["node_cordoned"]),
        _view(indexes["kubevirt_ksm"]).get("ksm"),
        _view(indexes["lun_volumes"]),
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
            result = await metrics.reconcile_pass(name, controller.reconcile_profile(
                current, snap, previous, memo["kube"], memo["settings"]
            ))
            for type_, status, message in result.transitions:
                kopf.info(body, reason=f"{type_}{status}", message=message)
        await stopped.wait(memo["settings"].resync_seconds)


@kopf.on.delete(*PROFILES)
async def remove_profile(body: kopf.Body, memo: kopf.Memo, **indexes: t.Any) -> None:
    profile = Profile.from_body(body)
    snap = _snapshot(indexes)
    await metrics.reconcile_pass(profile.name, controller.reconcile_profile(
        profile, snap, HypervisorProfileStatus(), memo["kube"], memo["settings"]
    ))
    left = [s for s in snap.states.values() if s.profile == profile.name]
    if left:
        raise kopf.TemporaryError(
            f"waiting for {len(left)} node(s) to restore their hosts before the profile goes: "
            + ", ".join(sorted(s.name for s in left)[:10]),
            delay=2,
        )
    metrics.forget_profile(profile.name)


# --- The VMI admission webhook (issue 6): what it reads, when it listens, what it answers. ---
# Serving, TLS and the webhook configurations are in webhook.py; the answers in admission.py.

NAMESPACES = ("", "v1", "namespaces")


@kopf.on.startup()
def configure_webhook(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: t.Any) -> None:
    memo["webhook"] = webhook.configure(settings, memo["settings"], memo["kube"])


@kopf.index(*NAMESPACES)
def namespace_labels(name: str, labels: kopf.Labels, **_: t.Any) -> dict[str, dict[str, str]]:
    return {name: dict(labels)}


@kopf.index(*NODES)
def node_allocatable(name: str, status: kopf.Status, **_: t.Any) -> dict[str, NodeCapacity]:
    return {name: admission.node_capacity(name, status.get("allocatable") or {})}


@kopf.index(*KUBEVIRTS)
def overhead_ratio(spec: kopf.Spec, **_: t.Any) -> dict[str, str]:
    # Without KubeVirt's CRD kopf warns that it cannot watch kubevirts and indexes nothing (no
    # ratio), without holding anything up; it starts indexing when the CRD appears.
    ratio = (spec.get("configuration") or {}).get("additionalGuestMemoryOverheadRatio")
    return {} if ratio is None else {"ratio": str(ratio)}


# The `default` namespace always exists (the apiserver recreates it), so this runs once at start
# and on its rare changes, instead of logging a line for every namespace.
@kopf.on.event(*NAMESPACES, field="metadata.name", value="default")
async def webhook_indexed(memo: kopf.Memo, **_: t.Any) -> None:
    # kopf delivers events to handlers only after every index has listed the cluster.
    if memo.get("webhook") is not None:
        memo["webhook"].indexed.set()


@kopf.on.mutate(*webhook.VMIS, id=webhook.MUTATE_ID, operations=["CREATE"])
async def shape_vmi(
    body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **indexes: t.Any
) -> None:
    with metrics.admission("mutate") as answer:
        view, namespace_labels = await _admission_view(body, memo, indexes)
        answer.result = admission.shape(view, body, namespace_labels, patch)


@kopf.on.validate(*webhook.VMIS, id=webhook.VALIDATE_ID, operations=["CREATE"])
async def check_vmi(
    body: kopf.Body, warnings: list[str], memo: kopf.Memo, **indexes: t.Any
) -> None:
    with metrics.admission("validate") as answer:
        view, namespace_labels = await _admission_view(body, memo, indexes)
        answer.result = admission.check(view, body, namespace_labels, warnings)


async def _admission_view(
    body: kopf.Body, memo: kopf.Memo, indexes: t.Mapping[str, t.Any]
) -> tuple[admission.ClusterView, dict[str, str]]:
    namespace = body.metadata.namespace or ""
    stored = indexes["namespace_labels"].get(namespace)
    labels: dict[str, str] = (
        next(iter(stored))
        if stored
        # Created a moment ago: the watch has not delivered it yet.
        else await asyncio.to_thread(memo["kube"].namespace_labels, namespace)
    )
    view = admission.ClusterView(
        profiles=_view(indexes["profiles"]),
        node_labels=_view(indexes["node_labels"]),
        node_states=_view(indexes["node_states"]),
        allocatable=_view(indexes["node_allocatable"]),
        overhead_ratio=_view(indexes["overhead_ratio"]).get("ratio"),
    )
    return view, labels
