"""KSM: kernel samepage merging, and ksmtuned which turns it back on, as the profile wants them;
left to KubeVirt where its KSM handler manages the node.

Stopping KSM takes two writes (run=2 unmerges, run=0 stops): `sequence` tells the engine, so
apply and revert both unmerge before they stop."""

from __future__ import annotations

import typing as t

from kvtune_api.v1alpha1.host import (
    HostReport,
    KsmReport,
    Problem,
)

from ...host.hostfs import HostFS, ProcessTable
from ...host.systemd import UnitState
from ..base import (
    Draft,
    Feature,
    NodeMeta,
    PlanInputs,
)
from ..page import Page
from ..units import unit_step
from . import probe as ksm_probe
from . import text
from .probe import KSM, KSM_RUN

if t.TYPE_CHECKING:
    from kvtune_api.v1alpha1.nodestate import (
        HypervisorNodeStateSpec,
        HypervisorNodeStateStatus,
    )
    from kvtune_api.v1alpha1.profile import (
        Management,
    )

#: KubeVirt's virt-handler sets this annotation to "true" on nodes where it turned KSM on itself.
#: Its label kubevirt.io/ksm-enabled only mirrors whether KSM runs (whoever started it), so the
#: label alone is no sign that KubeVirt manages the node.
KSM_HANDLER_ANNOTATION = "kubevirt.io/ksm-handler-managed"
_KSM_RUN_VALUES = {"Stopped": "0", "Running": "1", "Unmerging": "2"}
#: KSM's run value that stops ksmd and unmerges every merged page.
KSM_UNMERGE = "2"


def _ksm(mode: Management, ksm: KsmReport, node: NodeMeta, out: Draft) -> None:
    if mode == "Unmanaged":
        return
    if node.annotations.get(KSM_HANDLER_ANNOTATION) == "true":
        if mode == "Disabled":
            out.error("KSM", "KSMManagedByKubeVirt", (
                f"memory.ksm is Disabled, but KubeVirt's KSM handler turned KSM on here under "
                f"memory pressure (node annotation {KSM_HANDLER_ANNOTATION}=true); kvtune leaves "
                "KSM to it rather than fight it: exclude this node from the KubeVirt CR's "
                "spec.configuration.ksmConfiguration.nodeLabelSelector, or set memory.ksm: "
                "Unmanaged"))
        return
    if ksm.state == "Absent":
        if mode == "Enabled":
            out.error("KSM", "KSMUnsupported", (
                f"memory.ksm is Enabled, but this kernel has no KSM ({KSM} is "
                "missing); use a kernel built with CONFIG_KSM or set memory.ksm: Unmanaged"))
        return
    if ksm.state == "Unknown":
        out.error("KSM", "KSMUnreadable", (
            f"cannot read {KSM_RUN}, so KSM is left as it is; see the KSM problems of "
            "status.host"))
        return
    now = _KSM_RUN_VALUES[ksm.state]
    if mode == "Enabled":
        if now != "1":
            out.step("sysfs", "ksm/run", "KSM", KSM_RUN, now, "1",
                     "memory.ksm is Enabled: start merging identical pages (run=1)")
        return
    unit_step(ksm.ksmtuned, UnitState(enabled=False, active=False), "KSM", "ksm/ksmtuned",
          "memory.ksm is Disabled and ksmtuned turns KSM back on under memory pressure",
          "spec.host.memory.ksm", out)
    if now != "0" or ksm.pages_shared:
        out.step("sysfs", "ksm/run", "KSM", KSM_RUN, now, "0",
                 f"memory.ksm is Disabled: unmerge the {ksm.pages_sharing or 0} shared pages "
                 "(run=2) and stop ksmd (run=0); merging costs host CPU and VM latency")


class Ksm(Feature[KsmReport, None]):
    condition = "KSM"
    section = "ksm"
    problem_name = "KSM"
    reads_processes = True
    volatile = ("host.ksm.pagesShared", "host.ksm.pagesSharing", "host.ksm.ksmtuned.pids")

    def probe(self, fs: HostFS, processes: ProcessTable) -> KsmReport:
        return ksm_probe.probe(fs, processes)

    def check(self, found: KsmReport) -> list[Problem]:
        return ksm_probe.check(found)

    def plan(self, inputs: PlanInputs, facts: None, out: Draft) -> None:
        _ksm(inputs.spec.host.memory.ksm, inputs.host.ksm, inputs.node, out)

    def sequence(self, path: str, now: str | None, value: str) -> list[str] | None:
        """Stopping alone leaves merged pages shared: unmerge (run=2) first."""
        return [KSM_UNMERGE, value] if path == KSM_RUN and value == "0" else None

    def unmanaged(self, spec: HypervisorNodeStateSpec) -> str | None:
        return ("spec.host.memory.ksm is Unmanaged" if spec.host.memory.ksm == "Unmanaged"
                else None)

    def labels(self, spec: HypervisorNodeStateSpec,
               status: HypervisorNodeStateStatus) -> dict[str, str]:
        if status.host is None:
            return {}
        ksm = status.host.ksm
        off = ksm.state in ("Stopped", "Unmerging", "Absent") and not ksm.ksmtuned.running
        return {"ksm-off": "true" if off else "false"}

    def report(self, page: Page, report: HostReport) -> None:
        text.section(page, report)


FEATURE = Ksm()
