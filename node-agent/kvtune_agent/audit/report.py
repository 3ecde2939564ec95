"""The text form of a NodeVmAudit, for `kvtune probe --vms`: one line per VM with what libvirt
says it got, its findings under it, and the node's memory account on top.

It is kept apart from the host report (`kvtune_agent.report`) so the two can change separately;
it uses the same gutter, `!!` for a violation and `! ` for a warning or an unreachable VM, so a
reader scanning the page sees where to look.
"""

from __future__ import annotations

import json
import textwrap

from kvtune_api.v1alpha1.audit import MemoryAccount, NodeVmAudit, VmAudit, VmFinding
from kvtune_api.v1alpha1.host import HostReport

from ..features.page import WIDTH
from ..host.hostfs import HostFS, ProcessTable
from ..report import format_report
from . import audit_node
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


def probe_output(
    fs: HostFS, report: HostReport, processes: ProcessTable, *, as_json: bool,
    host_uri: str | None,
) -> str:
    """`kvtune probe --vms`: the host report and the audit of its running VMs, as text or as one
    JSON object {"host": HostReport, "vms": NodeVmAudit} (the two fields of a node's status).
    `processes` is the process table the report was probed with."""
    # Without a profile only what holds on any VM host is checked (see AuditPolicy).
    audit = audit_node(fs, AuditPolicy(), report, processes, host_uri=host_uri)
    if as_json:
        return json.dumps(
            {
                "host": report.model_dump(mode="json", exclude_none=True),
                "vms": audit.model_dump(mode="json", exclude_none=True),
            },
            indent=2,
        )
    return f"{format_report(report)}\n\n{format_vm_audit(audit)}"
