"""The text form of a NodeVmAudit, for `kvtune probe --vms`: one line per VM with what libvirt
says it got, its findings under it, and the node's memory account on top.

It is kept apart from the host report (`kvtune_agent.report`) so the two can change separately;
it uses the same gutter, `!!` for a violation and `! ` for a warning or an unreachable VM, so a
reader scanning the page sees where to look.
"""

from __future__ import annotations

import json
import textwrap
import time

from kvtune_api.v1alpha1.audit import MemoryAccount, NodeVmAudit, VmAudit, VmFinding
from kvtune_api.v1alpha1.host import HostReport
from kvtune_api.v1alpha1.interference import NodeInterference
from kvtune_api.v1alpha1.profile import AuditSettings

from ..features.page import WIDTH
from ..host.hostfs import HostFS, ProcessTable
from ..report import format_report
from . import Sampler, audit_and_measure, interference
from .checks import AuditPolicy

GUTTER = {"Violation": "!!", "Warning": "! ", "Unreachable": "! ", "Info": ". "}


def _size(kib: int | None) -> str:
    if kib is None:
        return "-"
    return f"{kib / 2**20:.1f} GiB" if abs(kib) >= 2**20 else f"{kib // 1024} MiB"


def _finding_lines(finding: VmFinding, indent: int) -> list[str]:
    head = f"{GUTTER[finding.severity]}{' ' * indent}{finding.severity.upper():<10}{finding.rule} "
    return textwrap.wrap(
        finding.message,
        WIDTH,
        initial_indent=head,
        subsequent_indent=" " * (indent + 12),
        break_on_hyphens=False,
    )


def _memory(memory: MemoryAccount) -> list[str]:
    mark = "!!" if memory.overcommitted else "  "
    lines = [
        f"{mark}  memory: VMs take {_size(memory.demand_kib)} of {_size(memory.capacity_kib)} "
        f"ordinary memory, headroom {_size(memory.headroom_kib)}",
        f"      (guest {_size(memory.guest_kib)} + overhead {_size(memory.overhead_kib)}; "
        "ordinary = MemTotal - hugepage pools)",
    ]
    lines += [
        f"{'!!' if pool.headroom_kib < 0 else '  '}  hugepages {pool.size}: VMs take "
        f"{_size(pool.demand_kib)} of {_size(pool.capacity_kib)}, headroom "
        f"{_size(pool.headroom_kib)}"
        for pool in memory.hugepages
    ]
    return lines


def _vm(vm: VmAudit) -> list[str]:
    label = f"{vm.namespace}/{vm.name}" if vm.namespace else vm.name
    pid = f" (launcher pid {vm.launcher_pid})" if vm.launcher_pid is not None else ""
    head = f"{GUTTER.get(vm.state, '  ')}  {label}{pid}: {vm.state}"
    if vm.state == "Unreachable":
        return [
            head,
            *textwrap.wrap(
                vm.error or "", WIDTH, initial_indent="      ", subsequent_indent="      "
            ),
        ]
    cpus = f"on {vm.cpus} (node {vm.cpu_nodes or '?'})" if vm.cpus else "floating"
    lines = [
        head,
        f"      cpu: {vm.vcpus} vCPUs {cpus}, emulator {vm.emulator_cpus or 'floating'}",
        f"      memory: {_size(vm.memory_kib)} + {_size(vm.overhead_kib)} overhead, from "
        f"{'node ' + vm.memory_nodes if vm.memory_nodes else 'any node'}, hugepages "
        f"{vm.hugepage_size or 'none'}",
        f"      nics: {', '.join(vm.interfaces) or '-'}; disks: {', '.join(vm.disks) or '-'}",
    ]
    for finding in vm.findings:
        lines += _finding_lines(finding, 4)
    return lines


def format_vm_audit(audit: NodeVmAudit) -> str:
    """The audit as a page of text."""
    lines = [
        f"VMS (libvirt): {audit.vms} running, {audit.compliant} compliant, {audit.violations} "
        f"with violations, {audit.unreachable} unreachable",
        *_memory(audit.memory),
    ]
    for finding in audit.findings:
        lines += _finding_lines(finding, 2)
    for vm in audit.items:
        lines += ["", *_vm(vm)]
    if audit.truncated:
        lines += ["", f"   ... {audit.vms - len(audit.items)} more VMs not listed"]
    return "\n".join(lines)


def _figure(value: float | None, unit: str = " %") -> str:
    return "-" if value is None else f"{value:g}{unit}"


def format_interference(summary: NodeInterference) -> str:
    """The measured interference as text: the offenders' causes in the words of the node's
    VMsIsolated condition, then one line per VM."""
    window = _figure(summary.window_seconds, " s")
    lines = [f"INTERFERENCE (measured over {window}): {summary.vms} VMs, "
             f"{summary.over_threshold} over spec.audit's thresholds"]
    for offender in summary.offenders:
        lines += textwrap.wrap(f"{offender.cause}: {offender.message}", WIDTH,
                               initial_indent="!!  ", subsequent_indent="      ")
    for vm in summary.items:
        label = f"{vm.namespace}/{vm.name}" if vm.namespace else vm.name
        worst = (f" (vCPU {vm.worst_vcpu} {_figure(vm.worst_vcpu_wait_percent)})"
                 if vm.worst_vcpu is not None else "")
        lines += [
            "",
            f"{'!!' if vm.causes else '  '}  {label}: {vm.vcpus} vCPUs on "
            f"{vm.dedicated_cpus or 'floating CPUs'}, seen on {vm.ran_on or '-'}",
            f"      cpu wait {_figure(vm.cpu_wait_percent)}{worst}, preempted "
            f"{_figure(vm.involuntary_switches_per_second, '/s')}, migrated "
            f"{_figure(vm.migrations_per_second, '/s')}",
            f"      memory remote {_figure(vm.remote_memory_percent)}, hugepages "
            f"{_figure(vm.hugepage_memory_percent)}, swap {_figure(vm.swap_kib, ' KiB')}, "
            f"KSM {_figure(vm.ksm_merging_pages, ' pages')}",
        ]
        if vm.dedicated_cpus:
            lines.append(
                f"      dedicated CPUs: {_figure(vm.irqs_per_second, ' IRQs/s')}, other tasks "
                f"{_figure(vm.foreign_percent)}"
                + (f", allowed: {', '.join(vm.foreign_tasks)}" if vm.foreign_tasks else "")
                + (f", outside the isolated set: {vm.outside_isolated}"
                   if vm.outside_isolated else ""))
    if summary.skipped:
        lines += ["", "   skipped: " + ", ".join(f"{k} {v}" for k, v in summary.skipped.items())]
    return "\n".join(lines)


def probe_output(
    fs: HostFS, report: HostReport, processes: ProcessTable, *, as_json: bool,
    host_uri: str | None, window: float = 1.0,
) -> str:
    """`kvtune probe --vms`: the host report, the audit of its running VMs and their
    interference measured over `window` seconds, as text or as one JSON object {"host":
    HostReport, "vms": NodeVmAudit, "interference": NodeInterference} (the fields of a node's
    status). `processes` is the process table the report was probed with."""
    # Without a profile only what holds on any VM host is checked (see AuditPolicy), against
    # the thresholds' defaults.
    sampler, limits = Sampler(), AuditSettings()
    isolated = interference.isolated_cpus(report)
    audit_and_measure(fs, AuditPolicy(), report, processes, sampler, limits,
                      isolated=isolated, host_uri=host_uri)
    time.sleep(window)
    found = audit_and_measure(fs, AuditPolicy(), report, processes, sampler, limits,
                              isolated=isolated, host_uri=host_uri)
    if as_json:
        return json.dumps(
            {
                "host": report.model_dump(mode="json", exclude_none=True),
                "vms": found.audit.model_dump(mode="json", exclude_none=True),
                "interference": found.interference.model_dump(mode="json", exclude_none=True),
            },
            indent=2,
        )
    return (f"{format_report(report)}\n\n{format_vm_audit(found.audit)}\n\n"
            f"{format_interference(found.interference)}")
