"""CPU isolation: housekeeping CPUs for the host's own work, quiet CPUs for VMs' dedicated vCPUs.

The parts: probe.py reads what isolation moves (cores, IRQs, the workqueue mask, NUMA balancing,
kernel threads, irqbalance); facts.py what the plan needs beyond the report; plan.py the live
steps; boot.py the kernel arguments, in the boot step hugepages share. The partition itself is
features/cpu_partition.py, which the kubelet's reserved CPUs read too. See
docs/cpu-isolation.md.
"""

from __future__ import annotations

import datetime
import typing as t
from collections.abc import Mapping, Sequence

from kvtune_api.v1alpha1.host import CpuIsolationReport, HostReport, Problem

from ...host import bootloader, cpulist
from ...host.hostfs import HostFS, ProcessTable
from ..base import Backoff, Draft, Feature, Finding, Plan, PlanInputs
from ..page import Page
from . import boot, probe, text
from .facts import read_facts
from .plan import CONDITION, IsolationFacts
from .plan import plan as plan_isolation

if t.TYPE_CHECKING:
    from kvtune_api.v1alpha1.nodestate import (
        HypervisorNodeStateSpec,
        IrqRetry,
        PlannedStep,
        StepResult,
    )


def _moves_an_irq(step: PlannedStep) -> bool:
    return step.id.startswith("irq/") and step.id != "irq/default"


def _record(step: PlannedStep, result: StepResult, attempts: int, now: datetime.datetime,
            next_attempt: datetime.datetime, host: HostReport) -> IrqRetry:
    from kvtune_api.v1alpha1.nodestate import IrqRetry  # not for `kvtune probe`

    return IrqRetry(step=step.id, path=step.path, wanted=step.desired,
                    error=result.message[:200], attempts=attempts, last_attempt=now,
                    next_attempt=next_attempt)


def _refused(held: list[IrqRetry]) -> list[Finding]:
    irqs = cpulist.format_ids(int(record.step.removeprefix("irq/")) for record in held)
    soonest = min(record.next_attempt for record in held)
    return [Finding(CONDITION, "Warning", "IrqsNotMovable", (
        f"the kernel refused to move IRQs {irqs} off the isolated CPUs ({held[0].error}): "
        "managed IRQs, which their drivers place, are refused so (EIO, EPERM since 6.12); "
        f"asked again from {soonest:%Y-%m-%d %H:%M} UTC, not every cycle. "
        "bootIsolation's isolcpus=managed_irq keeps them off the isolated CPUs from the next "
        "boot"))]


#: The one retry mechanism, for IRQs the kernel refuses to move (managed ones on kernels whose
#: /proc/irq files do not say so, and no debugfs to ask).
IRQ_BACKOFF = Backoff(
    status_field="irq_retries", applies=_moves_an_irq,
    counts=lambda result: result.result == "Failed", record=_record, findings=_refused)


class CpuIsolation(Feature[CpuIsolationReport, IsolationFacts]):
    """IRQs, irqbalance, kernel noise and boot arguments, from spec.host.cpu.partition."""

    condition = CONDITION
    section = "cpu_isolation"
    problem_name = CONDITION
    backoffs = (IRQ_BACKOFF,)

    def probe(self, fs: HostFS, processes: ProcessTable) -> CpuIsolationReport:
        return probe.probe(fs, processes)

    def check(self, found: CpuIsolationReport) -> list[Problem]:
        return probe.check(found)

    def read(self, fs: HostFS, host: HostReport) -> IsolationFacts:
        return read_facts(fs, host)

    def plan(self, inputs: PlanInputs, facts: IsolationFacts | None, out: Draft) -> None:
        plan_isolation(inputs.spec.host.cpu, inputs.host, facts or IsolationFacts(), out)

    def restage(self, plan: Plan, inputs: PlanInputs, records: Mapping[str, Sequence[t.Any]],
                fs: HostFS, journaled: Mapping[str, str], timeout: float) -> Plan:
        # The boot configuration is read (grubby may run) only where arguments are wanted, or
        # kvtune wrote the command line and may have arguments of ours to withdraw.
        if inputs.spec.host.cpu.partition is None and not journaled:
            return plan
        return boot.stage(plan, inputs.spec, inputs.host,
                          bootloader.read_facts(fs, timeout=timeout), journaled)

    def report(self, page: Page, report: HostReport) -> None:
        text.section(page, report)

    def unmanaged(self, spec: HypervisorNodeStateSpec) -> str | None:
        if spec.host.cpu.partition is None:
            return "spec.host.cpu.partition is not set: no CPU is isolated"
        return None


FEATURE = CpuIsolation()
