"""Whole agent cycles on host trees: converge, stay put, Audit untouched, revert, orphans."""

from __future__ import annotations

import datetime
import errno
import hashlib
import json
import os
import threading
import typing as t
from pathlib import Path

import pytest
from kvtune_agent import nfd
from kvtune_agent.agent import Agent, AgentSettings
from kvtune_agent.engine.journal import JOURNAL_PATH, Journal
from kvtune_agent.engine.status import REVERTED
from kvtune_agent.features.base import NodeMeta
from kvtune_agent.host.hostfs import HostFS
from kvtune_agent.wiring import OrphanRevert, revert_orphaned, run_cycle
from kvtune_api import conditions as cond
from kvtune_api.v1alpha1.nodestate import HypervisorNodeStateSpec, HypervisorNodeStateStatus
from support.agent import StoredState
from support.hosttree import HostTree, KernelFS

from .audit.builders import launcher
from .specs import busy_host, busy_spec, node_spec

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
THP = "/sys/kernel/mm/transparent_hugepage/enabled"
NUMVFS = "/sys/bus/pci/devices/0000:3b:00.0/sriov_numvfs"
NODE0_1G = "/sys/devices/system/node/node0/hugepages/hugepages-1048576kB/nr_hugepages"
UNITS = ("numad.service", "ksmtuned.service")


def _cycle(
    tree: HostTree, spec: HypervisorNodeStateSpec, fs: HostFS | None = None,
    previous: HypervisorNodeStateStatus | None = None,
) -> HypervisorNodeStateStatus:
    return run_cycle(fs or tree.kernel(), spec, 3, NodeMeta(),
                     previous or HypervisorNodeStateStatus(), systemd=tree.systemd(), now=NOW,
                     timeout=5).status


class CountingFS(KernelFS):
    """A KernelFS that counts how often the host's /proc is listed: once per process table."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.proc_listings = 0

    def list_dir(self, path: str) -> list[str]:
        self.proc_listings += path == "/proc"
        return super().list_dir(path)


def _snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every entry of the tree: a hash of its content (or link target) and its mtime."""
    entries = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(directory, name)
            stat = path.lstat()
            if path.is_symlink():
                what = "link:" + os.readlink(path)
            elif path.is_dir():
                what = "dir"
            else:
                what = hashlib.sha256(path.read_bytes()).hexdigest()
            entries[str(path.relative_to(root))] = (what, stat.st_mtime_ns)
    return entries


def _ready(status: HypervisorNodeStateStatus) -> tuple[str, str]:
    found = cond.find(status.conditions, cond.READY)
    assert found is not None
    return found.status, found.reason


def test_enforce_converges_and_a_second_cycle_writes_nothing(tmp_path: Path) -> None:
    tree = busy_host(tmp_path)

    first = _cycle(tree, busy_spec())

    assert _ready(first) == ("True", "HostMatches"), first.conditions
    assert first.plan == [] and first.sync_status == "Succeeded"
    assert {r.result for r in first.results} == {"Applied"} and len(first.results) == 7
    assert first.host is not None and not first.host.numad.running

    before = _snapshot(tmp_path)
    fs = tree.kernel()
    second = _cycle(tree, busy_spec(), fs=fs, previous=first)

    assert fs.writes == []
    assert _snapshot(tmp_path) == before
    assert second.results == first.results
    assert cond.equivalent(first.conditions, second.conditions)
    assert second.conditions == first.conditions  # transition times kept too


def test_audit_leaves_the_host_byte_for_byte_unchanged_and_reports_the_plan(
    tmp_path: Path,
) -> None:
    tree = busy_host(tmp_path)
    before = _snapshot(tmp_path)
    fs = tree.kernel()

    status = _cycle(tree, busy_spec("Audit"), fs=fs)

    assert _snapshot(tmp_path) == before
    assert fs.writes == [] and tree.systemctl_calls() == []
    assert _ready(status) == ("False", "WouldChange")
    assert {s.id for s in status.plan} == {
        "hugepages/node0/1Gi", "hugepages/node1/1Gi", "ksm/ksmtuned", "ksm/run", "numad", "thp",
        "sriov/ens1f0"}
    assert status.results == [] and status.sync_status == "Pending"


def test_paused_leaves_the_host_unchanged(tmp_path: Path) -> None:
    tree = busy_host(tmp_path)
    before = _snapshot(tmp_path)

    status = _cycle(tree, busy_spec(paused=True))

    assert _snapshot(tmp_path) == before
    assert _ready(status) == ("False", "Paused")


def test_revert_restores_every_original_value_and_reports_reverted(tmp_path: Path) -> None:
    tree = busy_host(tmp_path)
    before = _snapshot(tmp_path)
    units = {unit: tree.systemd().state(unit, timeout=10) for unit in UNITS}
    _cycle(tree, busy_spec())
    entries = Journal(tree.fs()).entries()
    assert len(entries) == 7

    status = _cycle(tree, busy_spec(revert=True))

    after = _snapshot(tmp_path)
    for entry in entries:
        if entry.kind == "unit":
            assert tree.systemd().state(entry.path, timeout=10) == units[entry.path]
        else:
            real = str(Path(os.path.realpath(tmp_path / entry.path.lstrip("/"))).relative_to(
                tmp_path.resolve()))
            assert after[real][0] == before[real][0], entry.path
    assert cond.find(status.conditions, REVERTED) is not None
    assert (status.sync_status, [c.status for c in status.conditions if c.type == REVERTED]) == (
        "Succeeded", ["True"])
    assert not tree.fs().exists(JOURNAL_PATH)

    fs = tree.kernel()
    again = _cycle(tree, busy_spec(revert=True), fs=fs, previous=status)
    assert fs.writes == [] and again.results == status.results


def test_revert_waits_for_vms_to_leave_their_vfs_unless_approved(tmp_path: Path) -> None:
    tree = busy_host(tmp_path, vf_drivers=["iavf", "vfio-pci"])
    _cycle(tree, busy_spec(approved=True))
    assert (tmp_path / NUMVFS.lstrip("/")).resolve().read_text() == "8\n"

    waiting = _cycle(tree, busy_spec(revert=True))

    reverted = cond.find(waiting.conditions, REVERTED)
    assert reverted is not None and (reverted.status, reverted.reason) == (
        "False", "RevertWaiting")
    assert "0000:3b:02.1 (vfio-pci)" in reverted.message and "are in use" in reverted.message
    assert [e.path for e in Journal(tree.fs()).entries()] == [NUMVFS]
    assert (tmp_path / THP.lstrip("/")).read_text() == "[always] madvise never\n"

    done = _cycle(tree, busy_spec(revert=True, approved=True), previous=waiting)

    assert [c.status for c in done.conditions if c.type == REVERTED] == ["True"]
    assert (tmp_path / NUMVFS.lstrip("/")).resolve().read_text() == "2\n"


def test_an_orphaned_journal_is_reverted_and_the_labels_withdrawn(tmp_path: Path) -> None:
    tree = busy_host(tmp_path)
    status = _cycle(tree, busy_spec())
    nfd.publish(tree.fs(), busy_spec(), status)
    assert tree.fs().exists(nfd.FEATURES_FILE)

    done = revert_orphaned(tree.kernel(), tree.systemd(), timeout=10)

    assert len(done.results) == 7 and {r.result for r in done.results} == {"Applied"}
    assert done.clean
    assert not tree.fs().exists(JOURNAL_PATH) and not tree.fs().exists(nfd.FEATURES_FILE)
    assert (tmp_path / THP.lstrip("/")).read_text() == "[always] madvise never\n"
    assert revert_orphaned(tree.kernel(), tree.systemd(), timeout=10) == OrphanRevert([], True)


def test_an_orphaned_journal_held_back_leaves_the_node_unclean(tmp_path: Path) -> None:
    tree = busy_host(tmp_path, vf_drivers=["iavf", "vfio-pci"])
    _cycle(tree, busy_spec(approved=True))

    done = revert_orphaned(tree.kernel(), tree.systemd(), timeout=10)

    assert not done.clean and [e.path for e in Journal(tree.fs()).entries()] == [NUMVFS]


def test_a_pool_the_kernel_grows_only_in_part_is_retried_at_growing_intervals(
    tmp_path: Path,
) -> None:
    tree = busy_host(tmp_path)
    fs = KernelFS(tmp_path, hugepage_limit=18)  # 20 wanted per node
    minute = datetime.timedelta(minutes=1)

    def cycle(at: datetime.datetime, previous: HypervisorNodeStateStatus) -> (
            HypervisorNodeStateStatus):
        return run_cycle(fs, busy_spec(), 3, NodeMeta(), previous, systemd=tree.systemd(),
                         now=at, timeout=5).status

    def attempts() -> int:
        return sum(path == NODE0_1G for path, _ in fs.writes)

    first = cycle(NOW, HypervisorNodeStateStatus())
    soon = cycle(NOW + minute, first)
    assert attempts() == 1  # not again within the first interval
    later = cycle(NOW + 11 * minute, soon)
    assert attempts() == 2

    retry = {r.step: r for r in later.hugepage_retries}["hugepages/node0/1Gi"]
    assert (retry.attempts, retry.allocated, retry.wanted) == (2, 18, 20)
    assert retry.next_attempt == NOW + 31 * minute  # 10 minutes, then 20
    hugepages = cond.find(later.conditions, "Hugepages")
    assert hugepages is not None and hugepages.reason == "HugepagesPartlyAllocated"
    assert "18 of 20 on NUMA node 0" in hugepages.message
    # The kernel arguments are the boot finding's, in the kernel's own form (a kernel of
    # unknown release takes one total, not per-node counts), and no other advice contradicts it.
    assert "hugepagesz=1G hugepages=40" in hugepages.message
    assert "hugepages=N" not in hugepages.message
    assert "hugepages=0:20" not in hugepages.message
    assert {s.id for s in later.plan}.isdisjoint({"hugepages/node0/1Gi", "hugepages/node1/1Gi"})


def test_a_refused_write_degrades_the_node_and_the_rest_is_applied(tmp_path: Path) -> None:
    tree = busy_host(tmp_path)

    status = _cycle(tree, busy_spec(), fs=KernelFS(tmp_path, refuse={THP: errno.EINVAL}))

    assert [s.id for s in status.plan] == ["thp"]
    degraded = cond.find(status.conditions, cond.DEGRADED)
    assert degraded is not None and (degraded.status, degraded.reason) == ("True", "ApplyFailed")
    assert THP in status.last_sync_error and status.sync_status == "Failed"
    assert {r.id for r in status.results if r.result == "Applied"} == {
        "hugepages/node0/1Gi", "hugepages/node1/1Gi", "ksm/ksmtuned", "ksm/run", "numad",
        "sriov/ens1f0"}


def test_a_malformed_journal_stops_revert_with_a_clear_error(tmp_path: Path) -> None:
    tree = busy_host(tmp_path).file(JOURNAL_PATH, "{oops")

    status = _cycle(tree, busy_spec(revert=True))

    reverted = cond.find(status.conditions, REVERTED)
    assert reverted is not None and reverted.reason == "JournalUnreadable"
    assert JOURNAL_PATH in reverted.message and status.sync_status == "Failed"


def test_a_ple_fix_is_staged_once_and_the_node_waits_for_its_reboot(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).cpuinfo(4, flags="fpu vmx", vmx_flags="ept ple").systemctl()
    tree.kvm_module("kvm_intel", ple_gap=0, ple_window=4096)
    tree.file("/proc/stat", "btime 1")  # booted long before the file is staged
    spec = node_spec(cpu={"ple": "Required"}, allow_reboot=True)

    staged = _cycle(tree, spec)
    fs = tree.kernel()
    before = _snapshot(tmp_path)
    again = _cycle(tree, spec, fs=fs, previous=staged)

    assert [r.id for r in staged.results] == ["ple/kvm_intel"]
    assert staged.reboot_required and again.reboot_required
    assert _snapshot(tmp_path) == before  # staged once, not rewritten
    waiting = cond.find(again.conditions, cond.WAITING)
    assert waiting is not None and (waiting.status, waiting.reason) == ("True", "RebootRequired")


@pytest.mark.parametrize(
    ("spec", "passes", "daemons_left"),
    [
        pytest.param(busy_spec("Audit"), 1, {700, 812}, id="an audit cycle probes once"),
        pytest.param(busy_spec(paused=True), 1, {700, 812}, id="a paused cycle probes once"),
        pytest.param(busy_spec(), 2, set(),
                     id="an enforcing cycle probes again, with fresh processes, after applying"),
    ],
)
def test_each_probe_pass_of_a_cycle_reads_the_hosts_processes_once(
    tmp_path: Path, spec: HypervisorNodeStateSpec, passes: int, daemons_left: set[int]
) -> None:
    tree = busy_host(tmp_path)  # numad runs as pid 700, ksmtuned as 812
    fs = CountingFS(tmp_path)

    cycle = run_cycle(fs, spec, 3, NodeMeta(), HypervisorNodeStateStatus(),
                      systemd=tree.systemd(), now=NOW, timeout=5)

    assert fs.proc_listings == passes
    # The cycle hands on the table its last probe was made with, for the VM audit.
    assert cycle.processes == tree.fs().processes()
    assert {p.pid for p in cycle.processes} & {700, 812} == daemons_left
    assert cycle.status.host is not None
    assert set(cycle.status.host.numad.pids + cycle.status.host.ksm.ksmtuned.pids) == daemons_left


def test_a_revert_probes_again_after_restoring(tmp_path: Path) -> None:
    tree = busy_host(tmp_path)
    _cycle(tree, busy_spec())
    fs = CountingFS(tmp_path)

    cycle = run_cycle(fs, busy_spec(revert=True), 3, NodeMeta(), HypervisorNodeStateStatus(),
                      systemd=tree.systemd(), now=NOW, timeout=5)

    assert fs.proc_listings == 2
    assert cycle.status.host is not None and cycle.status.host.numad.running  # restarted


def test_an_agent_step_audits_its_vms_in_the_process_table_of_its_last_probe(
    tmp_path: Path,
) -> None:
    tree = busy_host(tmp_path)
    launcher(tree, 4100, "prod", "db", socket=None)
    state = StoredState("Enforce")
    agent = Agent(t.cast(t.Any, state),
                  AgentSettings(node="n1", root=tmp_path, systemctl=tree.systemd().command))
    agent.fs = fs = CountingFS(tmp_path)

    agent.step()  # stops ksmtuned, so probes again

    assert state.body is not None
    status = HypervisorNodeStateStatus.model_validate(state.body["status"])
    assert fs.proc_listings == 2, "one listing per probe, none for the VM audit"
    assert status.host is not None and not status.host.ksm.ksmtuned.running
    assert status.vms is not None
    assert [(vm.namespace, vm.name, vm.launcher_pid) for vm in status.vms.items] == [
        ("prod", "db", 4100)]

    agent.step()  # nothing left to apply

    assert fs.proc_listings == 3


def test_a_vf_write_that_hangs_does_not_hang_the_probe_after_it(tmp_path: Path) -> None:
    # On a real kernel a read of sriov_numvfs waits for the hung write; the fake blocks it too.
    tree = busy_host(tmp_path)
    fs = tree.kernel(hang=[NUMVFS])
    done: list[HypervisorNodeStateStatus] = []
    worker = threading.Thread(target=lambda: done.append(run_cycle(
        fs, busy_spec(), 3, NodeMeta(), HypervisorNodeStateStatus(), systemd=tree.systemd(),
        now=NOW, timeout=0.3).status), daemon=True)
    try:
        worker.start()
        worker.join(15)
        assert not worker.is_alive(), "the cycle hangs behind the hung sriov_numvfs write"
    finally:
        fs.release()
        worker.join(5)
    [status] = done
    assert status.host is not None
    assert "did not return within 0.3 s" in {r.id: r for r in status.results}[
        "sriov/ens1f0"].message
    assert any(p.path.endswith("0000:3b:00.0/sriov_numvfs") and "has not returned" in p.message
               for p in status.host.problems)
    sriov = cond.find(status.conditions, "SRIOV")
    assert sriov is not None and sriov.reason == "SriovCountUnknown"


def test_a_vf_count_the_kernel_refuses_restores_the_old_count_and_backs_off(
    tmp_path: Path,
) -> None:
    tree = busy_host(tmp_path)  # ens1f0 (0000:3b:00.0) has 2 VFs; the spec wants 8
    fs = tree.kernel(refuse_value={(NUMVFS, "8"): errno.ENOMEM})

    first = _cycle(tree, busy_spec(), fs=fs)

    assert (tmp_path / NUMVFS.lstrip("/")).resolve().read_text() == "2\n"  # never left at 0
    result = {r.id: r for r in first.results}["sriov/ens1f0"]
    assert result.result == "Failed" and "the original value '2' is restored" in result.message
    [retry] = first.sriov_retries
    assert (retry.pci_address, retry.nic, retry.wanted, retry.attempts) == (
        "0000:3b:00.0", "ens1f0", 8, 1)
    sriov = cond.find(first.conditions, "SRIOV")
    assert sriov is not None and sriov.reason == "SriovVfsRefused"
    assert "NIC ens1f0 (0000:3b:00.0)" in sriov.message and "ENOMEM" in sriov.message
    assert NUMVFS in {e.path for e in Journal(fs).entries()}
    writes = len(fs.writes)

    second = _cycle(tree, busy_spec(), fs=fs, previous=first)  # within the back-off

    assert [w for w in fs.writes[writes:] if w[0] == NUMVFS] == []
    assert second.sriov_retries == first.sriov_retries


def test_an_entry_that_cannot_be_read_keeps_every_revert_pending_with_its_reason(
    tmp_path: Path,
) -> None:
    tree = busy_host(tmp_path)
    _cycle(tree, busy_spec())
    path = tmp_path / JOURNAL_PATH.lstrip("/")
    data = json.loads(path.read_text())
    data["entries"].append({"kind": "unit", "path": "ksmtuned.service", "original": 7,
                            "step": "ksm/ksmtuned"})
    path.write_text(json.dumps(data))

    first = _cycle(tree, busy_spec(revert=True))
    second = _cycle(tree, busy_spec(revert=True), previous=first)

    for status in (first, second):
        reverted = cond.find(status.conditions, REVERTED)
        assert reverted is not None and reverted.status != "True"
        assert status.sync_status != "Succeeded"
        assert any(r.result == "Failed" and "cannot be read" in r.message
                   for r in status.results)
    assert Journal(tree.fs()).count() == 1


@pytest.mark.parametrize("flags", [pytest.param({"mode": "Audit"}, id="Audit"),
                                   pytest.param({"paused": True}, id="paused")])
def test_an_audit_or_paused_cycle_never_rewrites_an_old_journal(
    tmp_path: Path, flags: dict[str, t.Any],
) -> None:
    # An old journal, written since the boot: an Enforce cycle would move it to stable names.
    tree = busy_host(tmp_path).disk("sdb", wwid="0x5000c500aaaa0001")
    tree.file(JOURNAL_PATH, json.dumps({"version": 1, "entries": [
        {"kind": "sysfs", "path": "/sys/block/sdb/queue/scheduler", "original": "mq-deadline",
         "step": "block/sdb/scheduler"}]}))
    before = (tmp_path / JOURNAL_PATH.lstrip("/")).read_bytes()

    _cycle(tree, busy_spec(**flags))

    assert (tmp_path / JOURNAL_PATH.lstrip("/")).read_bytes() == before


class StuckFS(KernelFS):
    """A kernel whose read of one file blocks in the kernel until `unblock` is set, as a
    driver that hangs a sysfs read, or a process whose cmdline waits on its memory lock."""

    def __init__(self, root: Path, path: str) -> None:
        super().__init__(root)
        self.stuck_on = path
        self.unblock = threading.Event()
        self.entered = 0

    def _read_regular(
        self, path: str, real: str, offset: int, size: int, limit: int, device: bool
    ) -> bytes | None:
        if path == self.stuck_on:
            self.entered += 1
            self.unblock.wait()
        return super()._read_regular(path, real, offset, size, limit, device)


def test_a_probe_stuck_in_a_read_is_reported_with_its_path_and_not_started_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("kvtune_agent.engine.cycle.PROBE_SECONDS", 1.0)
    tree = busy_host(tmp_path).ksm(1)
    spec = busy_spec()
    settled = _cycle(tree, spec)
    tree.ksm(1)  # drift the next cycle would correct, if it could probe
    fs = StuckFS(tmp_path, "/proc/meminfo")
    try:
        stuck = _cycle(tree, spec, fs, settled)
        again = _cycle(tree, spec, fs, stuck)
        entered = fs.entered
    finally:
        fs.unblock.set()

    ready = cond.find(stuck.conditions, cond.READY)
    degraded = cond.find(stuck.conditions, cond.DEGRADED)
    assert ready is not None and degraded is not None
    assert (ready.status, degraded.status, degraded.reason) == ("False", "True", "ProbeHung")
    assert "did not return within 1 s: it is stuck reading /proc/meminfo" in degraded.message
    assert stuck.sync_status == "Failed" and stuck.host == settled.host  # the last one known
    degraded = cond.find(again.conditions, cond.DEGRADED)
    assert degraded is not None and "still has not returned" in degraded.message
    assert entered == 1, "no second probe while the first is stuck"
    assert (tmp_path / "sys/kernel/mm/ksm/run").read_text().strip() == "1", "nothing applied"
    for _ in range(100):  # the released probe returns, and the next cycle probes afresh
        if "kvtune probe" not in {thread.name for thread in threading.enumerate()}:
            break
        threading.Event().wait(0.05)
    recovered = cond.find(_cycle(tree, spec, fs, again).conditions, cond.DEGRADED)
    assert recovered is not None and recovered.reason != "ProbeHung"
