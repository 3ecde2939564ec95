"""One reconcile pass of a profile: snapshot -> pure plan -> API writes -> rolled-up status.

The kopf handlers call `reconcile_profile` from the profile's daemon (and its deletion handler);
this module holds the order of operations and nothing else: decisions are in `reconcile` and
`rollup`, requests in `kube`. `SharedSnapshot` lets the daemons of all profiles share one
snapshot per resync interval.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import time
import typing as t
from collections.abc import Callable, Mapping

from kvtune_api import conditions as cond
from kvtune_api.v1alpha1.common import LabelSelector
from kvtune_api.v1alpha1.profile import HypervisorProfileStatus

from ..common.nodestate import StateView
from ..common.profiles import Profile
from . import kubevirt, macvtap, metrics
from .assign import assign
from .daemonset import NAME, render_agent_daemonset
from .kube import Kube
from .reconcile import plan_profile
from .rollout import cordons_no_profile_holds, plan_rollout, stray_cordons
from .rollup import AgentCondition, rollup, status_changed
from .settings import PEERING_NAME, Settings
from .views import Action, Snapshot, VolumeView, action_target
from .volumes import orphaned_volumes, plan_volumes, shared_luns, shared_of


@dataclasses.dataclass(frozen=True)
class PassResult:
    """What a pass did: the actions it wrote, and the status if it changed."""

    actions: list[Action]
    status: HypervisorProfileStatus | None
    transitions: list[tuple[str, str, str]]  # (condition type, new status, message)

    @property
    def wrote(self) -> bool:
        return bool(self.actions) or self.status is not None


def snapshot(
    profiles: Mapping[str, Profile],
    nodes: Mapping[str, Mapping[str, str]],
    states: Mapping[str, StateView],
    cordoned: Mapping[str, bool],
    kubevirt_ksm: LabelSelector | None = None,
    volumes: Mapping[str, VolumeView] | None = None,
    kvtune_cordoned: t.Iterable[str] = (),
) -> Snapshot:
    selectors = {name: p.spec.node_selector for name, p in profiles.items()}
    return Snapshot(nodes, states, assign(selectors, nodes), cordoned, {}, kubevirt_ksm,
                    volumes or {}, frozenset(kvtune_cordoned),
                    frozenset(name for name, p in profiles.items() if not p.deleting))


class SharedSnapshot:
    """The snapshot that the daemons of all profiles read within one resync interval.

    Why: a snapshot costs O(profiles x nodes), since `assign` matches every selector against
    every node; built by each of P daemons every interval, that is P^2 x N matches a second.
    Shared, it is built about once an interval, by whichever daemon comes first. A daemon reuses
    the last one built only while all of these hold, and otherwise builds one for everyone:

    - it is younger than `max_age` (the resync interval), so no pass acts on an older view;
    - it was built from the caller's profile as the caller reads it now, so a profile's own edit
      reaches its next pass, and the spec it renders agrees with the nodes it was assigned;
    - the caller's previous pass wrote nothing (`wrote`): its writes reach the indexes through
      the watches, a while after the requests return, so a snapshot taken meanwhile may lack
      them (a pass that could not see its own cordon would start one drain too many). Such a
      caller takes its own, an interval after its writes, as an unshared daemon did.

    Snapshots are never changed once built (every reader takes them as read-only mappings, and
    `_with_vm_pods` adds its counts to a copy), so one object can go to every daemon.
    """

    def __init__(self, max_age: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._max_age = max_age
        self._clock = clock
        self._last: tuple[float, dict[str, Profile], Snapshot] | None = None

    def get(
        self,
        profiles: Mapping[str, Profile],
        name: str,
        build: Callable[[Mapping[str, Profile]], Snapshot],
        *,
        wrote: bool,
    ) -> Snapshot:
        """The snapshot for the pass of profile `name`; `profiles` as the caller reads them now,
        `build` makes a snapshot from them."""
        now = self._clock()
        if self._last is not None and not wrote:
            built_at, built_from, snap = self._last
            if now - built_at < self._max_age and built_from.get(name) == profiles.get(name):
                return snap
        snap = build(profiles)
        self._last = (now, dict(profiles), snap)
        return snap


async def reconcile_profile(
    profile: Profile,
    snap: Snapshot,
    previous: HypervisorProfileStatus,
    kube: Kube,
    settings: Settings,
    now: datetime.datetime | None = None,
    agent: AgentCondition | None = None,
) -> PassResult:
    now = now or datetime.datetime.now(datetime.UTC)
    actions = plan_profile(profile, snap, now, settings.revert_timeout)
    if not actions:
        # Drain decisions wait for a pass with no spec writes pending, so they never race them.
        actions = plan_rollout(profile, await _with_vm_pods(profile, snap, kube), now)
    actions += stray_cordons(profile, snap, snap.live_profiles)
    # Which LUNs other nodes see too: read from every node's probe, so only for a profile that
    # exposes LUNs, and once for both uses.
    shared = shared_luns(snap) if profile.spec.storage.block_luns is not None else {}
    actions += plan_volumes(profile, snap, shared)
    # A profile whose status lists macvtap resources may have a ConfigMap left to remove.
    if settings.namespace and not profile.deleting and (
            profile.spec.network.macvtap or previous.macvtap):
        actions += await _macvtap_config(profile, snap, kube, settings.namespace)
    await execute(kube, actions, settings.write_concurrency)
    if profile.deleting:
        return PassResult(actions, None, [])
    states = snap.assigned_states(profile.name)
    clashes = kubevirt.problems(profile, states, snap.nodes, snap.kubevirt_ksm)
    conflicts = snap.assignment.conflicts_of(profile.name)
    orphans = [v.name for v in orphaned_volumes(profile, snap)]
    status = rollup(profile, states, conflicts, previous, now, clashes, orphans,
                    shared_of(profile, snap, shared), agent)
    metrics.set_profile_nodes(profile.name, status)
    if not status_changed(previous, status):
        return PassResult(actions, None, [])
    dumped: dict[str, t.Any] = status.model_dump(mode="json")
    with metrics.api_write("patch_profile_status"):
        await asyncio.to_thread(kube.patch_profile_status, profile.name, dumped)
    # Conditions whose status flipped: these, and only these, become Events.
    transitions: list[tuple[str, str, str]] = [
        (c.type, c.status, c.message or c.reason)
        for c in cond.flipped(previous.conditions, status.conditions)
    ]
    return PassResult(actions, status, transitions)


async def report_unreadable(
    profile: Profile, previous: HypervisorProfileStatus, kube: Kube
) -> None:
    """The status of a profile whose stored spec cannot be read: Degraded, naming each field and
    the fix, and nothing else done. Written once (again only when the problem changes), never a
    retry loop; its nodes keep their states, untouched, until the spec is corrected."""
    gen = profile.generation
    conditions = [
        cond.make(cond.READY, "False", "InvalidSpec", "the spec cannot be read", gen),
        cond.make(cond.PROGRESSING, "False", "InvalidSpec", "nothing is applied", gen),
        cond.make(cond.DEGRADED, "True", "InvalidSpec", profile.problem, gen),
    ]
    status = previous.model_copy(update={
        "observed_generation": gen,
        "conditions": cond.merge(previous.conditions, conditions,
                                 datetime.datetime.now(datetime.UTC)),
    })
    if status_changed(previous, status):
        await asyncio.to_thread(kube.patch_profile_status, profile.name,
                                status.model_dump(mode="json"))


class AgentDaemonSet:
    """Keeps the agent DaemonSet in place between operator restarts, and says when it was not.

    Why: it is installed at start-up; deleted afterwards (by hand, by a pruning GitOps tool),
    no node was probed or restored until the operator restarted, and nothing said so. Every
    profile's pass asks `check`, which reads the DaemonSet at most once per `every` seconds for
    all of them, recreates it when it is gone, and gives the profile's AgentDaemonSet condition:
    False while it is missing (with the error, when it cannot be recreated), and False once
    with reason Recreated, which becomes an Event, when it was.
    """

    def __init__(self, every: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._every = every
        self._clock = clock
        self._checked_at: float | None = None
        self._last: AgentCondition = ("True", "Present", "")

    async def check(self, kube: Kube, settings: Settings) -> AgentCondition | None:
        """(status, reason, message) of the condition; None when the operator runs no agent."""
        if not (settings.agent_image and settings.namespace):
            return None
        now = self._clock()
        if self._checked_at is not None and now - self._checked_at < self._every:
            return self._last
        self._checked_at = now
        where = f"{settings.namespace}/{NAME}"
        if await asyncio.to_thread(kube.daemonset_exists, settings.namespace, NAME):
            self._last = ("True", "Present", "")
            return self._last
        try:
            manifest = render_agent_daemonset(settings.namespace, settings.agent_image)
            await asyncio.to_thread(kube.apply_daemonset, manifest)
        except Exception as err:  # reported, and tried again at the next check
            self._last = ("False", "Missing", f"the agent DaemonSet {where} is missing and could "
                          f"not be recreated ({err}); no node is probed or restored until it is")
        else:
            self._last = ("False", "Recreated", f"the agent DaemonSet {where} was missing (deleted "
                          "while the operator ran) and has been recreated")
        return self._last


async def install_parts(kube: Kube, settings: Settings, standalone: bool) -> None:
    if not standalone:
        await asyncio.to_thread(kube.ensure_peering, PEERING_NAME)
    if settings.agent_image and settings.namespace:
        manifest = render_agent_daemonset(settings.namespace, settings.agent_image)
        await asyncio.to_thread(kube.apply_daemonset, manifest)


async def lift_orphan_cordons(
    nodes: t.Iterable[str], profiles: Mapping[str, Profile], kube: Kube, settings: Settings
) -> None:
    """Uncordon `nodes` (kvtune's cordons) if no live profile is left to judge them."""
    await execute(kube, cordons_no_profile_holds(nodes, profiles), settings.write_concurrency)


async def execute(kube: Kube, actions: list[Action], concurrency: int) -> None:
    """Run the actions, those of different objects side by side (a first converge of thousands
    of nodes is thousands of round trips), those of one object in their planned order."""
    groups: dict[str, list[Action]] = {}
    for action in actions:
        groups.setdefault(action_target(action), []).append(action)
    gate = asyncio.Semaphore(concurrency)

    async def run(group: list[Action]) -> None:
        async with gate:
            for action in group:
                with metrics.api_write(action):
                    await asyncio.to_thread(kube.execute, action)

    await asyncio.gather(*(run(g) for g in groups.values()))


async def _macvtap_config(
    profile: Profile, snap: Snapshot, kube: Kube, namespace: str
) -> list[Action]:
    """The write of the profile's macvtap-cni ConfigMap, if it needs one. Read afresh rather
    than watched: a watch of ConfigMaps would need read rights on every namespace's."""
    current = await asyncio.to_thread(
        kube.config_map_data, namespace, macvtap.config_map_name(profile.name))
    return macvtap.plan_config_map(profile, namespace, snap.assigned_states(profile.name), current)


async def _with_vm_pods(profile: Profile, snap: Snapshot, kube: Kube) -> Snapshot:
    """The snapshot with VM pod counts of the nodes whose drain depends on them.

    Counted by a request per draining node rather than a watch of every pod in the cluster:
    drains are rare and few at a time, pods are many.
    """
    waiting = [
        v.name for v in snap.states.values()
        if v.profile == profile.name and v.drain_required and not v.approved
        and (v.drain_started_at is not None or snap.cordoned.get(v.name, False))
    ]
    counts = {node: await asyncio.to_thread(kube.count_vm_pods, node) for node in waiting}
    return dataclasses.replace(snap, vm_pods=counts)
