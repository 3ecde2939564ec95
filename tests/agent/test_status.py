"""A node's status from one cycle: conditions, sync status, drain/reboot flags, Audit, revert."""

from __future__ import annotations

import datetime
import typing as t

import pytest
from kvtune_agent.engine.status import REVERTED, node_status
from kvtune_agent.features import FEATURES
from kvtune_agent.features.base import Finding, Plan, Step
from kvtune_api import conditions as cond
from kvtune_api.v1alpha1.host import HostReport, NumaNode, NumaReport
from kvtune_api.v1alpha1.nodestate import (
    HypervisorNodeStateSpec,
    HypervisorNodeStateStatus,
    PlannedStep,
    StepResult,
)
from support.sections import HostSections

from .specs import node_spec

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(minutes=5)
HOST = HostReport(numa=NumaReport(nodes=[NumaNode(id=0, cpus="0-3", cpu_count=4,
                                                  memory_total_kib=64 * 2**20)]))
MANAGED: HostSections = {"memory": {"ksm": "Disabled", "transparentHugepages": "never"}}
NOTHING = Plan()


def _step(step_id: str = "thp", feature: str = "THP", disruption: str = "Live") -> Step:
    return Step("sysfs", PlannedStep.model_validate({
        "id": step_id, "feature": feature, "path": f"/sys/{step_id}", "current": "always",
        "desired": "never", "reason": "because", "disruption": disruption,
    }))


def _status(
    spec: HypervisorNodeStateSpec, plan: Plan = NOTHING, results: list[StepResult] | None = None,
    previous: HypervisorNodeStateStatus | None = None, now: datetime.datetime = T0,
    **kwargs: t.Any,
) -> HypervisorNodeStateStatus:
    return node_status(FEATURES, spec, 7, HOST, plan, results,
                       previous or HypervisorNodeStateStatus(), now, **kwargs)


def _condition(status: HypervisorNodeStateStatus, type_: str) -> cond.Condition:
    found = cond.find(status.conditions, type_)
    assert found is not None, type_
    return found


def _c(status: HypervisorNodeStateStatus, type_: str) -> tuple[str, str]:
    found = _condition(status, type_)
    return found.status, found.reason


def test_a_matching_host_in_audit_mode_is_ready_and_nothing_waits() -> None:
    status = _status(node_spec("Audit", **MANAGED))

    assert _c(status, cond.READY) == ("True", "HostMatches")
    assert "Audit mode" in _condition(status, cond.READY).message
    assert _c(status, cond.PROGRESSING) == ("False", "Audit")
    assert _c(status, cond.DEGRADED) == ("False", "AsExpected")
    assert _c(status, cond.WAITING) == ("False", "NotWaiting")
    assert (status.sync_status, status.observed_generation, status.host) == ("Succeeded", 7, HOST)
    assert _c(status, "KSM") == ("True", "AsSpecified")


def test_audit_lists_what_enforce_would_do_and_never_asks_for_a_drain() -> None:
    work = Plan(steps=(_step(), _step("sriov/ens1f0", "SRIOV", "NeedsDrain")))

    status = _status(node_spec("Audit", **MANAGED), work)

    assert _c(status, cond.READY) == ("False", "WouldChange")
    assert [s.id for s in status.plan] == ["thp", "sriov/ens1f0"]
    assert (status.drain_required, status.reboot_required) == (False, False)
    assert status.sync_status == "Pending"
    assert _c(status, "THP") == ("False", "WouldChange")
    assert _c(status, cond.WAITING) == ("False", "NotWaiting")


def test_paused_reports_like_audit() -> None:
    status = _status(node_spec(paused=True, **MANAGED), Plan(steps=(_step(),)))

    assert _c(status, cond.READY) == ("False", "Paused")
    assert _c(status, cond.PROGRESSING) == ("False", "Paused")
    assert _c(status, "THP") == ("False", "Paused")


def test_a_converged_enforced_node_is_ready_and_idle() -> None:
    status = _status(node_spec(**MANAGED))

    assert (_c(status, cond.READY), _c(status, cond.PROGRESSING)) == (
        ("True", "HostMatches"), ("False", "Idle"))
    assert status.sync_status == "Succeeded" and status.last_sync_error == ""


def test_a_failed_step_degrades_the_node_and_its_feature() -> None:
    failed = StepResult(id="thp", result="Failed", message="writing 'never' to /sys/thp failed")

    status = _status(node_spec(**MANAGED), Plan(steps=(_step(),)), [failed])

    assert _c(status, cond.DEGRADED) == ("True", "ApplyFailed")
    assert _c(status, "THP") == ("False", "ApplyFailed")
    assert status.sync_status == "Failed"
    assert status.last_sync_error == "writing 'never' to /sys/thp failed"
    assert _c(status, cond.PROGRESSING) == ("False", "Idle")


def test_a_step_still_moving_keeps_the_node_progressing() -> None:
    partial = StepResult(id="hugepages/node0/1Gi", result="Partial", message="holds 12")
    work = Plan(steps=(_step("hugepages/node0/1Gi", "Hugepages"),))

    status = _status(node_spec(**MANAGED), work, [partial])

    assert _c(status, cond.PROGRESSING) == ("True", "Applying")
    assert _c(status, "Hugepages") == ("False", "PartiallyApplied")
    assert status.sync_status == "InProgress"


def test_a_step_waiting_for_a_drain_asks_for_one() -> None:
    waiting = StepResult(id="sriov/ens1f0", result="Waiting", message="needs a drain")
    work = Plan(steps=(_step("sriov/ens1f0", "SRIOV", "NeedsDrain"),))

    status = _status(node_spec(**MANAGED), work, [waiting])

    assert status.drain_required and not status.reboot_required
    assert _c(status, cond.WAITING) == ("True", "DrainRequired")
    assert _c(status, cond.READY) == ("False", "WaitingForDrain")
    assert _c(status, "SRIOV") == ("False", "WaitingForDrain")
    assert _c(status, cond.PROGRESSING) == ("False", "Idle")


def test_a_change_staged_for_a_reboot_asks_for_one() -> None:
    pending = Finding("PLE", "Pending", "PLERebootPending", "staged; reboot the node")

    status = _status(node_spec(**MANAGED), Plan(findings=(pending,)))

    assert status.reboot_required and not status.drain_required
    assert _c(status, cond.WAITING) == ("True", "RebootRequired")
    assert _c(status, "PLE") == ("False", "PLERebootPending")
    assert _c(status, cond.READY) == ("False", "WaitingForReboot")


def test_a_finding_no_step_fixes_degrades_the_node_with_its_reason() -> None:
    conflict = Finding("KSM", "Error", "KSMManagedByKubeVirt", "KubeVirt manages KSM here")
    warning = Finding("Numad", "Warning", "NumadWithStaticCpuManager", "numad and pinning")

    status = _status(node_spec(**MANAGED), Plan(findings=(conflict, warning)))

    assert _c(status, cond.DEGRADED) == ("True", "KSMManagedByKubeVirt")
    assert _c(status, "KSM") == ("False", "KSMManagedByKubeVirt")
    assert _c(status, "Numad") == ("True", "AsSpecified")
    assert _condition(status, "Numad").message == "numad and pinning"
    assert status.sync_status == "Failed" and status.last_sync_error == "KubeVirt manages KSM here"


def test_every_feature_has_one_condition_and_unmanaged_ones_say_why() -> None:
    status = _status(node_spec(memory={"ksm": "Unmanaged"}))

    types = [c.type for c in status.conditions]
    assert sorted(types) == sorted(["Ready", "Progressing", "Degraded", "Waiting",
                                    *cond.FEATURES])
    ksm = _condition(status, "KSM")
    assert (ksm.reason, ksm.message) == ("NotManaged", "spec.host.memory.ksm is Unmanaged")
    assert _c(status, "NUMA") == ("True", "Detected")


def test_transition_times_move_only_when_a_status_flips() -> None:
    first = _status(node_spec(**MANAGED))
    same = _status(node_spec(**MANAGED), previous=first, now=T1)
    flipped = _status(node_spec(**MANAGED), Plan(steps=(_step(),)), previous=same, now=T1)

    ready = [cond.find(s.conditions, cond.READY) for s in (first, same, flipped)]
    assert [c.last_transition_time if c else None for c in ready] == [T0, T0, T1]
    assert cond.equivalent(first.conditions, same.conditions)


def test_a_cycle_that_applied_nothing_keeps_the_previous_results() -> None:
    before = HypervisorNodeStateStatus(results=[StepResult(id="thp", result="Applied")])

    assert _status(node_spec(**MANAGED), previous=before).results == before.results
    assert _status(node_spec(**MANAGED), results=[], previous=before).results == []


@pytest.mark.parametrize(("paused", "results", "left", "expected", "degraded"), [
    pytest.param(False, [StepResult(id="revert/thp", result="Applied")], 0,
                 ("True", "Reverted"), False, id="all restored"),
    pytest.param(False, None, 0, ("True", "Reverted"), False, id="nothing was ever changed"),
    pytest.param(False, [StepResult(id="revert/thp", result="Failed", message="EINVAL")], 1,
                 ("False", "RevertFailed"), True, id="a restore failed"),
    pytest.param(False, [StepResult(id="revert/sriov/x", result="Waiting", message="VFs")], 1,
                 ("False", "RevertWaiting"), False, id="VFs still attached to VMs"),
    pytest.param(True, None, 2, ("False", "Paused"), False, id="paused keeps the journal"),
    pytest.param(False, [StepResult(id="revert/journal", result="Failed", message="bad")], None,
                 ("False", "JournalUnreadable"), True, id="an unreadable journal"),
])
def test_revert_reports_reverted_once_the_journal_is_empty(
    paused: bool, results: list[StepResult] | None, left: int | None,
    expected: tuple[str, str], degraded: bool,
) -> None:
    spec = node_spec(revert=True, paused=paused, **MANAGED)

    status = _status(spec, Plan(steps=(_step(),)), results, journal_entries=left)

    assert _c(status, REVERTED) == expected
    assert _c(status, cond.DEGRADED)[0] == ("True" if degraded else "False")
    assert status.plan == [] and not status.drain_required and not status.reboot_required
    assert cond.find(status.conditions, "KSM") is None  # features no longer apply


@pytest.mark.parametrize(("vmi", "reason"), [
    pytest.param({"namespaceSelector": {}, "dedicatedCpus": True}, "KubeletSharesCores",
                 id="dedicated CPUs: the kubelet is judged"),
    pytest.param({"namespaceSelector": {}, "dedicatedCpus": False,
                  "isolateEmulatorThread": False}, "NotManaged", id="shared CPUs, no policy"),
])
def test_the_kubelet_is_judged_wherever_the_vmis_get_dedicated_cpus(
    vmi: dict[str, t.Any], reason: str
) -> None:
    warning = Finding("Kubelet", "Warning", "KubeletSharesCores", "set full-pcpus-only")

    status = _status(node_spec(vmi=vmi), Plan(findings=(warning,)))

    assert _condition(status, "Kubelet").reason in (reason, "AsSpecified")
    assert (_condition(status, "Kubelet").message == "set full-pcpus-only") is (
        reason != "NotManaged")
