"""The interference reader against real KVM vCPUs on this machine's real scheduler.

Known contention, made with the tier's libvirt (support/libvirthost.py): guests whose one vCPU
spins (`jmp $`), pinned as kvtune pins them, on a partition made for the test
(support/cpupartition.py: every other task and interrupt on housekeeping CPU 0). One vCPU alone
on CPU 1 must wait about 0 % of the time; two forced onto CPU 1 must wait about 50 % each. The
reader's figure (schedstat run delay) is checked against two independent ones
(support/vcputime.py): the kernel's CPU-time accounting of the same thread and perf's
task-clock, which for a vCPU that never sleeps count all the time it did not wait. This machine
has one NUMA node, so remote memory is checked on trees (tests/agent/audit/test_sampling.py);
here the reader must find the guest's hugepages in the real numa_maps and no memory away from
the vCPUs' node.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kvtune_agent.audit import AuditPolicy, Sampler, audit_and_measure
from kvtune_agent.audit.evidence import VmFigures
from kvtune_agent.host.hostfs import HostFS
from kvtune_agent.wiring import probe_host
from kvtune_api.v1alpha1.profile import AuditSettings
from support.cpupartition import partitioned
from support.libvirthost import URI, Libvirt, domain_xml, libvirt_host, running
from support.realhost import REALHOST
from support.vcputime import CpuTime, TaskClock, vcpu_threads

pytestmark = REALHOST

HOUSEKEEPING = frozenset({0})
ISOLATED = 1
WINDOW = 4.0


@pytest.fixture(scope="module")
def host() -> Iterator[Libvirt]:
    if not Path("/sys/devices/system/cpu/cpu1").exists():
        pytest.skip("needs two CPUs: one housekeeping, one isolated")
    with libvirt_host() as made:
        yield made


@contextlib.contextmanager
def _spinning(host: Libvirt, name: str, *, hugepages: bool) -> Iterator[int]:
    """A domain whose one vCPU spins pinned to the isolated CPU, its emulator on CPU 0."""
    disk = host.work / f"{name}.img"
    shutil.copy(host.work / "boot.img", disk)
    try:
        with running(domain_xml(name, ISOLATED, 0, hugepages=hugepages,
                                disk=("file", str(disk)))) as pid:
            yield pid
    finally:
        disk.unlink()


def _measure() -> tuple[dict[str, VmFigures], dict[int, float], dict[int, float]]:
    """The reader's figures over WINDOW seconds, and each vCPU thread's wait share by the two
    independent readings (support/vcputime.py): CPU time, and perf's task-clock."""
    fs = HostFS(Path("/"))
    processes = fs.processes()
    report = probe_host(fs, processes)
    sampler = Sampler()
    first = audit_and_measure(fs, AuditPolicy(), report, processes, sampler, AuditSettings(),
                              host_uri=URI)
    tids = [tid for f in first.figures for tid in vcpu_threads(f.reading.pid)]
    cputime, clock = CpuTime(tids), TaskClock(tids, WINDOW)
    time.sleep(WINDOW)
    second = audit_and_measure(fs, AuditPolicy(), report, processes, sampler, AuditSettings(),
                               host_uri=URI)
    return {f.reading.label: f for f in second.figures}, cputime.shares(), clock.shares()


def _wait_of(figures: VmFigures, *independent: dict[int, float]) -> tuple[float, ...]:
    [thread] = figures.reading.threads
    assert figures.cpu_wait_percent is not None, figures
    return (figures.cpu_wait_percent, *(reading[thread.tid] for reading in independent))


def test_a_vcpu_alone_on_its_isolated_cpu_waits_about_nothing(host: Libvirt) -> None:
    with (partitioned(HOUSEKEEPING) as made,
          _spinning(host, "realhost_alone", hugepages=True),
          subprocess.Popen(["sleep", "60"]) as stray):
        os.sched_setaffinity(stray.pid, {0, 1})  # a task left allowed on the isolated CPU
        time.sleep(1)  # the guest's firmware boots into its loop
        figures, cputime, clock = _measure()
        stray.kill()

    vm = figures["realhost/alone"]
    wait, checked, perf = _wait_of(vm, cputime, clock)
    assert vm.reading.foreign_tasks == (f"{stray.pid} (sleep)",)  # only it
    print(f"alone on CPU 1 ({made.describe()}): wait {wait:.2f} % by schedstat, "
          f"{checked:.2f} % by CPU time, {perf:.2f} % by perf task-clock; irqs/s "
          f"{vm.irqs_per_second}, others {vm.foreign_percent} %")
    assert wait < 2.0
    assert checked < 5.0 and perf < 5.0
    assert vm.reading.dedicated == {ISOLATED} and vm.ran_on == {ISOLATED}
    assert vm.foreign_percent is not None and vm.foreign_percent < 5.0
    assert vm.hugepage_memory_percent is not None and vm.hugepage_memory_percent > 10.0
    assert vm.remote_memory_percent == 0.0


def test_two_vcpus_forced_onto_one_cpu_wait_about_half_the_time_each(host: Libvirt) -> None:
    with (partitioned(HOUSEKEEPING), _spinning(host, "realhost_left", hugepages=False),
          _spinning(host, "realhost_right", hugepages=False)):
        time.sleep(1)
        figures, cputime, clock = _measure()

    for name in ("realhost/left", "realhost/right"):
        wait, checked, perf = _wait_of(figures[name], cputime, clock)
        print(f"{name} sharing CPU 1: wait {wait:.1f} % by schedstat, {checked:.1f} % by CPU "
              f"time, {perf:.1f} % by perf task-clock")
        assert 40.0 <= wait <= 60.0
        assert abs(wait - checked) <= 10.0 and abs(wait - perf) <= 10.0
        assert "realhost/" in " ".join(figures[name].foreign_vcpus)  # the other one is named
        assert figures[name].reading.foreign_tasks == ()
