"""CPU isolation on host trees: IRQs, irqbalance, kernel noise and boot arguments planned from
the partition, applied through the journal, and reverted to what was there."""

from __future__ import annotations

import datetime
import errno
import shutil
import typing as t
from pathlib import Path

import pytest
from kvtune_agent.engine.apply import apply
from kvtune_agent.engine.journal import Journal
from kvtune_agent.features import FEATURES
from kvtune_agent.features.base import NodeMeta, Plan
from kvtune_agent.features.cpu_isolation.plan import format_mask
from kvtune_agent.host.hostfs import HostFS
from kvtune_agent.report import format_report
from kvtune_agent.wiring import SEQUENCE, plan, probe_host, read_facts, run_cycle
from kvtune_api import conditions as cond
from kvtune_api.v1alpha1.nodestate import (
    DisruptionGrant,
    HypervisorNodeStateSpec,
    HypervisorNodeStateStatus,
)
from support.hosttree import HostTree, kernel_mask

from ..specs import node_spec

LIVE = DisruptionGrant(allow_drain=False, allow_reboot=False, approved=False)
DEFAULT = "/proc/irq/default_smp_affinity"
WORKQUEUE = "/sys/devices/virtual/workqueue/cpumask"
BALANCING = "/proc/sys/kernel/numa_balancing"
ONE_CORE = {"partition": {"housekeepingCoresPerNumaNode": 1}}


def _host(root: Path) -> HostTree:
    """8 CPUs, 4 cores of 2 threads (core n: CPUs n and n+4), one NUMA node: one core per node
    keeps CPUs 0 and 4, the other 6 are isolated."""
    tree = HostTree(root).cpus(1, 4, 2).numa_node(0, range(8), 2**20).meminfo(2**20)
    tree.irqs({24: range(8), 25: [5], 26: [0], 27: [1]}, default=range(8), cpus=8)
    tree.irq(28, [2], settable=False)  # managed, as a 6.12 kernel says it
    tree.file("/sys/kernel/debug/irq/irqs/27", "handler: handle_edge_irq\ndstate: 0x3\n"
              "            IRQD_AFFINITY_MANAGED\n")
    tree.workqueue(range(8), cpus=8).numa_balancing(1)
    tree.kernel_thread(2, "kthreadd", range(8)).kernel_thread(15, "rcu_preempt", range(8))
    tree.kernel_thread(16, "irq/27-nvme0q1", [1])  # follows IRQ 27
    return tree.kernel_thread(10, "kworker/3:0H", [3], bound=True)


def _plan(tree: HostTree, **cpu: t.Any) -> Plan:
    """What the registered CPU isolation feature plans, through the engine."""
    fs = tree.fs()
    host = probe_host(fs)
    return plan(node_spec(cpu=cpu), host, facts=read_facts(fs, host)).of("CPUIsolation")


def _steps(found: Plan) -> dict[str, tuple[str, str]]:
    return {s.planned.id: (s.planned.current, s.planned.desired) for s in found.steps}


def _reasons(found: Plan) -> set[str]:
    return {f.reason for f in found.findings}


def _read(root: Path, path: str) -> str:
    return (root / path.lstrip("/")).read_text().strip()


def test_without_a_partition_nothing_is_planned(tmp_path: Path) -> None:
    assert _plan(_host(tmp_path)) == Plan()


def test_irqs_and_kernel_noise_move_to_the_housekeeping_cpus(tmp_path: Path) -> None:
    found = _plan(_host(tmp_path), **ONE_CORE)

    assert _steps(found) == {
        # Allowed on housekeeping CPUs too: kept to those; only on isolated ones: all of them.
        "irq/24": ("0-7", "0,4"),
        "irq/25": ("5", "0,4"),
        "irq/default": ("ff", "11"),
        "kernel/numa_balancing": ("1", "0"),
        "workqueue/cpumask": ("ff", "11"),
    }
    assert all(s.planned.disruption == "Live" for s in found.steps)
    # IRQ 26 is on housekeeping already; IRQs 27 and 28 are their drivers' (managed).
    assert _reasons(found) == {"ManagedIrqsOnIsolatedCpus", "KernelThreadsOnIsolatedCpus"}
    managed = next(f for f in found.findings if f.reason == "ManagedIrqsOnIsolatedCpus")
    assert "IRQs 27-28 are managed" in managed.message
    threads = next(f for f in found.findings if f.reason == "KernelThreadsOnIsolatedCpus")
    assert "2 unbound kernel threads" in threads.message, (
        "the bound per-CPU thread and the IRQ's own thread are left")


def test_a_refused_partition_degrades_the_node_and_plans_nothing(tmp_path: Path) -> None:
    found = _plan(_host(tmp_path), partition={"housekeepingCpus": "0,9"})

    assert found.steps == ()
    assert [(f.severity, f.reason) for f in found.findings] == [("Error", "CpuPartitionOffline")]
    assert "CPUs 9 do not exist on this node" in found.findings[0].message


@pytest.mark.parametrize(("field", "ids"), [
    ("irqs", {"kernel/numa_balancing", "workqueue/cpumask"}),
    ("kernelNoise", {"irq/24", "irq/25", "irq/default"}),
])
def test_a_measure_in_report_form_is_told_not_made(
    tmp_path: Path, field: str, ids: set[str]
) -> None:
    found = _plan(_host(tmp_path), **ONE_CORE, **{field: "Report"})

    assert set(_steps(found)) == ids
    told = [f.message for f in found.findings if f.reason == "NotIsolated"]
    assert len(told) == 1 and f"spec.cpu.{field} is Report" in told[0]


def test_an_unmanaged_measure_is_neither_made_nor_told(tmp_path: Path) -> None:
    found = _plan(_host(tmp_path), **ONE_CORE, irqs="Unmanaged", kernelNoise="Unmanaged",
                  bootIsolation="Unmanaged")

    assert found.steps == ()
    assert _reasons(found) == set()


def test_applied_then_reverted_the_host_is_as_before(tmp_path: Path) -> None:
    tree = _host(tmp_path)
    paths = ["/proc/irq/24/smp_affinity_list", "/proc/irq/25/smp_affinity_list", DEFAULT,
             WORKQUEUE, BALANCING]
    before = {path: _read(tmp_path, path) for path in paths}
    fs = tree.kernel()
    journal = Journal(fs)

    results = apply(FEATURES, _plan(tree, **ONE_CORE), fs, journal, tree.systemd(), LIVE, timeout=5)

    assert {r.result for r in results} == {"Applied"}, results
    assert [_read(tmp_path, path) for path in paths] == ["0,4", "0,4", "11", "11", "0"]
    assert set(_steps(_plan(tree, **ONE_CORE))) == set(), "a settled host plans nothing"
    restored = journal.revert(tree.systemd(), sequence=SEQUENCE, timeout=5)
    assert {r.result for r in restored} == {"Applied"}, restored
    assert {path: _read(tmp_path, path) for path in paths} == before


def test_a_new_irq_is_moved_at_the_next_cycle(tmp_path: Path) -> None:
    tree = _host(tmp_path)
    fs = tree.kernel()
    apply(FEATURES, _plan(tree, **ONE_CORE), fs, Journal(fs), tree.systemd(), LIVE, timeout=5)
    tree.irq(60, [0, 4], name="ens1f0v0-TxRx-0").irq(61, [6], name="ens1f0v0-TxRx-1")

    assert _steps(_plan(tree, **ONE_CORE)) == {"irq/61": ("6", "0,4")}


def test_an_irq_the_kernel_refuses_to_move_fails_alone(tmp_path: Path) -> None:
    tree = _host(tmp_path)
    fs = tree.kernel(refuse={"/proc/irq/24/smp_affinity_list": errno.EIO})

    work = _plan(tree, **ONE_CORE)
    results = {r.id: r for r in apply(FEATURES, work, fs, Journal(fs), tree.systemd(), LIVE,
                                      timeout=5)}

    assert results["irq/24"].result == "Failed"
    assert "Input/output error" in results["irq/24"].message
    assert results["irq/25"].result == "Applied"
    assert _read(tmp_path, "/proc/irq/24/smp_affinity_list") == "0-7"


@pytest.mark.parametrize(("ids", "cpus", "expected"), [
    ({0, 4}, 8, "11"),
    ({0}, 2, "1"),
    ({0, 1, 32}, 40, "01,00000003"),
    ({0, 63}, 64, "80000000,00000001"),
    ({0, 127}, 128, "80000000,00000000,00000000,00000001"),
])
def test_a_mask_is_written_as_wide_as_the_kernel_prints_it(
    ids: set[int], cpus: int, expected: str
) -> None:
    assert format_mask(ids, kernel_mask(range(cpus), cpus)) == expected
    assert kernel_mask(ids, cpus) == expected


# -- irqbalance ------------------------------------------------------------------------------


def _irqbalance(tree: HostTree, *, running: bool = True, config: str | None = "",
                environment: str = "/etc/default/irqbalance") -> HostTree:
    tree.systemctl().unit("irqbalance.service", wanted_by=["multi-user.target"])
    unit = tree.root / "usr/lib/systemd/system/irqbalance.service"
    unit.write_text(f"[Service]\nEnvironmentFile=-{environment}\nExecStart=/usr/sbin/irqbalance\n")
    if running:
        tree.process(700, "irqbalance", "/usr/sbin/irqbalance", "--foreground")
    if config is not None:
        (tree.root / environment.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (tree.root / environment.lstrip("/")).write_text(config)
    return tree


def test_irqbalance_gets_the_isolated_cpus_banned_and_is_restarted(tmp_path: Path) -> None:
    tree = _irqbalance(_host(tmp_path), config="#IRQBALANCE_ONESHOT=\nIRQBALANCE_ARGS=-x\n")

    found = _plan(tree, **ONE_CORE)

    steps = _steps(found)
    _, desired = steps["irqbalance/config"]
    assert desired == ("#IRQBALANCE_ONESHOT=\nIRQBALANCE_ARGS=-x\n"
                       "IRQBALANCE_BANNED_CPULIST=1-3,5-7\nIRQBALANCE_BANNED_CPUS=000000ee\n")
    ids = [s.planned.id for s in found.steps]
    assert ids.index("irqbalance/config") < ids.index("irqbalance/stop") < ids.index(
        "irqbalance/start"), "the file first, then the restart"
    assert steps["irqbalance/stop"] == ("enabled,active", "enabled,inactive")
    assert steps["irqbalance/start"] == ("enabled,inactive", "enabled,active")


@pytest.mark.parametrize("running", [True, False])
def test_irqbalance_with_its_ban_in_place_is_left_as_it_is(tmp_path: Path, running: bool) -> None:
    tree = _irqbalance(_host(tmp_path), running=running, config=(
        "IRQBALANCE_BANNED_CPULIST=1-3,5-7\nIRQBALANCE_BANNED_CPUS=000000ee\n"))

    assert not [i for i in _steps(_plan(tree, **ONE_CORE)) if i.startswith("irqbalance")]


def test_irqbalances_file_is_the_one_its_unit_reads(tmp_path: Path) -> None:
    tree = _irqbalance(_host(tmp_path), config=None, environment="/etc/sysconfig/irqbalance")
    (tmp_path / "etc/default").mkdir(parents=True)

    current, desired = _steps(_plan(tree, **ONE_CORE))["irqbalance/config"]

    step = next(s for s in _plan(tree, **ONE_CORE).steps if s.planned.id == "irqbalance/config")
    assert step.planned.path == "/etc/sysconfig/irqbalance"
    assert current == "" and "IRQBALANCE_BANNED_CPULIST=1-3,5-7" in desired


def test_an_unreadable_irqbalance_file_is_not_overwritten(tmp_path: Path) -> None:
    tree = _irqbalance(_host(tmp_path), config=None)
    (tmp_path / "etc/default/irqbalance").mkdir(parents=True)  # there, but not a regular file

    found = _plan(tree, **ONE_CORE)

    assert "irqbalance/config" not in _steps(found)
    assert "IrqbalanceConfigUnreadable" in _reasons(found)


def test_irqbalance_left_unmanaged_while_it_runs_is_warned_of(tmp_path: Path) -> None:
    tree = _irqbalance(_host(tmp_path))

    found = _plan(tree, **ONE_CORE, irqbalance="Unmanaged")

    assert not [i for i in _steps(found) if i.startswith("irqbalance")]
    assert "IrqbalanceUnmanaged" in _reasons(found)


def test_irqbalance_stop_disables_it(tmp_path: Path) -> None:
    tree = _irqbalance(_host(tmp_path))

    steps = _steps(_plan(tree, **ONE_CORE, irqbalance="Stop"))

    assert steps["irqbalance"] == ("enabled,active", "disabled,inactive")
    assert "irqbalance/config" not in steps


def test_irqbalance_ban_applied_then_reverted_leaves_its_file_and_unit_as_before(
    tmp_path: Path,
) -> None:
    config = "IRQBALANCE_ARGS=-x\n"
    tree = _irqbalance(_host(tmp_path), config=config)
    fs = tree.kernel()
    journal = Journal(fs)

    work = _plan(tree, **ONE_CORE)
    results = {r.id: r for r in apply(FEATURES, work, fs, journal, tree.systemd(), LIVE,
                                      timeout=5)}

    assert {results[i].result for i in ("irqbalance/config", "irqbalance/stop",
                                         "irqbalance/start")} == {"Applied"}, results
    assert "IRQBALANCE_BANNED_CPULIST=1-3,5-7" in _read(tmp_path, "/etc/default/irqbalance")
    changes = [c for c in tree.systemctl_calls() if not c.startswith("is-")]
    assert changes == ["stop irqbalance.service", "start irqbalance.service"]
    assert journal.revert(tree.systemd(), sequence=SEQUENCE, timeout=5)
    assert (tmp_path / "etc/default/irqbalance").read_text() == config
    assert tree.systemd().state("irqbalance.service", timeout=5).active


# -- frequency governor and idle states ------------------------------------------------------


def _power(tree: HostTree) -> HostTree:
    for cpu in range(8):
        tree.cpufreq(cpu, "powersave", ("performance", "powersave", "schedutil"))
        tree.idle_states(cpu, ("POLL", 0), ("C1", 2), ("C1E", 10), ("C6", 133))
    return tree


def test_the_isolated_cpus_get_the_governor_and_lose_their_deep_idle_states(
    tmp_path: Path,
) -> None:
    tree = _power(_host(tmp_path))

    steps = _steps(_plan(tree, **ONE_CORE, governor="performance",
                         maxIdleLatencyMicroseconds=10))

    isolated = [1, 2, 3, 5, 6, 7]
    assert {k: v for k, v in steps.items() if k.startswith("cpufreq/")} == {
        f"cpufreq/cpu{cpu}": ("powersave", "performance") for cpu in isolated}
    assert {k: v for k, v in steps.items() if k.startswith("cpuidle/")} == {
        f"cpuidle/cpu{cpu}/state3": ("0", "1") for cpu in isolated}, "C6 only, not housekeeping"


def test_governor_and_idle_states_applied_then_reverted(tmp_path: Path) -> None:
    tree = _power(_host(tmp_path))
    fs = tree.kernel()
    journal = Journal(fs)
    governor = "/sys/devices/system/cpu/cpu1/cpufreq/scaling_governor"
    c6 = "/sys/devices/system/cpu/cpu1/cpuidle/state3/disable"

    work = _plan(tree, **ONE_CORE, governor="performance", maxIdleLatencyMicroseconds=10)
    apply(FEATURES, work, fs, journal, tree.systemd(), LIVE, timeout=5)

    assert (_read(tmp_path, governor), _read(tmp_path, c6)) == ("performance", "1")
    journal.revert(tree.systemd(), sequence=SEQUENCE, timeout=5)
    assert (_read(tmp_path, governor), _read(tmp_path, c6)) == ("powersave", "0")


def test_a_governor_the_cpus_do_not_offer_is_refused_naming_what_they_offer(
    tmp_path: Path,
) -> None:
    found = _plan(_power(_host(tmp_path)), **ONE_CORE, governor="ondemand")

    assert not [s for s in found.steps if s.planned.id.startswith("cpufreq/")]
    [refusal] = [f for f in found.findings if f.reason == "GovernorUnavailable"]
    assert refusal.severity == "Error"
    assert "performance powersave schedutil" in refusal.message


def test_a_governor_where_no_cpu_has_cpufreq_is_said_not_set(tmp_path: Path) -> None:
    found = _plan(_host(tmp_path), **ONE_CORE, governor="performance")

    assert "NoCpuFrequencyScaling" in _reasons(found)


def test_an_irq_gone_before_the_revert_is_dropped_from_the_journal(tmp_path: Path) -> None:
    tree = _host(tmp_path)
    fs = tree.kernel()
    journal = Journal(fs)
    apply(FEATURES, _plan(tree, **ONE_CORE), fs, journal, tree.systemd(), LIVE, timeout=5)
    shutil.rmtree(tmp_path / "proc/irq/25")  # its device unplugged

    restored = {r.id: r for r in journal.revert(tree.systemd(), sequence=SEQUENCE, timeout=5)}

    assert restored["revert/irq/25"].result == "Skipped"
    assert "no longer exists" in restored["revert/irq/25"].message
    assert restored["revert/irq/24"].result == "Applied"
    assert journal.entries() == []


def test_a_revert_whose_value_is_in_place_already_needs_no_write(tmp_path: Path) -> None:
    tree = _host(tmp_path)
    irq = "/proc/irq/24/smp_affinity_list"
    # The write that moved it failed, and the kernel refuses every write to it since.
    fs = tree.kernel(refuse={irq: errno.EPERM})
    journal = Journal(fs)
    apply(FEATURES, _plan(tree, **ONE_CORE), fs, journal, tree.systemd(), LIVE, timeout=5)

    restored = {r.id: r for r in journal.revert(tree.systemd(), sequence=SEQUENCE, timeout=5)}

    assert restored["revert/irq/24"].result == "Applied", restored["revert/irq/24"]
    assert journal.entries() == []


# -- the whole cycle -------------------------------------------------------------------------

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def _cycle(tree: HostTree, spec: HypervisorNodeStateSpec, fs: HostFS,
           previous: HypervisorNodeStateStatus | None = None) -> HypervisorNodeStateStatus:
    return run_cycle(fs, spec, 3, NodeMeta(), previous or HypervisorNodeStateStatus(),
                     systemd=tree.systemd(), now=NOW, timeout=5).status


def test_a_cycle_isolates_publishes_the_partition_and_a_revert_undoes_it(tmp_path: Path) -> None:
    tree = _host(tmp_path)
    fs = tree.kernel()
    before = {path: _read(tmp_path, path) for path in (DEFAULT, WORKQUEUE, BALANCING)}

    status = _cycle(tree, node_spec(cpu=ONE_CORE), fs)

    assert [(p.housekeeping, p.isolated) for p in status.cpu_partition] == [("0,4",
                                                                             "1-3,5-7")]
    condition = cond.find(status.conditions, "CPUIsolation")
    assert condition is not None and (condition.status, condition.reason) == (
        "True", "AsSpecified"), condition
    assert "nohz_full=1-3,5-7" in condition.message, "the boot arguments are told, not staged"
    assert not [s for s in status.plan if s.feature == "CPUIsolation"], status.plan
    assert [_read(tmp_path, p) for p in (DEFAULT, WORKQUEUE, BALANCING)] == ["11", "11", "0"]

    _cycle(tree, node_spec(cpu=ONE_CORE, revert=True), fs, status)

    assert {path: _read(tmp_path, path) for path in before} == before


def test_without_a_partition_the_condition_says_not_managed(tmp_path: Path) -> None:
    tree = _host(tmp_path)

    status = _cycle(tree, node_spec(mode="Audit"), tree.kernel())

    condition = cond.find(status.conditions, "CPUIsolation")
    assert condition is not None and (condition.status, condition.reason) == (
        "True", "NotManaged")
    assert status.cpu_partition == []


def test_the_text_report_says_where_irqs_workqueues_and_kernel_threads_run(
    tmp_path: Path,
) -> None:
    tree = _host(tmp_path)

    text = format_report(probe_host(tree.fs()))

    section = text[text.index("CPU ISOLATION"):]
    for line in ("IRQs:                   1 on CPUs 0-7 (24)", "new IRQs on:            0-7",
                 "workqueues on:          0-7", "NUMA balancing:         on (1)",
                 "kernel threads:         2 on 0-7"):
        assert line in section, section


def test_an_irq_the_kernel_refuses_is_asked_again_only_after_a_wait(tmp_path: Path) -> None:
    tree = _host(tmp_path)
    irq = "/proc/irq/24/smp_affinity_list"
    # A managed IRQ on a kernel whose file does not say so (before 6.12) and no debugfs.
    fs = tree.kernel(refuse={irq: errno.EIO})

    first = _cycle(tree, node_spec(cpu=ONE_CORE), fs)
    writes = len([w for w in fs.writes if w[0] == irq])
    second = _cycle(tree, node_spec(cpu=ONE_CORE), fs, first)

    [record] = first.irq_retries
    assert (record.step, record.wanted, record.attempts) == ("irq/24", "0,4", 1)
    assert "Input/output error" in record.error
    assert len([w for w in fs.writes if w[0] == irq]) == writes, "not written again yet"
    condition = cond.find(second.conditions, "CPUIsolation")
    assert condition is not None and "refused to move IRQs 24 " in condition.message, condition
    assert second.irq_retries == first.irq_retries
