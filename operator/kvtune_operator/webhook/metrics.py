"""The Prometheus metrics of the webhook: every metric object it moves, and the helper the
admission server calls around each answer.

Why one module: the names, labels and buckets are the contract with dashboards and alerts
(docs/metrics.md documents each), so they are defined once, and the pure modules (admission,
mutation, validation) never see them. The label values are bounded enums. `kvtune webhook`
serves them (`--metrics-port`) from prometheus_client's default registry, beside its process
metrics; the operator's own are `controller.metrics`.
"""

from __future__ import annotations

import dataclasses
import time
import typing as t
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Histogram

Operation = t.Literal["mutate", "validate"]
#: What an admission decided. The handlers name the first two; a refusal and a crash are seen
#: here, as the exceptions they are.
Decision = t.Literal["patched", "allowed", "skipped", "denied", "error"]

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
