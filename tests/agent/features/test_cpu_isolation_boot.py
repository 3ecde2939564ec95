"""CPU isolation's kernel arguments: one boot step with hugepages', staged only where reboots
are allowed, waiting for the reboot, withdrawn to the journal's original, reported elsewhere."""

from __future__ import annotations

import datetime
import typing as t
from pathlib import Path

import pytest
from kvtune_agent.engine.apply import apply
from kvtune_agent.engine.journal import Journal
from kvtune_agent.features import FEATURES
from kvtune_agent.features.base import Plan
from kvtune_agent.features.cpu_isolation import boot as isolation_boot
from kvtune_agent.features.memory import boot
from kvtune_agent.host.bootloader import GRUB_DROPIN, BootFacts, Loader, read_facts
from kvtune_agent.wiring import SEQUENCE, probe_host
from kvtune_api.v1alpha1.host import HostReport
from kvtune_api.v1alpha1.nodestate import DisruptionGrant, HugepageRetry
from support.boottree import GRUBBY, bls, bls_options, debian_grub
from support.hosttree import HostTree

from ..specs import node_spec

GRUBBY_LOADER = Loader("grubby", GRUBBY)
ONE_CORE = {"partition": {"housekeepingCoresPerNumaNode": 1}}
WORDS = ("nohz_full=1-3,5-7 rcu_nocbs=1-3,5-7 isolcpus=managed_irq,1-3,5-7 "
         "systemd.cpu_affinity=0,4 kvm_intel.ple_gap=0")
NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def _host(root: Path) -> HostTree:
    """8 CPUs, cores (n, n+4), one NUMA node, an Intel CPU with PLE on."""
    tree = HostTree(root).cpus(1, 4, 2).numa_node(0, range(8), 64 * 2**20)
    tree.meminfo(64 * 2**20).cpuinfo(8, flags="fpu vmx", vmx_flags="ept ple")
    return tree.kvm_module("kvm_intel", ple_gap=128)


def _report(root: Path) -> HostReport:
    return probe_host(_host(root).fs())


def _stage(root: Path, facts: BootFacts, *, allow_reboot: bool = True, **cpu: t.Any) -> Plan:
    spec = node_spec(cpu={**ONE_CORE, **cpu}, allow_reboot=allow_reboot)
    return isolation_boot.stage(Plan(), spec, _report(root), facts)


def test_the_arguments_are_staged_as_one_reboot_step(tmp_path: Path) -> None:
    found = _stage(tmp_path, BootFacts(GRUBBY_LOADER, "", running="", release="6.1.0"))

    [step] = found.steps
    assert (step.kind, step.planned.id, step.planned.path) == ("bootargs", boot.STEP_ID, GRUBBY)
    assert (step.planned.current, step.planned.desired) == ("", WORDS)
    assert step.planned.disruption == "NeedsReboot"
    assert step.planned.feature == "CPUIsolation"


def test_hugepages_and_isolation_share_the_one_step_of_their_target(tmp_path: Path) -> None:
    spec = node_spec(cpu=ONE_CORE, memory={"hugepages": {"pages": [{"size": "1Gi", "count": 4}]}},
                     allow_reboot=True)
    host = _report(tmp_path)
    facts = BootFacts(GRUBBY_LOADER, "", release="6.1.0")
    retry = HugepageRetry(step="hugepages/node0/1Gi", path="/sys/...", node=0, size="1Gi",
                          wanted=4, allocated=1, attempts=1, last_attempt=NOW, next_attempt=NOW)
    hugepages = boot.stage(Plan(), spec, host, [retry], facts)

    found = isolation_boot.stage(hugepages, spec, host, facts)

    [step] = found.steps
    assert step.planned.desired == f"hugepagesz=1G hugepages=0:4 {WORDS}"
    assert step.planned.feature == "Hugepages"
    assert "CPU isolation: nohz_full" in step.planned.reason


@pytest.mark.parametrize(("cpu", "ple_gap"), [
    ({}, True),
    ({"ple": "Required"}, False),
    ({"ple": "Required", "allowOvercommit": True}, False),
])
def test_ple_goes_off_only_where_vms_never_share_cpus_and_ple_is_not_required(
    tmp_path: Path, cpu: dict[str, t.Any], ple_gap: bool
) -> None:
    [step] = _stage(tmp_path, BootFacts(GRUBBY_LOADER, "", release="6.1.0"), **cpu).steps

    assert ("kvm_intel.ple_gap=0" in step.planned.desired) == ple_gap


@pytest.mark.parametrize(("cpu", "allow_reboot", "why"), [
    ({}, False, "spec.rollout.allowReboot is false"),
    ({"bootIsolation": "Report"}, True, "spec.host.cpu.bootIsolation is Report"),
])
def test_arguments_kvtune_may_not_stage_are_reported_with_the_exact_command(
    tmp_path: Path, cpu: dict[str, t.Any], allow_reboot: bool, why: str
) -> None:
    found = _stage(tmp_path, BootFacts(GRUBBY_LOADER, "", release="6.1.0"),
                   allow_reboot=allow_reboot, **cpu)

    assert found.steps == ()
    [finding] = found.findings
    assert (finding.reason, finding.severity) == ("BootIsolationNotStaged", "Warning")
    assert why in finding.message
    assert f"grubby --update-kernel=ALL --args='{WORDS}'" in finding.message


def test_staged_arguments_wait_for_the_reboot_and_then_are_done(tmp_path: Path) -> None:
    pending = _stage(tmp_path, BootFacts(GRUBBY_LOADER, WORDS, release="6.1.0",
                                         written_since_boot=True))
    ignored = _stage(tmp_path, BootFacts(GRUBBY_LOADER, WORDS, release="6.1.0"))
    booted = _stage(tmp_path, BootFacts(GRUBBY_LOADER, WORDS, running=WORDS, release="6.1.0"))

    assert pending.steps == () and pending.reboot_pending
    assert [f.reason for f in pending.findings] == ["CpuIsolationRebootPending"]
    assert [(f.reason, f.severity) for f in ignored.findings] == [
        ("BootArgumentsIgnored", "Error")]
    assert booted == Plan()


def test_a_partition_removed_takes_its_arguments_back_to_the_journals_original(
    tmp_path: Path,
) -> None:
    staged = f"hugepagesz=1G hugepages=4 {WORDS}"
    facts = BootFacts(GRUBBY_LOADER, staged, running=staged, release="6.1.0")
    spec = node_spec(allow_reboot=True)

    found = isolation_boot.stage(Plan(), spec, _report(tmp_path), facts,
                                 {GRUBBY: "hugepagesz=1G hugepages=4 isolcpus=3"})

    [step] = found.steps
    assert step.planned.desired == "hugepagesz=1G hugepages=4 isolcpus=3"
    assert isolation_boot.stage(Plan(), spec, _report(tmp_path), facts) == Plan(), (
        "arguments kvtune never wrote are not withdrawn")


def test_an_admins_argument_in_etc_default_grub_is_a_conflict(tmp_path: Path) -> None:
    facts = BootFacts(Loader("grub", GRUB_DROPIN, ("update-grub",)), "", release="6.1.0",
                      effective="isolcpus=2-7")

    found = _stage(tmp_path, facts)

    assert found.steps == ()
    assert [f.reason for f in found.findings] == ["BootArgumentsConflict"]
    assert "isolcpus=2-7" in found.findings[0].message


def test_an_unreadable_boot_configuration_is_an_error(tmp_path: Path) -> None:
    found = _stage(tmp_path, BootFacts(GRUBBY_LOADER, None, "grubby exited 1"))

    assert [(f.reason, f.severity) for f in found.findings] == [
        ("BootArgumentsUnknown", "Error")]


@pytest.mark.parametrize("build", [bls, debian_grub])
def test_staged_through_the_hosts_boot_loader_and_reverted_to_what_was_there(
    tmp_path: Path, build: t.Callable[[HostTree], HostTree]
) -> None:
    tree = build(_host(tmp_path))
    fs = tree.fs()
    before = (bls_options(tree), (tmp_path / "boot/grub/grub.cfg").read_text()
              if (tmp_path / "boot/grub/grub.cfg").exists() else None)
    journal = Journal(fs)
    found = _stage(tmp_path, read_facts(fs, timeout=10))

    [result] = apply(FEATURES, found, fs, journal, tree.systemd(),
                     DisruptionGrant(allow_reboot=True), timeout=10)

    assert result.result == "Applied", result
    facts = read_facts(fs, timeout=10)
    assert facts.staged == WORDS
    assert _stage(tmp_path, facts).steps == (), "staged: nothing more to write"
    journal.revert(tree.systemd(), sequence=SEQUENCE, timeout=10)
    assert (bls_options(tree), (tmp_path / "boot/grub/grub.cfg").read_text()
            if (tmp_path / "boot/grub/grub.cfg").exists() else None) == before
