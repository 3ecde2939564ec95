"""The interference figures from two readings (pure): /proc's texts parsed, and deltas over the
window turned into shares and rates, with what cannot be compared skipped and counted."""

from __future__ import annotations

import dataclasses

import pytest
from kvtune_agent.audit import evidence
from kvtune_agent.audit.evidence import Interrupts, Memory, NodeReading, Thread, VmReading
from support.vmproc import stat_line


def test_a_stat_line_is_read_past_a_comm_with_spaces_and_parentheses() -> None:
    line = stat_line(4242, "CPU 1/KVM) (x", 777, cpu=5)

    assert evidence.parse_stat(line) == (777, 5)
    assert evidence.parse_stat("4242 (short) S 1 2") is None


@pytest.mark.parametrize(("text", "expected"), [
    ("123 456 7\n", (123, 456)),
    ("123\n", None),          # short
    ("", None),
    ("x y z", None),
])
def test_schedstat_gives_run_and_wait_ns_or_nothing(
    text: str, expected: tuple[int, int] | None,
) -> None:
    assert evidence.parse_schedstat(text) == expected


def test_numa_maps_count_pages_by_node_times_their_size_and_hugepages_apart() -> None:
    text = ("7f00 bind:1 file=/dev/hugepages/g huge dirty=3 N0=1 N1=3 kernelpagesize_kB=2048\n"
            "7f10 default anon=5 dirty=5 N0=5 kernelpagesize_kB=4\n"
            "7f20 default anon=9 N1=9 kernelpage")  # cut short: not counted

    by_node, huge = evidence.parse_numa_maps(text)

    assert by_node == {0: 2048 + 20, 1: 3 * 2048}
    assert huge == 4 * 2048


def test_interrupts_are_read_per_cpu_column_and_system_wide_lines_left_out() -> None:
    text = ("           CPU0       CPU1\n"
            " 24:          1          7  IO-APIC   5-edge      ACPI:Ged\n"
            "LOC:        100        200   Local timer interrupts\n"
            "ERR:          0\n")

    parsed = evidence.parse_interrupts(text)

    assert parsed is not None and parsed.cpus == (0, 1)
    assert parsed.counts == {"24": (1, 7), "LOC": (100, 200)}
    assert parsed.names["24"] == "IO-APIC 5-edge ACPI:Ged"
    assert evidence.parse_interrupts("garbage\n") is None


def test_proc_stat_busy_ticks_leave_idle_and_iowait_out() -> None:
    text = "cpu  9 9 9 9 9 9 9 9\ncpu0 1 2 3 1000 50 4 5 6 0 0\ncpu1 1 0 0 10 0 0 0 0\n"

    assert evidence.parse_proc_stat(text) == {0: 21, 1: 1}
    assert evidence.parse_proc_stat("cpu0 1 2\n") is None


SECOND = 10**9


def _vm(threads: tuple[Thread, ...], *, dedicated: frozenset[int] = frozenset({1}),
        start: int = 100, memory: Memory | None = None) -> VmReading:
    return VmReading(namespace="prod", name="a", pid=500, start=start, threads=threads,
                     dedicated=dedicated, vcpu_nodes=frozenset({0}), memory=memory)


def _thread(vcpu: int, run: float, wait: float, cpu: int = 1, tid: int = 0) -> Thread:
    return Thread(vcpu=vcpu, tid=tid or 600 + vcpu, run_ns=int(run * SECOND),
                  wait_ns=int(wait * SECOND), involuntary=int(wait * 100), migrations=0, cpu=cpu)


def _node(at: float, *vms: VmReading, irqs: dict[str, tuple[int, ...]] | None = None,
          busy: dict[int, int] | None = None) -> NodeReading:
    cpus = tuple(range(len(next(iter(irqs.values()))))) if irqs else ()
    found = None if irqs is None else Interrupts(cpus, irqs, {"LOC": "Local timer interrupts"})
    return NodeReading(at=at, vms={vm.label: vm for vm in vms}, irqs=found, busy_ticks=busy)


def test_a_vcpu_that_waited_half_the_window_waited_50_percent() -> None:
    before = _node(100.0, _vm((_thread(0, 0, 0), _thread(1, 0, 0, tid=700))))
    now = _node(110.0, _vm((_thread(0, 5, 5), _thread(1, 10, 0, tid=700))))

    [vm], skipped = evidence.compare(now, before)

    assert vm.window == 10.0
    assert vm.worst_vcpu == 0 and vm.worst_vcpu_wait_percent == pytest.approx(50.0)
    assert vm.cpu_wait_percent == pytest.approx(25.0)  # averaged over both vCPUs
    assert vm.wait_seconds == pytest.approx(5.0) and vm.run_seconds == pytest.approx(15.0)
    assert vm.involuntary_per_second == pytest.approx(50.0)
    assert vm.migrations_per_second == 0.0
    assert not skipped


def test_the_first_reading_has_no_window_and_no_figures_that_need_one() -> None:
    [vm], _ = evidence.compare(_node(5.0, _vm((_thread(0, 1, 1),))), None)

    assert (vm.window, vm.cpu_wait_percent, vm.irqs_per_second) == (None, None, None)
    assert vm.ran_on == {1}


def test_a_reused_pid_is_another_qemu_and_is_not_compared() -> None:
    before = _node(0.0, _vm((_thread(0, 0, 0),), start=100))
    now = _node(10.0, _vm((_thread(0, 5, 5),), start=999))

    [vm], _ = evidence.compare(now, before)

    assert vm.cpu_wait_percent is None


def test_an_exited_thread_and_a_counter_that_went_back_are_counted_not_compared() -> None:
    before = _node(0.0, _vm((_thread(0, 5, 5), _thread(1, 0, 0, tid=701))))
    now = _node(10.0, _vm((_thread(0, 1, 1),)))

    [vm], skipped = evidence.compare(now, before)

    assert vm.cpu_wait_percent is None
    assert skipped == {"ThreadExited": 1, "CounterReset": 1}


def test_unknown_migrations_stay_unknown_rather_than_zero() -> None:
    unknown = dataclasses.replace(_thread(0, 0, 0), migrations=None)
    before = _node(0.0, _vm((unknown,)))
    now = _node(10.0, _vm((dataclasses.replace(_thread(0, 9, 1), migrations=None),)))

    [vm], _ = evidence.compare(now, before)

    assert vm.migrations_per_second is None and vm.cpu_wait_percent == pytest.approx(10.0)


def test_noise_on_dedicated_cpus_is_interrupts_there_and_busy_time_not_its_own() -> None:
    vm0 = _vm((_thread(0, 0, 0),), dedicated=frozenset({1}))
    vm1 = _vm((_thread(0, 6, 0),), dedicated=frozenset({1}))
    before = _node(0.0, vm0, irqs={"LOC": (0, 0), "36": (0, 0)}, busy={0: 0, 1: 0})
    # CPU 1 was busy 8 s of 10 (800 ticks); the vCPU ran 6 s of it: others ran 2 s (20 %).
    now = _node(10.0, vm1, irqs={"LOC": (99, 2500), "36": (0, 7500)},
                busy={0: 1000, 1: 800})

    [vm], _ = evidence.compare(now, before, ticks_per_second=100)

    assert vm.irqs_per_second == pytest.approx(1000.0) and vm.busiest_cpu == 1
    assert [(s.line, s.count) for s in vm.sources()] == [("36", 7500), ("LOC", 2500)]
    assert vm.foreign_percent == pytest.approx(20.0) and vm.foreign_seconds == pytest.approx(2)


def test_a_floating_vm_has_no_dedicated_cpu_noise_figures() -> None:
    before = _node(0.0, _vm((_thread(0, 0, 0),), dedicated=frozenset()), irqs={"LOC": (0,)},
                   busy={0: 0})
    now = _node(10.0, _vm((_thread(0, 5, 5),), dedicated=frozenset()), irqs={"LOC": (9,)},
                busy={0: 900})

    [vm], _ = evidence.compare(now, before)

    assert (vm.irqs_per_second, vm.foreign_percent) == (None, None)
    assert vm.cpu_wait_percent == pytest.approx(50.0)


def test_memory_on_a_node_away_from_the_vcpus_is_remote() -> None:
    memory = Memory(by_node_kib={0: 750, 1: 250}, huge_kib=500, at=3.0)

    [vm], _ = evidence.compare(_node(5.0, _vm((_thread(0, 0, 0),), memory=memory)), None)

    assert vm.remote_memory_percent == pytest.approx(25.0)
    assert vm.hugepage_memory_percent == pytest.approx(50.0)


def test_another_vms_vcpu_seen_on_a_dedicated_cpu_is_named() -> None:
    mine = _vm((_thread(0, 0, 0, cpu=1),))
    other = dataclasses.replace(_vm((_thread(2, 0, 0, cpu=1, tid=900),), dedicated=frozenset()),
                                name="b")

    figures, _ = evidence.compare(_node(1.0, mine, other), None)

    assert figures[0].foreign_vcpus == ("prod/b vCPU 2 (on CPU 1)",)
    assert figures[1].foreign_vcpus == ()  # floating: nothing of its own to guard


def test_interrupts_are_matched_by_cpu_when_a_cpu_went_offline_between_readings() -> None:
    vm = _vm((_thread(0, 0, 0),), dedicated=frozenset({1}))
    before = NodeReading(at=0.0, vms={vm.label: vm}, busy_ticks=None,
                         irqs=Interrupts((0, 1), {"LOC": (10, 10), "36": (5, 5)}))
    after = dataclasses.replace(vm, threads=(_thread(0, 1, 0),))
    now = NodeReading(at=10.0, vms={vm.label: after}, busy_ticks=None,
                      irqs=Interrupts((1,), {"LOC": (30,), "36": (105,)}))

    [figures], _ = evidence.compare(now, before)

    assert figures.irqs_per_second == pytest.approx(12.0)  # (20 + 100) / 10 s on CPU 1
    assert [(s.line, s.count) for s in figures.sources()] == [("36", 100), ("LOC", 20)]


def test_a_sched_counter_is_found_by_its_key_at_the_start_of_a_line() -> None:
    text = "x (1, #threads: 1)\n----\nse.nr_migrations   :   7\nnr_involuntary_switches : 3\n"

    assert evidence.sched_value(text, "se.nr_migrations") == 7
    assert evidence.sched_value(text, "nr_involuntary_switches") == 3
    assert evidence.sched_value(text, "nr_switches") is None
