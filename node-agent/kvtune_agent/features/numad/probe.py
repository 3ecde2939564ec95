"""The numad daemon, which migrates processes and their memory between NUMA nodes.

With the kubelet's static CPU manager and topology manager pinning VMs, numad fights them; on
nodes without pinning it may help. The probe reports it; the profile decides.
"""

from __future__ import annotations

from kvtune_api.v1alpha1.host import DaemonReport, Problem

from ...host import daemon
from ...host.hostfs import HostFS, ProcessTable


def probe(fs: HostFS, processes: ProcessTable) -> DaemonReport:
    return daemon.probe(fs, processes, "numad")


def check(numad: DaemonReport) -> list[Problem]:
    """Findings: numad running, or enabled to start at boot."""
    if numad.running:
        return [Problem(
            severity="Warning", feature="Numad", path=numad.unit_path or "/proc",
            message=f"numad runs (pid {', '.join(map(str, numad.pids))}) and moves VM memory "
            "between NUMA nodes behind the kubelet's CPU and topology managers; disable it "
            "(systemctl disable --now numad) unless VMs here are not pinned",
        )]
    if numad.unit == "Enabled":
        return [Problem(
            severity="Info", feature="Numad", path=numad.unit_path or "",
            message=f"numad is not running but {numad.unit_path} is enabled "
            f"({', '.join(numad.wanted_by)}) and will start at boot",
        )]
    return []
