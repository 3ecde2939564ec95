"""kopf wiring: every registration of the operator, each a few lines that delegate.

Indexes keep an in-memory view of profiles, nodes and node states (fed by watches, so a pass
reads no API); one daemon per profile reconciles it every `Settings.resync_seconds`, from a
snapshot of the indexes the daemons share (`passes.SharedSnapshot`); the deletion handler
holds the profile's finalizer until its nodes have reverted. The VMI admission webhook is a
process of its own, with its own registry (`webhook/handlers.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import typing as t
from concurrent.futures import ThreadPoolExecutor

import kopf
from kvtune_api.v1alpha1.common import LabelSelector
from kvtune_api.v1alpha1.profile import HypervisorProfileStatus

from ..common import handlers as shared
from ..common import kopf_toggles
from ..common.handlers import KUBEVIRTS, NODES, PROFILES, STATES
from ..common.kube import api_client
from ..common.profiles import PROFILE_LABEL, Profile
from . import kubevirt, metrics, passes
from .kube import Kube
from .settings import PEERING_NAME, Settings
from .views import CORDONED_ANNOTATION, Snapshot, VolumeView

# Before kopf.run: kopf's own index readiness gate costs O(nodes^2) at startup
# (common/kopf_toggles.py).
kopf_toggles.install()


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: t.Any) -> None:
    # `kvtune operator` passes its Settings in the memo; a bare `kopf run` gets the defaults.
    memo.setdefault("settings", Settings())
    memo.setdefault("kube", Kube(api_client()))
    # One object in every profile's memo (kopf copies the operator's memo shallowly).
    memo.setdefault("snapshots", passes.SharedSnapshot(memo["settings"].resync_seconds))
    memo.setdefault("agent", passes.AgentDaemonSet(memo["settings"].resync_seconds))
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
async def size_write_threads(memo: kopf.Memo, **_: t.Any) -> None:
    # API writes run in threads (asyncio.to_thread, the synchronous client). The loop's default
    # pool has min(32, CPUs + 4) of them, 6 on a 2-CPU node, which would quietly cap
    # `write_concurrency` (16) at 6.
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(
        max_workers=memo["settings"].write_concurrency + 4, thread_name_prefix="kvtune-api"))


@kopf.on.startup()
async def install_parts(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: t.Any) -> None:
    # On every start (an upgrade is a restart): the peering object, and the agent DaemonSet
    # with the operator's own image, so both halves always run the same version.
    await passes.install_parts(memo["kube"], memo["settings"], settings.peering.standalone)


login = kopf.on.login()(shared.login)
node_labels = kopf.index(*NODES)(shared.node_labels)
node_states = kopf.index(*STATES)(shared.node_states)
profiles = kopf.index(*PROFILES)(shared.profiles)


@kopf.index(*NODES)
def node_cordoned(name: str, spec: kopf.Spec, **_: t.Any) -> dict[str, bool]:
    return {name: bool(spec.get("unschedulable"))}


@kopf.index(*NODES, annotations={CORDONED_ANNOTATION: "true"})
def kvtune_cordons(name: str, **_: t.Any) -> dict[str, bool]:
    # Only the nodes kvtune cordoned: the note is on the Node, so it outlives states and profiles.
    return {name: True}


@kopf.on.event(*NODES, annotations={CORDONED_ANNOTATION: "true"})
async def kvtune_cordon_seen(name: str, memo: kopf.Memo, **indexes: t.Any) -> None:
    # Also at start-up (kopf's first listing): a cordon left when the operator was away.
    await _lift_orphan_cordons([name], memo, indexes)


@kopf.on.event(*PROFILES)
async def profile_event(event: kopf.RawEvent, memo: kopf.Memo, **indexes: t.Any) -> None:
    if event["type"] == "DELETED":  # gone, maybe without its finalizer's last pass
        await _lift_orphan_cordons(_view(indexes["kvtune_cordons"]), memo, indexes)


async def _lift_orphan_cordons(
    nodes: t.Iterable[str], memo: kopf.Memo, indexes: t.Mapping[str, t.Any]
) -> None:
    await passes.lift_orphan_cordons(
        nodes, _view(indexes["profiles"]), memo["kube"], memo["settings"])


@kopf.index(*KUBEVIRTS)
def kubevirt_ksm(spec: kopf.Spec, **_: t.Any) -> dict[str, LabelSelector | None]:
    # One KubeVirt CR per cluster; its KSM selector decides where KubeVirt may enable KSM.
    return {"ksm": kubevirt.ksm_selector(spec)}


@kopf.index("", "v1", "persistentvolumes", labels={PROFILE_LABEL: kopf.PRESENT})
def lun_volumes(body: kopf.Body, name: str, **_: t.Any) -> dict[str, VolumeView]:
    return {name: VolumeView.from_body(body)}


def _view(index: kopf.Index[str, t.Any]) -> dict[str, t.Any]:
    # Each object contributes one value under its own name.
    return {key: value for key, store in index.items() for value in store}


def _snapshot(profiles: t.Mapping[str, Profile], indexes: t.Mapping[str, t.Any]) -> Snapshot:
    # kopf passes each index as a keyword argument named after its handler.
    return passes.snapshot(
        profiles,
        _view(indexes["node_labels"]),
        _view(indexes["node_states"]),
        _view(indexes["node_cordoned"]),
        _view(indexes["kubevirt_ksm"]).get("ksm"),
        _view(indexes["lun_volumes"]),
        _view(indexes["kvtune_cordons"]),
    )


@kopf.daemon(*PROFILES, initial_delay=0)
async def run_profile(
    body: kopf.Body, stopped: kopf.DaemonStopped, memo: kopf.Memo, **indexes: t.Any
) -> None:
    name = body["metadata"]["name"]
    wrote = False
    while not stopped:
        profiles = _view(indexes["profiles"])
        current = profiles.get(name)
        if current is not None and current.problem and not current.deleting:
            previous = HypervisorProfileStatus.model_validate(body.get("status") or {})
            await passes.report_unreadable(current, previous, memo["kube"])
        elif current is not None and not current.deleting:
            previous = HypervisorProfileStatus.model_validate(body.get("status") or {})
            snap = memo["snapshots"].get(
                profiles, name, lambda p: _snapshot(p, indexes), wrote=wrote
            )
            agent = await memo["agent"].check(memo["kube"], memo["settings"])
            result = await metrics.reconcile_pass(name, passes.reconcile_profile(
                current, snap, previous, memo["kube"], memo["settings"], agent=agent
            ))
            wrote = result.wrote
            for type_, status, message in result.transitions:
                kopf.info(body, reason=f"{type_}{status}", message=message)
        await _until_stopped(stopped, memo["settings"].resync_seconds)


async def _until_stopped(stopped: kopf.DaemonStopped, seconds: float) -> None:
    """Wait until the daemon is stopped or `seconds` have passed.

    Not kopf's `stopped.wait(seconds)`: it waits in a task of its own that outlives a daemon
    cancelled meanwhile, and when that task later times out, kopf collects its TimeoutError at
    shutdown and reraises it from `kopf.run` (seen once in CI, at a test's teardown).
    asyncio.wait_for cancels its inner wait together with the daemon."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopped.wait(), seconds)


@kopf.on.delete(*PROFILES)
async def remove_profile(body: kopf.Body, memo: kopf.Memo, **indexes: t.Any) -> None:
    profile = Profile.from_body(body)
    snap = _snapshot(_view(indexes["profiles"]), indexes)  # its own: it decides on the finalizer
    await metrics.reconcile_pass(profile.name, passes.reconcile_profile(
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
