"""Reading each running VM's counters from a /proc tree: QEMU found by the domain libvirt names,
vCPU threads by QEMU's names for them, memory within a budget, the tasks allowed on its CPUs,
and every input that vanished or is malformed skipped with a counted reason."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from kvtune_agent.audit import evidence
from kvtune_agent.audit.checks import Observed
from kvtune_agent.audit.domains import parse_domain_xml
from kvtune_agent.audit.sampling import Sampler
from support.hosttree import HostTree
from support.vmproc import Vcpu, interrupts, numa_maps, proc_stat, process, qemu

from .builders import domain_xml, two_node_host

HOST = two_node_host()
SECOND = 10**9


def _observed(name: str, pins: list[str] | None = None, launcher: int | None = None) -> Observed:
    dom = parse_domain_xml(domain_xml(f"prod_{name}", vcpus=2, pins=pins))
    return Observed(name=name, namespace="prod", domain_name=f"prod_{name}", pid=launcher,
                    netns="net", mems_allowed=None, domain=dom)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _host(tree: HostTree, busy: tuple[int, int] = (0, 0), loc: tuple[int, int] = (0, 0)) -> None:
    interrupts(tree, 8, {"LOC": ([loc[0], loc[1], 0, 0, 0, 0, 0, 0], "Local timer interrupts")})
    proc_stat(tree, [busy[0], busy[1], 0, 0, 0, 0, 0, 0])


def _read(tree: HostTree, sampler: Sampler, *vms: Observed) -> tuple[list[evidence.VmFigures],
                                                                     evidence.Skipped]:
    fs = tree.fs()
    now, before = sampler.read(fs, list(vms), HOST, fs.processes())
    return evidence.compare(now, before)


def _vcpus(run: float, wait: float) -> dict[int, Vcpu]:
    return {0: Vcpu(601, int(run * SECOND), int(wait * SECOND), cpu=1, involuntary=int(wait)),
            1: Vcpu(602, int(run * SECOND), 0, cpu=2)}


def test_a_vms_vcpu_wait_is_read_from_its_qemus_vcpu_threads_over_the_window(
    tmp_path: Path,
) -> None:
    tree = HostTree(tmp_path)
    qemu(tree, 500, "prod_a", _vcpus(0, 0), numa_maps=numa_maps({0: 768, 1: 256}),
         swap_kib=12, ksm_pages=3)
    _host(tree)
    clock = Clock()
    sampler = Sampler(clock=clock)
    vm = _observed("a", pins=["1", "2"])
    first, _ = _read(tree, sampler, vm)
    qemu(tree, 500, "prod_a", _vcpus(7, 3), numa_maps=numa_maps({0: 768, 1: 256}),
         swap_kib=12, ksm_pages=3)
    _host(tree, busy=(0, 1000), loc=(0, 5000))
    clock.now += 10

    [figures], skipped = _read(tree, sampler, vm)

    assert first[0].cpu_wait_percent is None  # one reading is no window
    assert figures.reading.pid == 500 and figures.reading.dedicated == {1, 2}
    assert figures.worst_vcpu == 0 and figures.worst_vcpu_wait_percent == pytest.approx(30.0)
    assert figures.cpu_wait_percent == pytest.approx(15.0)
    assert figures.involuntary_per_second == pytest.approx(0.3)
    assert figures.ran_on == {1, 2}
    assert figures.irqs_per_second == pytest.approx(500.0)
    # CPU 1 busy 10 s of 10 s, CPU 2 idle; its vCPUs ran 14 s: nothing left for others.
    assert figures.foreign_percent == 0.0
    # 256 of its 1034 pages (guest RAM and a library) on node 1, away from its node-0 vCPUs.
    assert figures.remote_memory_percent == pytest.approx(100 * 256 / 1034)
    assert (figures.reading.swap_kib, figures.reading.ksm_pages) == (12, 3)
    assert not skipped


def test_a_vm_whose_qemu_stops_between_readings_is_skipped_with_its_reason(
    tmp_path: Path,
) -> None:
    tree = HostTree(tmp_path)
    qemu(tree, 500, "prod_a", _vcpus(0, 0))
    _host(tree)
    sampler = Sampler()
    vm = _observed("a", pins=["1", "2"])
    _read(tree, sampler, vm)
    shutil.rmtree(tmp_path / "proc/500/task")
    (tmp_path / "proc/500/stat").unlink()

    figures, skipped = _read(tree, sampler, vm)

    assert figures == [] and skipped == {"VmStopped": 1}


@pytest.mark.parametrize(("damage", "reason"), [
    ("rm-thread", "ThreadExited"),
    ("rm-schedstat", "FileMissing"),
    ("short-schedstat", "FileMalformed"),
])
def test_a_vcpu_thread_that_cannot_be_read_is_skipped_and_the_others_still_count(
    tmp_path: Path, damage: str, reason: str,
) -> None:
    tree = HostTree(tmp_path)
    qemu(tree, 500, "prod_a", _vcpus(0, 0))
    _host(tree)
    sampler = Sampler()
    vm = _observed("a")
    _read(tree, sampler, vm)
    qemu(tree, 500, "prod_a", _vcpus(1, 1))
    thread = tmp_path / "proc/500/task/601"
    if damage == "rm-thread":
        shutil.rmtree(thread)
    elif damage == "rm-schedstat":
        (thread / "schedstat").unlink()
    else:
        (thread / "schedstat").write_text("12")

    [figures], skipped = _read(tree, sampler, vm)

    assert skipped[reason] >= 1
    assert figures.worst_vcpu == 1  # vCPU 0 is not compared; vCPU 1 still is


def test_vms_without_a_qemu_or_with_two_are_counted_not_guessed(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    qemu(tree, 500, "prod_b", _vcpus(0, 0), mnt="mnt:[1]")
    qemu(tree, 501, "prod_b", _vcpus(0, 0), mnt="mnt:[2]")
    _host(tree)

    figures, skipped = _read(tree, Sampler(), _observed("a"), _observed("b"))

    assert figures == [] and skipped == {"QemuNotFound": 1, "QemuAmbiguous": 1}


def test_of_two_qemus_naming_a_vm_the_one_in_its_launchers_pod_is_it(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    qemu(tree, 500, "prod_b", _vcpus(0, 0), mnt="mnt:[pod]")
    qemu(tree, 501, "prod_b", _vcpus(0, 0), mnt="mnt:[elsewhere]")
    process(tree, 400, "virt-launcher", "1-2", mnt="mnt:[pod]")
    _host(tree)

    [figures], skipped = _read(tree, Sampler(), _observed("b", launcher=400))

    assert figures.reading.pid == 500 and not skipped


def test_a_kernel_without_sched_files_gives_switches_from_status_and_unknown_migrations(
    tmp_path: Path,
) -> None:
    tree = HostTree(tmp_path)
    qemu(tree, 500, "prod_a", _vcpus(0, 0), sched=False)
    _host(tree)
    sampler = Sampler()
    _read(tree, sampler, _observed("a"))
    qemu(tree, 500, "prod_a", _vcpus(1, 4), sched=False)

    [figures], _ = _read(tree, sampler, _observed("a"))

    assert figures.involuntary_per_second is not None and figures.involuntary_per_second > 0
    assert figures.migrations_per_second is None


def test_numa_maps_are_read_within_the_budget_a_few_vms_per_cycle_in_turn(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    names = ["a", "b", "c"]
    for index, name in enumerate(names):
        qemu(tree, 500 + index, f"prod_{name}", {0: Vcpu(600 + index * 10)},
             numa_maps=numa_maps({0: 10}))
    _host(tree)
    sampler = Sampler(memory_budget=0.0)  # one VM a cycle
    vms = [_observed(name) for name in names]

    seen = []
    for _ in names:
        figures, _ = _read(tree, sampler, *vms)
        seen.append([f.hugepage_memory_percent is not None for f in figures])

    assert seen == [[True, False, False], [True, True, False], [True, True, True]]


def test_tasks_allowed_on_a_vms_dedicated_cpus_are_named_but_not_its_pods_or_the_kernels(
    tmp_path: Path,
) -> None:
    tree = HostTree(tmp_path)
    qemu(tree, 500, "prod_a", {0: Vcpu(601, cpu=1)}, allowed="1", mnt="mnt:[pod]")
    process(tree, 400, "virt-launcher", "1", mnt="mnt:[pod]")        # its own pod
    process(tree, 20, "ksoftirqd/1", "1", kernel=True, placed=True)  # the kernel's own
    process(tree, 30, "kworker/R-kblockd", "0-7", kernel=True, placed=True)
    process(tree, 40, "khugepaged", "0-7", kernel=True)              # movable: noise
    process(tree, 700, "stress", "0-7", mnt="mnt:[host]")            # a host process
    process(tree, 800, "containerd", "0", mnt="mnt:[host]")          # on housekeeping
    _host(tree)
    tree.file("/sys/devices/virtual/workqueue/cpumask", "ff")

    [figures], _ = _read(tree, Sampler(), _observed("a", pins=["1"], launcher=400))
    tree.file("/sys/devices/virtual/workqueue/cpumask", "1")  # unbound work on CPU 0 only
    [moved], _ = _read(tree, Sampler(), _observed("a", pins=["1"], launcher=400))

    assert figures.reading.foreign_tasks == (
        "40 (khugepaged)", "700 (stress)", "unbound workqueues (cpumask 0-7)")
    assert moved.reading.foreign_tasks == ("40 (khugepaged)", "700 (stress)")


def test_dedicated_cpus_outside_the_isolated_set_are_reported(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    qemu(tree, 500, "prod_a", _vcpus(0, 0))
    _host(tree)
    fs = tree.fs()

    now, _ = Sampler().read(fs, [_observed("a", pins=["1", "2"])], HOST, fs.processes(),
                            isolated=frozenset({2, 3}))

    assert now.vms["prod/a"].outside_isolated == {1}


def test_a_new_process_is_read_at_once_and_known_ones_again_in_turn_within_the_budget(
    tmp_path: Path,
) -> None:
    tree = HostTree(tmp_path)
    qemu(tree, 500, "prod_a", {0: Vcpu(601, cpu=1)}, allowed="1")
    process(tree, 700, "containerd", "0")
    _host(tree)
    vm = _observed("a", pins=["1"])
    frozen, turning = Sampler(tasks_budget=0.0), Sampler(tasks_budget=10.0)
    for sampler in (frozen, turning):
        _read(tree, sampler, vm)
    process(tree, 700, "containerd", "0-7")  # its affinity widened since
    process(tree, 701, "stress", "0-7")      # and a process started

    [stale], _ = _read(tree, frozen, vm)
    [fresh], _ = _read(tree, turning, vm)

    assert stale.reading.foreign_tasks == ("701 (stress)",)
    assert fresh.reading.foreign_tasks == ("700 (containerd)", "701 (stress)")


def test_a_workqueue_mask_that_is_no_cpumask_is_reported_not_guessed(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    qemu(tree, 500, "prod_a", {0: Vcpu(601, cpu=1)}, allowed="1")
    tree.file("/sys/devices/virtual/workqueue/cpumask", "zz")
    _host(tree)

    [figures], skipped = _read(tree, Sampler(), _observed("a", pins=["1"]))

    assert figures.reading.foreign_tasks == ()
    assert skipped == {"Unreadable": 1}
