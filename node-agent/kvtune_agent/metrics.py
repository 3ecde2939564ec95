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


# -- measured interference per VM (docs/interference.md) -----------------------------------------

#: VMs given series at most, by namespace/name order: a node runs tens to a few hundred VMs;
#: the bound keeps a node whose VMs churn (or a hostile pod posing as many) from growing the
#: scrape without end. VMs that stop lose their series at the next cycle.
MAX_VM_SERIES = 500
_VM = ["namespace", "name"]
VM_WAIT = Counter(
    "kvtune_agent_vm_vcpu_wait_seconds",
    "Time the VM's vCPU threads were runnable but waited for a physical CPU (schedstat run "
    "delay), summed over its vCPUs: the guest's steal.", _VM)
VM_RUN = Counter(
    "kvtune_agent_vm_vcpu_run_seconds",
    "Time the VM's vCPU threads ran on a physical CPU, summed over its vCPUs.", _VM)
VM_SWITCHES = Counter(
    "kvtune_agent_vm_vcpu_involuntary_switches",
    "Preemptions of the VM's vCPU threads (involuntary context switches).", _VM)
VM_MIGRATIONS = Counter(
    "kvtune_agent_vm_vcpu_migrations",
    "Moves of the VM's vCPU threads from one physical CPU to another.", _VM)
VM_IRQS = Counter(
    "kvtune_agent_vm_dedicated_cpu_interrupts",
    "Interrupts serviced on the VM's dedicated CPUs (every /proc/interrupts line).", _VM)
VM_FOREIGN = Counter(
    "kvtune_agent_vm_dedicated_cpu_foreign_seconds",
    "Time other tasks ran on the VM's dedicated CPUs (their busy time less its vCPUs').", _VM)
VM_VCPUS = Gauge("kvtune_agent_vm_vcpus", "vCPU threads of the VM found.", _VM)
VM_DEDICATED = Gauge(
    "kvtune_agent_vm_dedicated_cpus", "Host CPUs the VM's vCPUs are pinned to (0: floating).", _VM)
VM_REMOTE = Gauge(
    "kvtune_agent_vm_memory_remote_ratio",
    "Share (0-1) of the VM's resident memory on NUMA nodes away from its vCPUs.", _VM)
VM_HUGE = Gauge(
    "kvtune_agent_vm_memory_hugepage_ratio",
    "Share (0-1) of the VM's resident memory backed by hugepages.", _VM)
VM_SWAP = Gauge("kvtune_agent_vm_swap_bytes", "The VM's QEMU memory swapped out (VmSwap).", _VM)
VM_KSM = Gauge(
    "kvtune_agent_vm_ksm_merging_pages", "The VM's QEMU pages merged by KSM.", _VM)
EVIDENCE_SKIPPED = Counter(
    "kvtune_agent_vm_evidence_skipped",
    "Inputs of the interference measurement skipped, by reason (QemuNotFound, VmStopped, "
    "ThreadExited, FileMissing, FileMalformed, ...).", ["reason"])
#: The per-VM series, moved by kvtune_agent.audit.vm_metrics from each cycle's figures (this
#: module sits below the audit: the engine imports it).
VM_COUNTERS = (VM_WAIT, VM_RUN, VM_SWITCHES, VM_MIGRATIONS, VM_IRQS, VM_FOREIGN)
VM_GAUGES = (VM_VCPUS, VM_DEDICATED, VM_REMOTE, VM_HUGE, VM_SWAP, VM_KSM)
