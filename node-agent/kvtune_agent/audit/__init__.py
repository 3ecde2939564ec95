"""The audit of running VMs: is the isolation a profile promises what the hypervisor did?

Settings on paper (a profile, a shaped VMI) are not proof: the kubelet may have had no exclusive
CPUs left, a VMI may have opted out, a NIC may sit on a shared bridge. `audit_node` finds every
running KubeVirt VM of the host in /proc (`launchers`), reads what its libvirt actually runs
(`connect`, `domains`), and judges it (`checks`); the result is HypervisorNodeState.status.vms,
and `vms_condition` turns it into the node's VMsCompliant condition.

The agent loop that publishes the status calls, once per probe, with the process table that
probe was made with:

    policy = AuditPolicy.from_settings(node_state.spec.host, profile_vmi_settings)
    status.vms = audit_node(fs, policy, host_report, processes)
    conditions.append(vms_condition(status.vms, generation))
"""

from __future__ import annotations

import dataclasses

from kvtune_api.v1alpha1.audit import NodeVmAudit, VmFinding
from kvtune_api.v1alpha1.host import HostReport

from ..host import launchers
from ..host.hostfs import HostFS, ProcessTable
from ..host.launchers import Launcher
from .checks import AuditPolicy, Observed, audit
from .condition import VMS_COMPLIANT, vms_condition
from .connect import (
    DEFAULT_BUDGET,
    DEFAULT_TIMEOUT,
    Answer,
    Connect,
    Listing,
    ask_all,
    open_read_only,
)

__all__ = [
    "VMS_COMPLIANT",
    "AuditPolicy",
    "Connect",
    "audit_node",
    "open_read_only",
    "vms_condition",
]
#: Domain names quoted when a launcher's libvirt does not run its VM.
MAX_LISTED = 5


def _observed(launcher: Launcher, answer: Answer, *, own: bool = True) -> Observed:
    """The launcher's VM from what a libvirt listed (`own`: its own, in its pod), or from why
    that libvirt could not be asked."""
    base = Observed(
        name=launcher.name,
        namespace=launcher.namespace,
        domain_name=launcher.domain,
        pid=launcher.pid,
        netns=launcher.netns or f"pid:{launcher.pid}",
        mems_allowed=launcher.mems_allowed,
    )
    if launcher.conflict is not None:
        return dataclasses.replace(base, error=launcher.conflict)
    if isinstance(answer, str):
        return dataclasses.replace(base, error=answer)
    # A launcher's own libvirt runs its VM only: one domain under another name is still it.
    name = launcher.domain if launcher.domain in answer or not own else next(iter(answer), "")
    if name not in answer or (name != launcher.domain and len(answer) > 1):
        # Its daemon is its pod's, which names the domains: only a few, cut short, are quoted.
        names = sorted(answer)
        listed = ", ".join(n[:64] for n in names[:MAX_LISTED]) or "none"
        listed += f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else ""
        return dataclasses.replace(
            base, error=f"no running domain {launcher.domain} in its libvirt (running: {listed})"
        )
    facts = answer[name]
    if isinstance(facts, str):
        return dataclasses.replace(base, domain_name=name, error=facts)
    return dataclasses.replace(base, domain_name=name, domain=facts)


def _split(domain: str) -> tuple[str, str]:
    """(namespace, name) of a KubeVirt domain name; ("", name) for any other domain."""
    namespace, sep, name = domain.partition(launchers.DOMAIN_SEPARATOR)
    return (namespace, name) if sep and name else ("", domain)


def _unclaimed(fs: HostFS, answer: Listing, claimed: set[str]) -> list[Observed]:
    """The domains of a host-level libvirt that no launcher accounts for."""
    netns = fs.readlink("/proc/1/ns/net") or "host"
    observed = []
    for domain, facts in sorted(answer.items()):
        if domain not in claimed:
            namespace, name = _split(domain)
            observed.append(
                Observed(
                    name=name,
                    namespace=namespace,
                    domain_name=domain,
                    pid=None,
                    netns=netns,
                    mems_allowed=None,
                    domain=None if isinstance(facts, str) else facts,
                    error=facts if isinstance(facts, str) else None,
                )
            )
    return observed


def audit_node(
    fs: HostFS,
    policy: AuditPolicy,
    host: HostReport,
    processes: ProcessTable,
    *,
    connect: Connect = open_read_only,
    host_uri: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    budget: float = DEFAULT_BUDGET,
) -> NodeVmAudit:
    """Audit every running VM of the host behind `fs` against `policy`.

    Each virt-launcher's own libvirt is asked through its socket. `host_uri` (e.g.
    qemu:///system, on hosts that also run VMs outside KubeVirt) is asked for the launchers
    without a socket and for every domain no launcher claimed. `host` is the probe of the same
    host (NUMA nodes, memory) and `processes` the process table that probe was made with, so the
    VMs are looked for in the same read of /proc. Each daemon gets `timeout` seconds and all of
    them together `budget` (see `connect.ask_all`). Nothing is ever changed: connections are
    read-only.
    """
    found = launchers.discover(fs, processes)
    notes = [
        VmFinding(severity="Warning", rule="Reachable", message=f"{i.path}: {i.detail}")
        for i in (*processes.issues, *fs.take_issues())
    ]
    asked = [lc for lc in found if lc.socket is not None and lc.conflict is None]
    uris = {lc.pid: launchers.session_uri(fs, lc.socket or "") for lc in asked}
    # The configured host URI first: it is the operator's, not a pod's.
    answers = ask_all(
        [*([host_uri] if host_uri else []), *uris.values()], connect, timeout, budget
    )
    observed = [_observed(launcher, answers[uris[launcher.pid]]) for launcher in asked]
    observed += [_observed(lc, "") for lc in found if lc.conflict is not None]
    waiting = [lc for lc in found if lc.socket is None and lc.conflict is None]
    if host_uri is None:
        answer: Answer = (
            "no libvirt socket in its root (looked for "
            f"{' and '.join(launchers.SOCKETS)}), and no host-level libvirt URI is configured"
        )
    else:
        answer = answers[host_uri]
        if not isinstance(answer, str):
            claimed = {vm.domain_name for vm in observed} | {w.domain for w in waiting}
            observed += _unclaimed(fs, answer, claimed)
    observed += [_observed(launcher, answer, own=False) for launcher in waiting]
    return audit(observed, host, policy, notes)
