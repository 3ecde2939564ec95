"""The Prometheus metrics of the operator and of the webhook: every metric object of both, and
the few helpers that the reconcile loop and the admission server call at their seams.

Why one module: the names, labels and buckets are the contract with dashboards and alerts
(docs/metrics.md documents each), so they are defined once, and the pure modules (planning,
roll-up, mutation) never see them. The label values are bounded enums and profile names; never a
node name, since a cluster has thousands of nodes and few profiles. `kvtune operator` and
`kvtune webhook` serve them (`--metrics-port`) from prometheus_client's default registry, beside
their process metrics; each process moves only its own series.
"""

from __future__ import annotations

import dataclasses
import re
import time
import typing as t
from collections.abc import Awaitable, Iterator, Sequence
from contextlib import contextmanager

from kvtune_api.v1alpha1.profile import HypervisorProfileStatus
from prometheus_client import Counter, Gauge, Histogram

from .views import Action, CordonNode

PassOutcome = t.Literal["idle", "wrote", "error"]
Operation = t.Literal["mutate", "validate"]
#: What an admission decided. The handlers name the first two; a refusal and a crash are seen
#: here, as the exceptions they are.
Decision = t.Literal["patched", "allowed", "skipped", "denied", "error"]
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
ADMISSIONS = Counter(
    "kvtune_webhook_admissions_total",
    "VMI admissions answered by the webhook, by operation (mutate or validate) and result "
    "(patched, allowed, skipped, denied, error).",
    ["operation", "result"],
)
# One answer takes a few milliseconds; calls queue behind each other in a burst, up to the
# webhook timeout (at most 30 s).
ADMISSION_SECONDS = Histogram(
    "kvtune_webhook_admission_duration_seconds",
    "Time to decide one admission inside the webhook (reading the namespace included; not the "
    "TLS and HTTP handling around it).",
    ["operation"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


class _PassResult(t.Protocol):
    """What `controller.PassResult` offers; a protocol, so this module needs no controller."""

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


@dataclasses.dataclass
class Answer:
    """What an admission decided; the server sets `result` before leaving the block."""

    result: Decision = "allowed"


@contextmanager
def admission(operation: Operation) -> Iterator[Answer]:
    """Count and time one admission; an exception inside is an error."""
    answer = Answer()
    start = time.perf_counter()
    try:
        yield answer
    except Exception:
        answer.result = "error"
        raise
    finally:
        ADMISSIONS.labels(operation, answer.result).inc()
        ADMISSION_SECONDS.labels(operation).observe(time.perf_counter() - start)


def _initialise() -> None:
    # Series that exist from the start read as 0 rather than as absent, so rate() and alerts
    # on them work before the first event.
    for operation, results in (("mutate", ("patched", "skipped", "denied", "error")),
                               ("validate", ("allowed", "skipped", "denied", "error"))):
        for result in results:
            ADMISSIONS.labels(operation, result)
        ADMISSION_SECONDS.labels(operation)


_initialise()
