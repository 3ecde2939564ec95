"""PLE: whether KVM exits on pause loops, probed from the CPU and the KVM module, and for
Required a fix staged for the next boot (the module cannot be reloaded under VMs).

The CPU section of the report (the probe) is this feature's: PLE is the one thing kvtune
changes about the CPU."""

from __future__ import annotations

import typing as t
from dataclasses import dataclass

from kvtune_api.v1alpha1.host import (
    HostReport,
    PleReport,
    Problem,
)

from ...host.hostfs import HostFS, ProcessTable
from ..base import (
    Draft,
    Feature,
    Finding,
    PlanInputs,
    stages_boot,
)
from ..page import Page
from . import probe as cpu_probe
from . import text

if t.TYPE_CHECKING:
    from kvtune_api.v1alpha1.nodestate import (
        HypervisorNodeStateSpec,
        HypervisorNodeStateStatus,
    )
    from kvtune_api.v1alpha1.profile import (
        CpuSettings,
    )

#: Where a PLE fix is staged for the next boot (modprobe reads /etc/modprobe.d when it loads
#: kvm_intel or kvm_amd); `ple_options` says what it holds.
PLE_CONF = "/etc/modprobe.d/kvtune-ple.conf"


@dataclass(frozen=True)
class PleFacts:
    """What kvtune staged for the next boot: PLE_CONF's content (None when absent), and
    whether it was written before the host last booted (so a reboot has not helped)."""

    staged: str | None = None
    staged_before_boot: bool = False


def ple_options(ple: PleReport) -> str | None:
    """The modprobe.d line that turns pause exits back on, from the kernel's own defaults:
    Intel's ple_gap, AMD's pause_filter_count / pause_filter_thresh where they are 0."""
    if ple.module == "kvm_intel" and ple.ple_gap == 0:
        return "options kvm_intel ple_gap=128\n"
    amd = [name for name, value in (("pause_filter_count=3000", ple.pause_filter_count),
                                    ("pause_filter_thresh=128", ple.pause_filter_thresh))
           if value == 0]
    if ple.module == "kvm_amd" and amd:
        return f"options kvm_amd {' '.join(amd)}\n"
    return None


def _ple(
    settings: CpuSettings, ple: PleReport, files: PleFacts, spec: HypervisorNodeStateSpec,
    out: Draft,
) -> None:
    """PLE cannot change at run time: findings, and for Required a fix staged for the next boot.

    Only a parameter that turns pause exits off (Intel's ple_gap=0, AMD's pause filter at 0) on
    hardware that has them gets a step; hardware without them never does (the kernel would
    force them back to 0 anyway).
    """
    # Off VT-x/AMD-V PLE does not apply; where something stands in for it (arm64's WFE trap,
    # s390's and POWER's directed yield) there is nothing to check, under kvm_pvm nothing does.
    if settings.ple == "Ignored" or ple.enabled == "Yes" or ple.equivalent:
        return
    required = settings.ple == "Required"
    field_name = f"spec.host.cpu.ple is {settings.ple}"
    if ple.supported == "No":
        out.find(required, "PLE", "PLEUnsupported", (
            f"{field_name}, but this CPU has no Pause-Loop Exiting (see status.host.cpu.ple."
            "evidence): do not overcommit vCPUs on this node; move such VMs to nodes whose CPU "
            "has it"))
        return
    if ple.enabled == "Unknown":
        out.warn("PLE", "PLEUnknown", (
            f"{field_name}, but whether KVM uses Pause-Loop Exiting is unknown (see "
            "status.host.cpu.ple.evidence): the KVM module may not be loaded yet"))
        return
    options = ple_options(ple) if required and ple.supported == "Yes" else None
    line = f"`{(options or '').strip()}` in {PLE_CONF}"
    if options and files.staged == options:
        if files.staged_before_boot:
            off = " / ".join(f"{ple.module}.{word.partition('=')[0]}=0"
                             for word in options.split()[2:])
            out.error("PLE", "PLEOverridden", (
                f"kvtune staged {line} before the last boot, but pause exits are still off: "
                f"something else sets them; remove {off} from the kernel command line or the "
                "other /etc/modprobe.d file that sets it, and reboot"))
        else:
            out.findings.append(Finding("PLE", "Pending", "PLERebootPending", (
                f"Pause-Loop Exiting is off ({ple.module} parameters in status.host.cpu.ple); "
                f"{line} is staged and takes effect at the next reboot of the node")))
    elif options and stages_boot(spec):
        out.step("file", f"ple/{ple.module}", "PLE", PLE_CONF, files.staged or "", options,
                 f"{field_name} and {ple.module} runs with pause exits off on a CPU that has "
                 "them; the module cannot be reloaded under VMs, so the fix is staged for the "
                 "next boot", "NeedsReboot")
    else:
        how = ""
        if options:
            why = ("spec.host.boot.settings is Report" if spec.host.boot.settings == "Report"
                   else "spec.rollout.allowReboot is false")
            how = f"{why}, so kvtune does not stage {line}: write it yourself, or "
        out.find(required, "PLE", "PLEDisabled", (
            f"{field_name}, but KVM runs with Pause-Loop Exiting off ({ple.module} "
            f"parameters in status.host.cpu.ple); {how}remove the option that turns it off "
            "from /etc/modprobe.d and reboot the node"))


def _flag(value: bool) -> str:
    return "true" if value else "false"


class Ple(Feature[t.Any, PleFacts]):
    condition = "PLE"
    section = "cpu"
    problem_name = "CPU"
    #: Staged for the next boot, with a reboot request: after every live change.
    write_order = 1

    def probe(self, fs: HostFS, processes: ProcessTable) -> t.Any:
        return cpu_probe.probe(fs)

    def check(self, found: t.Any) -> list[Problem]:
        return cpu_probe.check(found)

    def read(self, fs: HostFS, host: HostReport) -> PleFacts:
        if not fs.has_file(PLE_CONF):
            return PleFacts()
        written, booted = fs.modified(PLE_CONF), fs.boot_time()
        before_boot = written is not None and booted is not None and written < booted
        return PleFacts(fs.read_file(PLE_CONF), before_boot)

    def plan(self, inputs: PlanInputs, facts: PleFacts | None, out: Draft) -> None:
        spec = inputs.spec
        _ple(spec.host.cpu, inputs.host.cpu.ple, facts or PleFacts(), spec, out)

    def unmanaged(self, spec: HypervisorNodeStateSpec) -> str | None:
        return "spec.host.cpu.ple is Ignored" if spec.host.cpu.ple == "Ignored" else None

    def labels(self, spec: HypervisorNodeStateSpec,
               status: HypervisorNodeStateStatus) -> dict[str, str]:
        if status.host is None:
            return {}
        ple = status.host.cpu.ple
        return {name: _flag(value == "Yes")
                for name, value in (("ple-supported", ple.supported), ("ple-enabled", ple.enabled))
                if value != "Unknown"}

    def report(self, page: Page, report: HostReport) -> None:
        text.section(page, report)


FEATURE = Ple()
