"""The PLE section of `kvtune probe`'s text report (Feature.report)."""

from __future__ import annotations

import textwrap

from kvtune_api.v1alpha1.host import (
    HostReport,
    PleReport,
)

from ...host import cpulist
from ..page import LABEL_WIDTH, WIDTH, Page, or_dash
from . import probe as cpu


def _cpu(page: Page, report: HostReport) -> None:
    found, topology = report.cpu, report.numa
    page.heading("CPU (lscpu)", "CPU")
    page.row("Vendor ID:", or_dash(found.vendor))
    page.row("Model name:", f"{or_dash(found.model_name)} (family {or_dash(found.family)}, "
             f"model {or_dash(found.model)}, stepping {or_dash(found.stepping)})")
    threads = (f"{topology.min_threads_per_core}-{topology.threads_per_core}"
               if topology.min_threads_per_core < topology.threads_per_core
               else str(topology.threads_per_core))
    sockets, per_socket, _ = cpulist.layout(topology)
    # lscpu's figures, the kernel's grouping, so that they multiply out to the CPUs; the
    # kubelet's core count follows where it differs.
    kubelet = (f" (the kubelet counts {topology.cores} cores)"
               if topology.kernel_cores != topology.cores else "")
    page.row("CPU(s):", f"{found.logical_cpus} online; {sockets} socket(s) x "
             f"{per_socket:g} core(s) x {threads} thread(s){kubelet}",
             f"{cpulist.CPUS}/cpuN/topology")
    page.row("On-line CPU(s) list:", or_dash(topology.online_cpus))
    page.row("Off-line CPU(s) list:", or_dash(topology.offline_cpus), f"{cpulist.CPUS}/offline")
    page.row("Isolated CPU(s):", or_dash(topology.isolated_cpus))
    guest = " (this host is a VM guest)" if found.hypervisor_guest else ""
    page.row("Architecture:", or_dash(found.architecture))
    page.row("Virtualization:", f"{found.virtualization}{guest}", cpu.CPUINFO)
    page.row("KVM module:", or_dash(found.kvm_module))
    page.row("/dev/kvm:", "present" if found.kvm_device else "missing", "/dev/kvm")


def _ple(page: Page, ple: PleReport) -> None:
    page.heading("PAUSE-LOOP EXITING (vmxcap)", "PLE")
    if not ple.applicable:
        page.row("Applicable:", "no: PLE belongs to VT-x and AMD-V, which KVM does not use here")
        instead = ple.equivalent or f"nothing: {ple.evidence[0].observed}"
        lines = textwrap.wrap(instead, WIDTH - LABEL_WIDTH - 4)
        for line in lines:
            page.row("Instead:" if line is lines[0] else "", line)
        return
    page.row("Supported:", ple.supported, "PLE")
    page.row("Enabled:", ple.enabled, "PLE")
    params = {k: v for k, v in ple.model_dump(by_alias=False).items()
              if k.startswith(("ple_", "pause_")) and v is not None}
    if params:
        page.row(f"{ple.module} parameters:", " ".join(f"{k}={v}" for k, v in params.items()))
    for evidence in ple.evidence:
        page.row("Evidence:" if evidence is ple.evidence[0] else "", f"{evidence.source}: "
                 f"{evidence.observed}")


def section(page: Page, report: HostReport) -> None:
    """Write the section on `page`."""
    _cpu(page, report)
    _ple(page, report.cpu.ple)
