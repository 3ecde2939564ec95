"""numad: the daemon that moves processes and their memory between NUMA nodes, enabled or
disabled through its systemd unit as the profile wants, and flagged wherever it would fight the
kubelet's static CPU manager."""

from __future__ import annotations

import typing as t

from kvtune_api.v1alpha1.host import (
    DaemonReport,
    HostReport,
    Problem,
)

from ...host.hostfs import HostFS, ProcessTable
from ...host.systemd import UnitState
from .. import kubelet_report as kubelet_probe
from ..base import (
    Draft,
    Feature,
    PlanInputs,
)
from ..page import Page
from ..units import unit_step
from . import probe as numad_probe
from . import text

if t.TYPE_CHECKING:
    from kvtune_api.v1alpha1.nodestate import (
        HypervisorNodeStateSpec,
    )
    from kvtune_api.v1alpha1.profile import (
        NumaSettings,
    )


def _numad(settings: NumaSettings, host: HostReport, out: Draft) -> None:
    # The static CPU manager pins containers' CPUs; numad would move their memory (and threads)
    # elsewhere, so wherever both are in play it is flagged, whatever the profile leaves numad.
    pins = kubelet_probe.known(host.kubelet) and host.kubelet.cpu_manager_policy == "static"
    numad_on = host.numad.running or host.numad.unit == "Enabled"
    if pins and (settings.numad == "Enabled" or (settings.numad == "Unmanaged" and numad_on)):
        state = f"numa.numad is {settings.numad} and numad " + (
            "runs" if host.numad.running else "is enabled at boot")
        out.warn("Numad", "NumadWithStaticCpuManager", (
            f"{state} while the kubelet's static CPU manager pins CPUs (read from "
            f"{kubelet_probe.read_from(host.kubelet)}): numad migrates pinned VMs' memory "
            "behind the kubelet's back; set numa.numad: Disabled on nodes that give VMs "
            "dedicated CPUs"))
    if settings.numad == "Unmanaged":
        return
    on = settings.numad == "Enabled"
    why = ("numa.numad is Enabled: numad places the processes of VMs without pinned CPUs on one "
           "NUMA node" if on else "numa.numad is Disabled: numad would move VM memory between "
           "NUMA nodes behind the kubelet's CPU and topology managers")
    unit_step(host.numad, UnitState(enabled=on, active=on), "Numad", "numad", why,
          "spec.host.numa.numad", out)


class Numad(Feature[DaemonReport, None]):
    condition = "Numad"
    section = "numad"
    problem_name = "Numad"
    reads_processes = True
    volatile = ("host.numad.pids",)

    def probe(self, fs: HostFS, processes: ProcessTable) -> DaemonReport:
        return numad_probe.probe(fs, processes)

    def check(self, found: DaemonReport) -> list[Problem]:
        return numad_probe.check(found)

    def plan(self, inputs: PlanInputs, facts: None, out: Draft) -> None:
        _numad(inputs.spec.host.numa, inputs.host, out)

    def unmanaged(self, spec: HypervisorNodeStateSpec) -> str | None:
        return ("spec.host.numa.numad is Unmanaged" if spec.host.numa.numad == "Unmanaged"
                else None)

    def report(self, page: Page, report: HostReport) -> None:
        text.section(page, report)


FEATURE = Numad()
