"""Judging measured interference against spec.audit: the offenders with their cause in words,
VMsIsolated, the CpuNoise findings VMsCompliant names noisy VMs with, and audit_and_measure end
to end (launchers and libvirt as in test_audit_node, counters from a /proc tree)."""

from __future__ import annotations

import dataclasses
import time
import typing as t
from pathlib import Path

import pytest
from kvtune_agent.audit import Sampler, audit_and_measure, interference, vms_condition
from kvtune_agent.audit.evidence import IrqSource, Memory, Thread, VmFigures, VmReading
from kvtune_agent.wiring import probe_host
from kvtune_api.v1alpha1.host import HostReport
from kvtune_api.v1alpha1.profile import AuditSettings, CpuPartition
from kvtune_cli.main import main
from support.hosttree import HostTree, intel_two_socket
from support.vmproc import Vcpu, interrupts, proc_stat, process, qemu

from .builders import GOOD, STRICT, Sockets, domain_xml, launcher, libvirt_host, two_node_host

LIMITS = AuditSettings()


def _figures(**values: object) -> VmFigures:
    reading = VmReading(
        namespace="prod", name="a", pid=500, start=1,
        threads=(Thread(0, 600, 0, 0, 0, 0, 5), Thread(1, 601, 0, 0, 0, 0, 5)),
        dedicated=frozenset({5}), vcpu_nodes=frozenset({0}),
        foreign_tasks=("700 (stress)",))
    base = VmFigures(reading=reading, window=60.0, at=100.0)
    return dataclasses.replace(base, **values)  # type: ignore[arg-type]


def test_a_vcpu_over_the_wait_limit_is_an_offender_named_with_what_shares_its_cpu() -> None:
    vm = _figures(cpu_wait_percent=8.0, worst_vcpu=1, worst_vcpu_wait_percent=14.0,
                  foreign_percent=30.0, foreign_vcpus=("prod/b vCPU 0 (on CPU 5)",))

    summary = interference.summarise([vm], {}, LIMITS)

    [offender] = summary.offenders
    assert (offender.vm, offender.cause) == ("prod/a", "CpuWait")
    assert offender.message == (
        "vCPU 1 of prod/a waited 14 % of the last 60 s (all its vCPUs 8 %): CPU 5 ran other "
        "tasks 30 % of the time; allowed there: prod/b vCPU 0 (on CPU 5), 700 (stress)")
    assert summary.items[0].causes == ["CpuWait"]
    condition = interference.isolated_condition(summary, 3)
    assert (condition.type, condition.status, condition.reason) == (
        "VMsIsolated", "False", "OverThresholds")
    assert offender.message in (condition.message or "")


def test_a_floating_vm_that_waits_is_told_its_vcpus_are_not_pinned() -> None:
    vm = _figures(cpu_wait_percent=40.0, worst_vcpu=0, worst_vcpu_wait_percent=40.0,
                  ran_on=frozenset({0, 1}))
    vm = dataclasses.replace(vm, reading=dataclasses.replace(vm.reading, dedicated=frozenset()))

    [offender] = interference.summarise([vm], {}, LIMITS).offenders

    assert "not pinned and float over 0-1" in offender.message


@pytest.mark.parametrize(("values", "cause", "words"), [
    ({"irqs_per_second": 5000.0, "busiest_cpu": 5,
      "irq_sources": (IrqSource("36", "virtio1-req.0", 240000),)},
     "Irqs", "CPU 5 of prod/a took 5000 interrupts a second over the last 60 s: 36 "
     "(virtio1-req.0) 4000/s"),
    ({"remote_memory_percent": 40.0}, "RemoteMemory",
     "40 % of prod/a's memory is on NUMA node 1, away from its vCPUs on node 0"),
])
def test_each_threshold_names_its_cause(values: dict[str, object], cause: str, words: str) -> None:
    vm = _figures(**values)
    vm = dataclasses.replace(vm, reading=dataclasses.replace(
        vm.reading, memory=Memory({0: 60, 1: 40}, 0, 90.0)))

    [offender] = interference.summarise([vm], {}, LIMITS).offenders

    assert offender.cause == cause and offender.message.startswith(words), offender.message


def test_thresholds_left_unset_are_not_judged() -> None:
    vm = _figures(cpu_wait_percent=99.0, worst_vcpu=0, worst_vcpu_wait_percent=99.0)

    summary = interference.summarise([vm], {}, AuditSettings(max_cpu_wait_percent=None))

    assert summary.offenders == [] and summary.over_threshold == 0
    assert interference.isolated_condition(summary).status == "True"


def test_offenders_are_ordered_by_how_far_over_their_limit_they_are() -> None:
    mild = _figures(cpu_wait_percent=6.0, worst_vcpu=0, worst_vcpu_wait_percent=6.0)
    bad = dataclasses.replace(
        _figures(cpu_wait_percent=50.0, worst_vcpu=0, worst_vcpu_wait_percent=50.0),
        reading=dataclasses.replace(mild.reading, name="z"))

    summary = interference.summarise([mild, bad], {"ThreadExited": 2}, LIMITS)

    assert [o.vm for o in summary.offenders] == ["prod/z", "prod/a"]
    assert summary.skipped == {"ThreadExited": 2}


@pytest.mark.parametrize(("figures", "status", "reason"), [
    ([], "True", "NoVMs"),
    ([_figures(window=None)], "Unknown", "Measuring"),
    ([_figures(cpu_wait_percent=0.2, worst_vcpu=0, worst_vcpu_wait_percent=0.3)], "True",
     "WithinThresholds"),
])
def test_vms_isolated_says_where_the_node_stands(
    figures: list[VmFigures], status: str, reason: str,
) -> None:
    condition = interference.isolated_condition(interference.summarise(figures, {}, LIMITS))

    assert (condition.status, condition.reason) == (status, reason)


def test_noisy_dedicated_cpus_are_cpu_noise_violations_naming_the_source() -> None:
    vm = _figures(irqs_per_second=9000.0, busiest_cpu=5, foreign_percent=12.0,
                  irq_sources=(IrqSource("LOC", "Local timer interrupts", 540000),))
    vm = dataclasses.replace(vm, reading=dataclasses.replace(
        vm.reading, outside_isolated=frozenset({5})))

    found = interference.noise_findings(vm, LIMITS)
    unpartitioned = interference.noise_findings(vm, LIMITS, partitioned=False)

    assert [(f.severity, f.rule) for f in found] == [("Violation", "CpuNoise")] * 3
    messages = " | ".join(f.message for f in found)
    assert "dedicated CPUs 5 are outside the node's isolated CPUs" in messages
    assert "other tasks may run on its dedicated CPUs 5: 700 (stress); confine them" in messages
    assert "LOC (Local timer interrupts) 9000/s" in messages
    # Without a CPU partition host tasks may run anywhere: said, but no broken promise.
    assert [f.severity for f in unpartitioned] == ["Violation", "Warning", "Violation"]
    assert unpartitioned[1].message.startswith(
        "host tasks may run on its dedicated CPUs 5, as on every CPU of a node without a CPU "
        "partition")


def test_another_vms_vcpu_on_dedicated_cpus_is_a_violation_even_without_a_partition() -> None:
    vm = _figures(foreign_vcpus=("prod/b vCPU 0 (on CPU 5)",))
    vm = dataclasses.replace(vm, reading=dataclasses.replace(vm.reading, foreign_tasks=()))

    [finding] = interference.noise_findings(vm, LIMITS, partitioned=False)

    assert finding.severity == "Violation"
    assert finding.message.startswith("other VMs' vCPUs run on its dedicated CPUs 5: prod/b")


def test_audit_and_measure_names_a_noisy_vm_in_vms_compliant_and_measures_it(
    tmp_path: Path,
) -> None:
    tree = HostTree(tmp_path)
    launcher(tree, 4100, "prod", "a", mems="0")
    qemu(tree, 4150, "prod_a", {0: Vcpu(4151, cpu=0), 1: Vcpu(4152, cpu=1)}, allowed="0-2",
         mnt="mnt:[402664100]")  # in the launcher's pod (builders.launcher)
    process(tree, 900, "stress", "0-7", mnt="mnt:[host]")
    interrupts(tree, 8, {"LOC": ([0] * 8, "Local timer interrupts")})
    proc_stat(tree, [0] * 8)
    fs = tree.fs()
    sampler = Sampler()

    host = two_node_host(pools=[(2048, 4096)])
    with libvirt_host(domain_xml("prod_a", **GOOD)):
        first = audit_and_measure(fs, STRICT, host, fs.processes(), sampler, LIMITS,
                                  connect=Sockets(tree, 4100), isolated=frozenset({0, 1}))
        qemu(tree, 4150, "prod_a", {0: Vcpu(4151, 10**9, 10**9, cpu=0),
                                    1: Vcpu(4152, 10**9, 0, cpu=1)})
        second = audit_and_measure(fs, STRICT, host, fs.processes(), sampler, LIMITS,
                                   connect=Sockets(tree, 4100), isolated=frozenset({0, 1}))
        unpartitioned = audit_and_measure(fs, STRICT, host, fs.processes(), Sampler(), LIMITS,
                                          connect=Sockets(tree, 4100))

    assert first.interference.window_seconds is None
    [vm] = second.audit.items
    assert vm.state == "Violation"
    assert [f.rule for f in vm.findings] == ["CpuNoise"]
    assert "900 (stress)" in vm.findings[0].message
    assert "prod/a" in (vms_condition(second.audit).message or "")
    [warned] = unpartitioned.audit.items  # no isolated CPUs: host tasks may run anywhere
    assert (warned.state, [f.severity for f in warned.findings]) == ("Compliant", ["Warning"])
    [measured] = second.interference.items
    assert measured.dedicated_cpus == "0-1" and measured.foreign_tasks == ["900 (stress)"]
    assert measured.cpu_wait_percent is not None and measured.cpu_wait_percent > 0


def test_kvtune_probe_vms_measures_the_vms_in_the_words_of_the_condition(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    # The test driver's demo domain "test" (2 vCPUs, unpinned), run by a QEMU of the tree whose
    # vCPU 1 waits: the tree does not move by itself, so its counters are moved while the probe
    # sleeps between its two readings.
    tree = HostTree(tmp_path)
    qemu(tree, 4150, "test", {0: Vcpu(4151, cpu=0), 1: Vcpu(4152, cpu=1)})
    interrupts(tree, 2, {"LOC": ([0, 0], "Local timer interrupts")})
    proc_stat(tree, [0, 0])
    real_sleep = time.sleep

    def sleep(seconds: float) -> None:
        qemu(tree, 4150, "test", {0: Vcpu(4151, cpu=0), 1: Vcpu(4152, 0, 10**9, cpu=1)})
        real_sleep(seconds)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(time, "sleep", sleep)
        assert main(["probe", "--root", str(tmp_path), "--vms", "--libvirt-uri",
                     "test:///default", "--window", "2"]) == 0

    text = " ".join(capsys.readouterr().out.split())  # lines are wrapped
    assert "INTERFERENCE (measured over 2" in text
    assert "CpuWait: vCPU 1 of test waited " in text
    assert "its vCPUs are not pinned and float over 0-1" in text


class Broken(Sampler):
    def read(self, *args: object, **kwargs: object) -> t.NoReturn:
        raise ZeroDivisionError("a defect in the reader")


def test_a_reader_that_fails_leaves_the_audit_published_and_counts_it(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    launcher(tree, 4100, "prod", "a", mems="0")
    fs = tree.fs()
    sampler = Broken()
    sampler.previous = object()  # type: ignore[assignment]

    with libvirt_host(domain_xml("prod_a", **GOOD)):
        found = audit_and_measure(fs, STRICT, two_node_host(pools=[(2048, 4096)]),
                                  fs.processes(), sampler, LIMITS, connect=Sockets(tree, 4100))

    assert [vm.name for vm in found.audit.items] == ["a"]
    assert found.interference.skipped == {"ReaderFailed": 1} and found.figures == []
    assert sampler.previous is None


#: The kernel's isolcpus on the node of the tests below, not the profile's partition.
KERNEL_ISOLATED = "2-15"


def _partitioned_host(tmp_path: Path, isolated: str = KERNEL_ISOLATED) -> HostReport:
    tree = intel_two_socket(tmp_path)
    tree.file("/sys/devices/system/cpu/isolated", isolated)
    return probe_host(tree.fs())


@pytest.mark.parametrize(("wanted", "expected"), [
    # The profile's partition, whether or not a reboot has put it in isolcpus yet.
    pytest.param({"housekeepingCoresPerNumaNode": 1}, frozenset(range(64)) - {0, 16, 32, 48},
                 id="cores per NUMA node"),
    pytest.param({"housekeepingCpus": "0-1,16-17,32-33,48-49"},
                 frozenset(range(64)) - {0, 1, 16, 17, 32, 33, 48, 49}, id="a CPU list"),
    # A partition that cannot be made here (node 1 keeps no CPU): the kernel's reading.
    pytest.param({"housekeepingCpus": "0,32"}, frozenset(range(2, 16)), id="refused on the node"),
    pytest.param(None, frozenset(range(2, 16)), id="no partition"),
])
def test_vms_are_audited_against_the_profile_s_partition_where_it_fits_the_node(
    tmp_path: Path, wanted: dict[str, object] | None, expected: frozenset[int]
) -> None:
    spec = CpuPartition.model_validate(wanted) if wanted is not None else None

    assert interference.profile_isolated_cpus(spec, _partitioned_host(tmp_path)) == expected


def test_without_a_partition_or_isolcpus_no_isolated_set_is_known(tmp_path: Path) -> None:
    host = _partitioned_host(tmp_path, isolated="\n")

    assert interference.profile_isolated_cpus(None, host) is None
    assert interference.profile_isolated_cpus(
        CpuPartition(housekeeping_cpus="0,32"), host) is None
    assert interference.profile_isolated_cpus(CpuPartition(housekeeping_cpus="0"), None) is None
