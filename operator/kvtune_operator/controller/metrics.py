"""The Prometheus metrics of the operator: every metric object it moves, and the few helpers that
the reconcile loop calls at its seams.

Why one module: the names, labels and buckets are the contract with dashboards and alerts
(docs/metrics.md documents each), so they are defined once, and the pure modules (planning,
roll-up) never see them. The label values are bounded enums and profile names; never a node
name, since a cluster has thousands of nodes and few profiles. `kvtune operator` serves them
(`--metrics-port`) from prometheus_client's default registry, beside its process metrics; the
webhook's own are `webhook.metrics`.
"""

from __future__ import annotations

import re
import time
import typing as t
from collections.abc import Awaitable, Iterator, Sequence
from contextlib import contextmanager

from kvtune_api.v1alpha1.profile import HypervisorProfileStatus
from prometheus_client import Counter, Gauge, Histogram

from .views import Action, CordonNode

PassOutcome = t.Literal["idle", "wrote", "error"]
PHASES = ("Ready", "Progressing", "Degraded", "Waiting")

RECONCILE_PASSES = Counter(
    "kvtune_operator_reconcile_passes_total",
    "Reconcile passes of a profile, by outcome: idle (nothing to write), wrote (actions or a "
    "status written) or error (the pass raised; kopf retries it).",
    ["profile", "result"],
)
# A pass over the in-memory view takes milliseconds; a first converge of thousands of nodes,
# or a pass counting VM pods of draining nodes, takes seconds to minutes.
RECONCILE_SECONDS = Histogram(
    "kvtune_operator_reconcile_duration_seconds",
    "Duration of one reconcile pass of a profile, API writes included.",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300),
)
API_WRITES = Counter(
    "kvtune_operator_api_writes_total",
    "Writes to the Kubernetes API, by action (create_state, patch_state, delete_state, "
    "label_node, cordon, uncordon, evict_vm_pods, patch_profile_status, ...) and result "
    "(ok or error).",
    ["action", "result"],
)
PROFILE_NODES = Gauge(
    "kvtune_operator_profile_nodes",
    "Nodes of a profile by phase (Ready, Progressing, Degraded, Waiting), from its rolled-up "
    "status; Degraded includes nodes claimed by two profiles.",
    ["profile", "phase"],
)


class _PassResult(t.Protocol):
    """What `passes.PassResult` offers; a protocol, so this module needs no `passes`."""

    @property
    def actions(self) -> Sequence[object]: ...

    @property
    def status(self) -> object | None: ...


R = t.TypeVar("R", bound=_PassResult)


async def reconcile_pass(profile: str, work: Awaitable[R]) -> R:
    """Await one reconcile pass of `profile`, counting and timing it. A cancelled pass (the
    operator stopping) is not counted: it is neither done nor failed."""
    start = time.perf_counter()
    try:
        result = await work
    except Exception:
        _count_pass(profile, "error", start)
        raise
    _count_pass(profile, "wrote" if result.actions or result.status is not None else "idle", start)
    return result


def _count_pass(profile: str, outcome: PassOutcome, start: float) -> None:
    RECONCILE_PASSES.labels(profile, outcome).inc()
    RECONCILE_SECONDS.observe(time.perf_counter() - start)


def action_name(action: Action) -> str:
    """The `action` label of an API write: the action's type in snake case (a bounded set)."""
    if isinstance(action, CordonNode):
        return "cordon" if action.unschedulable else "uncordon"
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(action).__name__).lower()


@contextmanager
def api_write(what: Action | t.Literal["patch_profile_status"]) -> Iterator[None]:
    """Count the API write made inside the block, as ok or error."""
    name = what if isinstance(what, str) else action_name(what)
    try:
        yield
    except Exception:
        API_WRITES.labels(name, "error").inc()
        raise
    API_WRITES.labels(name, "ok").inc()


def set_profile_nodes(profile: str, status: HypervisorProfileStatus) -> None:
    """The phase gauges of `profile` from its rolled-up status (the counts in `kubectl get hvp`)."""
    counts = (status.ready_nodes, status.progressing_nodes, status.degraded_nodes,
              status.waiting_nodes)
    for phase, count in zip(PHASES, counts, strict=True):
        PROFILE_NODES.labels(profile, phase).set(count)


def forget_profile(profile: str) -> None:
    """Drop the series of a deleted profile, so dashboards do not show it forever."""
    for phase in PHASES:
        PROFILE_NODES.remove(profile, phase)
    for outcome in t.get_args(PassOutcome):
        RECONCILE_PASSES.remove(profile, outcome)
