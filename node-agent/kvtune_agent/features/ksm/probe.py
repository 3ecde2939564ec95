"""Kernel samepage merging and ksmtuned, which turns it on under memory pressure.

Merging identical pages saves memory but costs host CPU and VM latency; on nodes with enough
memory it should be off, and ksmtuned would quietly turn it back on.
"""

from __future__ import annotations

import typing as t

from kvtune_api.v1alpha1.host import KsmReport, Problem

from ...host import daemon
from ...host.hostfs import HostFS, ProcessTable

KSM = "/sys/kernel/mm/ksm"
#: 0 stops ksmd, 1 runs it, 2 stops it and unmerges every merged page.
KSM_RUN = f"{KSM}/run"
_STATES: dict[int, t.Literal["Stopped", "Running", "Unmerging"]] = {
    0: "Stopped", 1: "Running", 2: "Unmerging",
}


def probe(fs: HostFS, processes: ProcessTable) -> KsmReport:
    ksmtuned = daemon.probe(fs, processes, "ksmtuned")
    if not fs.is_dir(KSM):
        return KsmReport(state="Absent", ksmtuned=ksmtuned)
    run = fs.read_int(KSM_RUN)
    state = _STATES.get(run, "Unknown") if run is not None else "Unknown"
    if run is not None and state == "Unknown":
        fs.note(KSM_RUN, f"expected 0, 1 or 2, found {run}")
    return KsmReport(
        state=state,
        pages_shared=fs.read_int(f"{KSM}/pages_shared"),
        pages_sharing=fs.read_int(f"{KSM}/pages_sharing"),
        merge_across_nodes=fs.read_int(f"{KSM}/merge_across_nodes"),
        ksmtuned=ksmtuned,
    )


def check(ksm: KsmReport) -> list[Problem]:
    """Findings: KSM merging, ksmtuned running or enabled."""
    problems = []
    if ksm.state == "Running":
        across = ", across NUMA nodes" if ksm.merge_across_nodes else ""
        problems.append(Problem(
            severity="Warning", feature="KSM", path=KSM_RUN,
            message=f"KSM is merging pages ({KSM_RUN} = 1, {ksm.pages_sharing or 0} pages "
            f"sharing{across}): it costs host CPU and VM latency when memory is sufficient; "
            "memory.ksm: Disabled in the profile unmerges and stops it (expected only if "
            "KubeVirt's own KSM handler manages this node)",
        ))
    tuned = ksm.ksmtuned
    if tuned.running or tuned.unit == "Enabled":
        how = f"runs (pid {', '.join(map(str, tuned.pids))})" if tuned.running else "is enabled"
        problems.append(Problem(
            severity="Warning", feature="KSM", path=tuned.unit_path or "/proc",
            message=f"ksmtuned {how}: it turns KSM back on under memory pressure; stop and "
            "disable ksmtuned.service (systemctl disable --now ksmtuned)",
        ))
    return problems
