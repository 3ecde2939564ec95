"""The kubelet section of `kvtune probe`'s text report (Feature.report)."""

from __future__ import annotations

from kvtune_api.v1alpha1.host import (
    HostReport,
)

from .. import kubelet_report
from ..page import Page, or_dash


def _kubelet(page: Page, report: HostReport) -> None:
    kubelet = report.kubelet
    known = kubelet_report.known(kubelet)
    page.heading(f"KUBELET ({kubelet_report.read_from(kubelet) if known else 'not found'})",
                 "Kubelet")
    if not known:
        return
    rows = {
        "cpuManagerPolicy:": kubelet.cpu_manager_policy,
        "cpuManagerPolicyOptions:": " ".join(
            f"{k}={v}" for k, v in kubelet.cpu_manager_policy_options.items()),
        "topologyManagerPolicy:": kubelet.topology_manager_policy,
        "topologyManagerScope:": kubelet.topology_manager_scope,
        "memoryManagerPolicy:": kubelet.memory_manager_policy,
        "reservedSystemCPUs:": kubelet.reserved_system_cpus,
        "systemReserved memory:": kubelet.system_reserved_memory,
        "kubeReserved memory:": kubelet.kube_reserved_memory,
        "reservedMemory:": "; ".join(
            f"node {r.numa_node} " + " ".join(f"{k}={v}" for k, v in r.limits.items())
            for r in kubelet.reserved_memory),
    }
    for label, value in rows.items():
        page.row(label, or_dash(value))


def section(page: Page, report: HostReport) -> None:
    """Write the section on `page`."""
    _kubelet(page, report)
