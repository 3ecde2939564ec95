"""The node agent process: watch this node's state, run a cycle, report only what changed.

A cycle (probe, plan, apply in Enforce, status) runs when the node's HypervisorNodeState changes
and every `interval_seconds` to catch drift. The status is written only when something a person
or the operator acts on changed: timestamps and fast-moving counters (free memory, KSM page
counts) do not count, so a thousand idle agents write nothing.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import pathlib
import queue
import threading
import typing as t

from kvtune_api import conditions as cond
from kvtune_api.labels import JOURNAL_LABEL, JOURNAL_PENDING, READY_LABEL
from kvtune_api.v1alpha1.audit import NodeVmAudit
from kvtune_api.v1alpha1.nodestate import HypervisorNodeStateSpec, HypervisorNodeStateStatus

from . import metrics, nfd
from .audit import VMS_COMPLIANT, AuditPolicy, Sampler, audit_and_measure, vm_metrics, vms_condition
from .audit import interference as measured_interference
from .features import FEATURES
from .features.base import NodeMeta
from .host.hostfs import HostFS
from .host.systemd import HOST_SYSTEMCTL, Systemd
from .kube import AgentKube
from .wiring import revert_orphaned, run_cycle

log = logging.getLogger("kvtune.agent")

#: Status fields that change on their own and are no reason to write (dotted paths; lists are
#: walked through): the engine's own, and each feature's `volatile`.
VOLATILE = (
    "lastProbeTime",
    "conditions.lastTransitionTime",
    *(path for feature in FEATURES for path in feature.volatile),
    *measured_interference.VOLATILE,
)


@dataclasses.dataclass(frozen=True)
class AgentSettings:
    node: str
    """Name of the Node this agent prepares (the pod's spec.nodeName)."""

    root: pathlib.Path = pathlib.Path("/")
    """Host root: /proc/1/root or a host mount in a pod, a test tree in tests."""

    interval_seconds: float = 30.0
    """Seconds between drift checks when nothing changes (default 30, as the SR-IOV operator's
    daemon): short enough to notice someone re-enabling KSM, long enough to cost nothing."""

    write_timeout_seconds: float = 10.0
    """Bound on each host write (default 10 s): some drivers hang writing sriov_numvfs."""

    systemctl: tuple[str, ...] = HOST_SYSTEMCTL
    """How the host's systemctl is reached (default: entering PID 1's namespaces with nsenter,
    which needs hostPID; tests give a fake that edits their host tree)."""


def significant(status: HypervisorNodeStateStatus) -> dict[str, t.Any]:
    """The status as a dict without the fields in VOLATILE: equal dicts need no write."""
    dumped: dict[str, t.Any] = status.model_dump(mode="json", exclude_none=True)
    for path in VOLATILE:
        _drop(dumped, path.split("."))
    return dumped


def _drop(node: t.Any, keys: list[str]) -> None:
    if isinstance(node, list):
        for item in node:
            _drop(item, keys)
    elif isinstance(node, dict) and keys:
        if len(keys) == 1:
            node.pop(keys[0], None)
        elif keys[0] in node:
            _drop(node[keys[0]], keys[1:])


class Agent:
    def __init__(self, kube: AgentKube, settings: AgentSettings) -> None:
        self.kube = kube
        self.settings = settings
        self.fs = HostFS(settings.root)
        self.systemd = Systemd(settings.systemctl)
        self.sampler = Sampler()  # the VMs' counters of the last cycle, to measure against

    def run(self, stop: threading.Event) -> None:
        changes: queue.Queue[str] = queue.Queue()
        watcher = threading.Thread(
            target=self.kube.watch_state, args=(changes, stop), name="watch", daemon=True
        )
        watcher.start()
        while not stop.is_set():
            try:
                with metrics.cycle():
                    self.step()
            except Exception:  # keep the agent alive: the next change or interval retries
                log.exception("cycle failed on node %s", self.settings.node)
            _wait_for_change(changes, stop, self.settings.interval_seconds)

    def step(self) -> None:
        """One cycle against the API: read the state, run the host cycle, write what changed."""
        body = self.kube.read_state()
        meta = self.kube.node_meta()
        if body is None:
            self._orphaned(meta)
            return
        # Before anything is written to the host or the Node: this label keeps the agent
        # DaemonSet on the node after the profile label goes, until the agent has undone it all.
        self._relabel(meta, {JOURNAL_LABEL: JOURNAL_PENDING})
        spec = HypervisorNodeStateSpec.model_validate(body["spec"])
        generation = int(body["metadata"].get("generation") or 0)
        previous = HypervisorNodeStateStatus.model_validate(body.get("status") or {})
        now = datetime.datetime.now(datetime.UTC)
        cycle = run_cycle(
            self.fs, spec, generation, meta, previous, systemd=self.systemd, now=now,
            timeout=self.settings.write_timeout_seconds,
        )
        status = cycle.status
        if status.host is not None and cycle.processes is not None:
            found = audit_and_measure(
                self.fs, AuditPolicy.from_settings(spec.host, spec.vmi), status.host,
                cycle.processes, self.sampler, spec.host.audit,
                isolated=measured_interference.profile_isolated_cpus(
                    spec.host.cpu.partition, status.host))
            status = with_vm_audit(status, found.audit, previous, generation, now)
            status = measured_interference.with_interference(
                status, found.interference, previous, generation, now)
            metrics.set_vms(found.audit)
            vm_metrics.set_interference(found.figures, found.interference.skipped)
        if spec.revert:
            # Reverted must be true when it is read: the operator deletes the state (and the
            # DaemonSet may take this agent away) as soon as it reads it, so the ready label
            # and the feature file go before the status says so. A feature file that cannot
            # be removed raises here, and the status is not written this cycle.
            self._publish(meta, spec, status)
        if significant(status) != significant(previous):
            self.kube.patch_status(status.model_dump(mode="json", exclude_none=True))
            metrics.STATUS_WRITES.inc()
            for c in cond.flipped(previous.conditions, status.conditions):
                self.kube.event(f"{c.type}{c.status}", c.message or c.reason,
                                warning=c.type == cond.DEGRADED and c.status == "True")
        if not spec.revert:
            # After the status, so that a feature file that cannot be written never hides it.
            self._publish(meta, spec, status)

    def _publish(
        self, meta: NodeMeta, spec: HypervisorNodeStateSpec, status: HypervisorNodeStateStatus
    ) -> None:
        """The node's ready label and NFD feature file, in line with `status`."""
        self._relabel(meta, {READY_LABEL: ready_label(spec, status)})
        nfd.publish(self.fs, spec, status)

    def _orphaned(self, meta: NodeMeta) -> None:
        """No state: the node is not (or no longer) under a profile. Undo what kvtune changed
        if the operator could not ask for it (e.g. the profile went while we were down)."""
        # First the label: a node no profile prepares must stop drawing VMIs at once.
        self._relabel(meta, {READY_LABEL: None})
        done = revert_orphaned(self.fs, self.systemd, timeout=self.settings.write_timeout_seconds)
        if done.results:
            log.info("restored %d host value(s) from the journal", len(done.results))
        if done.clean:
            # Last: without it (and without a profile) the DaemonSet takes this agent away.
            self._relabel(meta, {JOURNAL_LABEL: None})

    def _relabel(self, meta: NodeMeta, wanted: t.Mapping[str, str | None]) -> None:
        changes = label_changes(meta.labels, wanted)
        if changes:
            self.kube.patch_labels(changes)


def ready_label(spec: HypervisorNodeStateSpec, status: HypervisorNodeStateStatus) -> str | None:
    """The node's `kvtune.io/ready` value: from `Ready`, and none (removed) while the node
    leaves its profile, which then no longer prepares it."""
    if spec.revert:
        return None
    return "true" if cond.is_true(status.conditions, cond.READY) else "false"


def label_changes(
    current: t.Mapping[str, str], wanted: t.Mapping[str, str | None]
) -> dict[str, str | None]:
    """The labels of `wanted` (None: absent) that `current` does not already have.

    Computed from the Node as it is, never from what the process did before, so an agent that
    restarts finds nothing to change: its labels never flap (a flapping ready label would let
    the webhook steer VMIs away and back).
    """
    return {key: value for key, value in wanted.items() if current.get(key) != value}


def with_vm_audit(
    status: HypervisorNodeStateStatus,
    vms: NodeVmAudit,
    previous: HypervisorNodeStateStatus,
    generation: int,
    now: datetime.datetime,
) -> HypervisorNodeStateStatus:
    """The status with the running-VM audit and its VMsCompliant condition added."""
    condition = cond.merge(previous.conditions, [vms_condition(vms, generation)], now)
    others = [c for c in status.conditions if c.type != VMS_COMPLIANT]
    return status.model_copy(update={"vms": vms, "conditions": [*others, *condition]})


def _wait_for_change(changes: queue.Queue[str], stop: threading.Event, timeout: float) -> None:
    """Block until the state changes, `stop` is set, or `timeout` passes; coalesce bursts."""
    deadline = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=timeout)
    while not stop.is_set():
        left = (deadline - datetime.datetime.now(datetime.UTC)).total_seconds()
        if left <= 0:
            return
        try:
            changes.get(timeout=min(left, 0.5))
        except queue.Empty:
            continue
        while not changes.empty():
            changes.get_nowait()
        return
