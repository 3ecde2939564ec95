"""SR-IOV: the VF count of each physical function the profile selects.

The kernel changes a count only through 0, which removes every VF on the way: VFs in use are
read afresh right before each write and each restore (`hold_write`, `hold_restore`) and wait
for a drain; a count the kernel refuses is put back and asked again at growing intervals
(SRIOV_BACKOFF)."""

from __future__ import annotations

import datetime
import typing as t

from kvtune_api.v1alpha1.host import (
    HostReport,
    Problem,
    SriovReport,
)

from ...host.hostfs import HostFS, ProcessTable
from ...host.names import numvfs_path
from ..base import (
    Backoff,
    Draft,
    Feature,
    Finding,
    PlanInputs,
)
from ..nics import selects
from ..page import Page
from . import probe as sriov_probe
from . import text
from .probe import held, vfs_in_use

if t.TYPE_CHECKING:
    from kvtune_api.v1alpha1.nodestate import (
        Disruption,
        HypervisorNodeStateSpec,
        PlannedStep,
        SriovRetry,
        StepResult,
    )
    from kvtune_api.v1alpha1.profile import (
        SriovRule,
    )


def _sriov(rules: list[SriovRule], host: HostReport, out: Draft) -> None:
    wanted: dict[str, tuple[int, int]] = {}  # NIC name -> (rule index, numVfs)
    conflicted: set[str] = set()
    for index, rule in enumerate(rules):
        matched = [nic for nic in host.sriov.nics if selects(rule.pf_selector, nic)]
        if not matched:
            out.warn("SRIOV", "SriovRuleMatchesNothing", (
                f"spec.host.network.sriov[{index}].pfSelector matches no NIC on this node "
                f"(NICs here: {', '.join(n.name for n in host.sriov.nics) or 'none'})"))
        for nic in matched:
            first = wanted.setdefault(nic.name, (index, rule.num_vfs))
            if first[1] != rule.num_vfs and nic.name not in conflicted:
                conflicted.add(nic.name)
                out.error("SRIOV", "SriovRulesConflict", (
                    f"NIC {nic.name} is selected by spec.host.network.sriov[{first[0]}] "
                    f"(numVfs {first[1]}) and sriov[{index}] (numVfs {rule.num_vfs}); make their "
                    "pfSelectors disjoint. Its VFs are left as they are"))
    for nic in host.sriov.nics:
        if nic.name not in wanted or nic.name in conflicted:
            continue
        index, count = wanted[nic.name]
        field_name = f"spec.host.network.sriov[{index}]"
        total, now = nic.sriov_total_vfs, nic.sriov_num_vfs
        if total is not None and now is None:
            out.error("SRIOV", "SriovCountUnknown", (
                f"the VF count of NIC {nic.name} ({nic.pci_address}) could not be read (see the "
                "SRIOV problems of status.host: a write to it may hang in the driver), so its "
                "VFs are left as they are"))
        elif total is None or now is None or nic.pci_address is None:
            out.error("SRIOV", "SriovNotCapable", (
                f"NIC {nic.name} ({nic.pci_address}) is selected by {field_name}.pfSelector but "
                "is not SR-IOV capable (no readable sriov_totalvfs/sriov_numvfs); narrow the "
                "pfSelector, or enable SR-IOV in the firmware"))
        elif count > total:
            out.error("SRIOV", "SriovTooManyVfs", (
                f"{field_name}.numVfs is {count}, but NIC {nic.name} ({nic.pci_address}) "
                f"supports at most {total} VFs (sriov_totalvfs); lower numVfs"))
        elif count != now:
            in_use = [vf for vf in nic.vfs if vf.in_use]
            disruption: Disruption = "NeedsDrain" if now and in_use else "Live"
            effect = (f"VFs {held(in_use)} are in use (bound to a driver other than the VF "
                      "network driver) and are removed on the way (the count changes through "
                      "0): the VMs or programs holding them must leave the node first"
                      if disruption == "NeedsDrain" else "no VF is in use")
            out.step("sysfs", f"sriov/{nic.name}", "SRIOV", numvfs_path(nic.pci_address), str(now),
                     str(count), f"{field_name}.numVfs is {count} for NIC {nic.name}, which has "
                     f"{now}; {effect}", disruption)


def _is_numvfs(path: str) -> bool:
    return path.endswith("/sriov_numvfs")


def _applies(step: PlannedStep) -> bool:
    return step.feature == "SRIOV"


def _failed(result: StepResult) -> bool:
    return result.result == "Failed"


def _record(step: PlannedStep, result: StepResult, attempts: int, now: datetime.datetime,
            following: datetime.datetime, host: HostReport) -> SriovRetry:
    from kvtune_api.v1alpha1.nodestate import SriovRetry
    pci = step.path.rsplit("/", 2)[-2]
    names = {nic.pci_address: nic.name for nic in host.sriov.nics}
    return SriovRetry(
        step=step.id, path=step.path, pci_address=pci, nic=names.get(pci, "?"),
        wanted=int(step.desired), error=result.message, attempts=attempts, last_attempt=now,
        next_attempt=following)


def _findings(held: list[SriovRetry]) -> list[Finding]:
    return [Finding("SRIOV", "Error", "SriovVfsRefused", (
        f"NIC {r.nic} ({r.pci_address}) refused {r.wanted} VFs ({r.path}) after "
        f"{r.attempts} attempt(s): {r.error}. Each attempt takes the NIC's VFs away for a "
        f"moment, so the next is at {r.next_attempt.isoformat(timespec='seconds')}, each "
        "waiting twice as long. What to do: read the driver's messages (dmesg); for ENOMEM "
        "enable SR-IOV and enough VFs in the NIC's firmware and BIOS (or boot with "
        "pci=realloc); for EBUSY free the VFs; or lower numVfs in the profile, which is tried "
        "at once")) for r in held]


#: VF counts the kernel refuses (ENOMEM, EBUSY, a driver that hangs): each attempt takes the
#: NIC's VFs away for a moment.
SRIOV_BACKOFF = Backoff("sriov_retries", _applies, _failed, _record, _findings)


class Sriov(Feature[SriovReport, None]):
    condition = "SRIOV"
    section = "sriov"
    problem_name = "SRIOV"
    backoffs = (SRIOV_BACKOFF,)

    def probe(self, fs: HostFS, processes: ProcessTable) -> SriovReport:
        return sriov_probe.probe(fs)

    def check(self, found: SriovReport) -> list[Problem]:
        return sriov_probe.check(found)

    def plan(self, inputs: PlanInputs, facts: None, out: Draft) -> None:
        _sriov(inputs.spec.host.network.sriov, inputs.host, out)

    def sequence(self, path: str, now: str | None, value: str) -> list[str] | None:
        """A count changes only through 0 (EBUSY otherwise). An unreadable count is not taken
        for non-zero: removing VFs blindly is worse than EBUSY."""
        if _is_numvfs(path) and now not in (None, "0", value) and value != "0":
            return ["0", value]
        return None

    def hold_write(self, fs: HostFS, step: PlannedStep, approved: bool,
                   timeout: float) -> str | None:
        if approved or not _applies(step):
            return None
        # Afresh: a VM may have taken a VF since the plan was made, and a count change
        # through 0 would pull it away from under it.
        taken = vfs_in_use(fs, step.path)
        if not taken:
            return None
        return (f"VFs {held(taken)} of {step.path} were taken since the plan was made; "
                "the count changes through 0, which would remove them: waiting for the "
                "operator to drain the node and approve it (spec.disruption.approved)")

    def hold_restore(self, fs: HostFS, path: str, original: str | None, approved: bool,
                     timeout: float) -> str | None:
        """Restoring a VF count must not take VFs from running VMs: read right before each
        restore, not from the cycle's probe (a VM may take one in between)."""
        if approved or not _is_numvfs(path):
            return None
        # Under the writes' deadline: a read of sriov_numvfs waits for a hung write to it.
        now, why = fs.read_within(path, timeout=timeout)
        if now is None:
            return (f"{path} cannot be read now ({why}), so whether restoring its VF "
                    f"count ({original}) would take VFs from VMs is unknown; it is tried "
                    "again next cycle")
        if now == original:
            return None
        in_use = vfs_in_use(fs, path)
        if not in_use:
            return None
        return (f"VFs {held(in_use)} of {path} are in use; its original VF count "
                f"({original}) is restored once the VMs or programs holding them have "
                "left the node")

    def unmanaged(self, spec: HypervisorNodeStateSpec) -> str | None:
        return None if spec.host.network.sriov else "spec.host.network.sriov is empty"

    def report(self, page: Page, report: HostReport) -> None:
        text.section(page, report)


FEATURE = Sriov()
