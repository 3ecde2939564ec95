"""The node agent's Prometheus metrics: every metric object of the agent, and the helpers the
agent loop (which also times each probe) and the apply step call at their seams.

Why one module: the names, labels and buckets are the contract with dashboards and alerts
(docs/metrics.md documents each), and the planner and the status builder stay pure. No label
names the node: each agent serves its own node's figures, and Prometheus adds the pod and node
as target labels. `kvtune agent` serves them (`--metrics-port`) from prometheus_client's
default registry, beside its process metrics.
"""

from __future__ import annotations

import time
import typing as t
from collections.abc import Iterator
from contextlib import contextmanager

from kvtune_api.v1alpha1.audit import NodeVmAudit
from prometheus_client import Counter, Gauge, Histogram

#: A probe reads a few hundred sysfs and procfs files: tens of milliseconds, more on hosts with
#: many CPUs, NICs or disks. A cycle adds host writes, each bounded by a 10 s timeout.
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

PROBE_SECONDS = Histogram(
    "kvtune_agent_probe_duration_seconds",
    "Duration of one probe of the host (all features).",
    buckets=_BUCKETS,
)
CYCLE_SECONDS = Histogram(
    "kvtune_agent_cycle_duration_seconds",
    "Duration of one agent cycle: read the state, probe, plan, apply, audit VMs, report.",
    buckets=_BUCKETS,
)
CYCLES = Counter(
    "kvtune_agent_cycles_total",
    "Agent cycles by result: ok, or error (the cycle raised; the next change or interval "
    "retries).",
    ["result"],
)
LAST_SUCCESS = Gauge(
    "kvtune_agent_last_successful_cycle_timestamp_seconds",
    "Unix time the last cycle finished without an error (0: none yet).",
)
APPLY_STEPS = Counter(
    "kvtune_agent_apply_steps_total",
    "Planned host changes attempted in Enforce mode, by feature (Hugepages, KSM, Numad, THP, "
    "SRIOV, PLE, BlockDevices, ...) and result (Applied, Partial, Failed, Skipped, Waiting).",
    ["feature", "result"],
)
STATUS_WRITES = Counter(
    "kvtune_agent_status_writes_total",
    "Writes of the node's HypervisorNodeState status (only when something significant "
    "changed).",
)
VMS = Gauge(
    "kvtune_agent_vms",
    "Running VMs found by the last VM audit, by state: compliant, violation (at least one "
    "isolation promise broken) or unreachable (libvirt could not be asked).",
    ["state"],
)

VmState = t.Literal["compliant", "violation", "unreachable"]


@contextmanager
def cycle() -> Iterator[None]:
    """Count and time the agent cycle run inside the block."""
    start = time.perf_counter()
    try:
        yield
    except Exception:
        CYCLES.labels("error").inc()
        raise
    finally:
        CYCLE_SECONDS.observe(time.perf_counter() - start)
    CYCLES.labels("ok").inc()
    LAST_SUCCESS.set_to_current_time()


def count_step(feature: str, result: str) -> None:
    """One attempted host change and what became of it."""
    APPLY_STEPS.labels(feature, result).inc()


def set_vms(audit: NodeVmAudit) -> None:
    """The VM gauges from the latest audit of running VMs."""
    states: dict[VmState, int] = {
        "compliant": audit.compliant,
        "violation": audit.violations,
        "unreachable": audit.unreachable,
    }
    for state, count in states.items():
        VMS.labels(state).set(count)


# Series that exist from the start read as 0 rather than as absent.
CYCLES.labels("ok")
CYCLES.labels("error")
