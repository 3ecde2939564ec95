"""The PLE planner: findings, and for Required a fix staged for the next boot."""

from __future__ import annotations

import typing as t
from pathlib import Path

import pytest
from kvtune_agent.features.cpu import PLE_CONF
from support.hosttree import (
    HostTree,
    arm64_server,
    loongarch64_host,
    power9_host,
    pvm_guest,
    riscv64_host,
    s390_lpar,
)

from ..specs import node_spec
from .planning import finding_of, host_facts, plan_of

INTEL_PLE = "options kvm_intel ple_gap=128\n"


def _intel(tmp_path: Path, *, ple_gap: int, vmx_flags: str = "ept ple") -> HostTree:
    tree = HostTree(tmp_path).cpuinfo(4, flags="fpu vmx", vmx_flags=vmx_flags)
    return tree.kvm_module("kvm_intel", ple_gap=ple_gap, ple_window=4096)


@pytest.mark.parametrize(("ple", "gap", "flags", "allow_reboot", "reason", "severity"), [
    pytest.param("Required", 0, "ept", True, "PLEUnsupported", "Error",
                 id="required on a CPU without PLE: degraded, never a step"),
    pytest.param("Preferred", 0, "ept", True, "PLEUnsupported", "Warning",
                 id="preferred on a CPU without PLE: a warning"),
    pytest.param("Required", 0, "ept ple", False, "PLEDisabled", "Error",
                 id="required but turned off, reboots not allowed: degraded"),
    pytest.param("Preferred", 0, "ept ple", True, "PLEDisabled", "Warning",
                 id="preferred but turned off: a warning, no reboot staged"),
    pytest.param("Ignored", 0, "ept", True, None, None, id="ignored is not checked"),
    pytest.param("Required", 128, "ept ple", True, None, None, id="on is fine"),
])
def test_ple_findings(
    tmp_path: Path, ple: str, gap: int, flags: str, allow_reboot: bool, reason: str | None,
    severity: str | None,
) -> None:
    spec = node_spec(cpu={"ple": ple}, allow_reboot=allow_reboot)

    found = plan_of(_intel(tmp_path, ple_gap=gap, vmx_flags=flags), spec)

    assert found.steps == ()
    assert [(f.reason, f.severity) for f in found.findings] == (
        [(reason, severity)] if reason else [])


@pytest.mark.parametrize("ple", ["Required", "Preferred"])
@pytest.mark.parametrize(("build", "reason"), [
    pytest.param(arm64_server, None, id="arm64: KVM's WFE trap stands in, nothing to find"),
    pytest.param(s390_lpar, None, id="s390x: directed yield stands in, nothing to find"),
    pytest.param(power9_host, None, id="POWER: H_CONFER stands in, nothing to find"),
    pytest.param(pvm_guest, "PLEUnsupported", id="kvm_pvm: nothing stands in, still unsupported"),
    pytest.param(riscv64_host, "PLEUnsupported", id="riscv64: no exit on a spin, unsupported"),
    pytest.param(loongarch64_host, "PLEUnsupported",
                 id="loongarch64: no exit on a spin, unsupported"),
])
def test_ple_off_vt_x_and_amd_v_is_found_only_where_nothing_stands_in_for_it(
    tmp_path: Path, build: t.Callable[[Path], HostTree], reason: str | None, ple: str
) -> None:
    found = plan_of(build(tmp_path), node_spec(cpu={"ple": ple}))

    assert [f.reason for f in found.findings if f.reason.startswith("PLE")] == (
        [reason] if reason else [])


def test_required_ple_turned_off_is_staged_for_a_reboot_when_reboots_are_allowed(
    tmp_path: Path,
) -> None:
    found = plan_of(_intel(tmp_path, ple_gap=0), node_spec(cpu={"ple": "Required"},
                                                         allow_reboot=True))

    [step] = found.steps
    assert (step.kind, step.planned.id, step.planned.path, step.planned.desired) == (
        "file", "ple/kvm_intel", PLE_CONF, "options kvm_intel ple_gap=128\n")
    assert step.planned.disruption == "NeedsReboot"
    assert found.findings == ()


def test_a_staged_ple_fix_waits_for_the_reboot_without_a_new_step(tmp_path: Path) -> None:
    spec = node_spec(cpu={"ple": "Required"}, allow_reboot=True)

    found = plan_of(_intel(tmp_path, ple_gap=0), spec, files=host_facts(ple_staged=INTEL_PLE))

    assert found.steps == ()
    assert found.reboot_pending
    assert finding_of(found, "PLERebootPending").severity == "Pending"


def test_a_staged_ple_fix_that_a_reboot_did_not_apply_is_an_error(tmp_path: Path) -> None:
    files = host_facts(ple_staged=INTEL_PLE, ple_staged_before_boot=True)

    found = plan_of(_intel(tmp_path, ple_gap=0), node_spec(cpu={"ple": "Required"},
                                                         allow_reboot=True), files=files)

    assert not found.reboot_pending
    assert "kvm_intel.ple_gap=0" in finding_of(found, "PLEOverridden").message


def _amd(tmp_path: Path, **params: int) -> HostTree:
    tree = HostTree(tmp_path).cpuinfo(4, vendor="AuthenticAMD",
                                      flags="fpu svm pausefilter pfthreshold")
    return tree.kvm_module("kvm_amd", **params)


@pytest.mark.parametrize(("count", "thresh", "options"), [
    pytest.param(3000, 0, "options kvm_amd pause_filter_thresh=128\n",
                 id="a zero threshold gets the kernel's default threshold"),
    pytest.param(0, 0, "options kvm_amd pause_filter_count=3000 pause_filter_thresh=128\n",
                 id="both at zero get both defaults"),
    pytest.param(0, 128, "options kvm_amd pause_filter_count=3000\n",
                 id="a zero count gets the kernel's default count"),
])
def test_an_amd_pause_filter_turned_off_is_staged_in_the_same_modprobe_file(
    tmp_path: Path, count: int, thresh: int, options: str,
) -> None:
    tree = _amd(tmp_path, pause_filter_count=count, pause_filter_thresh=thresh)

    found = plan_of(tree, node_spec(cpu={"ple": "Required"}, allow_reboot=True))

    [step] = found.steps
    assert (step.kind, step.planned.id, step.planned.path, step.planned.desired) == (
        "file", "ple/kvm_amd", PLE_CONF, options)
    assert step.planned.disruption == "NeedsReboot"


def test_a_staged_amd_fix_waits_for_the_reboot(tmp_path: Path) -> None:
    tree = _amd(tmp_path, pause_filter_count=3000, pause_filter_thresh=0)
    files = host_facts(ple_staged="options kvm_amd pause_filter_thresh=128\n")

    found = plan_of(tree, node_spec(cpu={"ple": "Required"}, allow_reboot=True), files=files)

    assert found.steps == () and found.reboot_pending


def test_boot_settings_report_stages_no_ple_fix_and_says_what_to_write(tmp_path: Path) -> None:
    spec = node_spec(cpu={"ple": "Required"}, boot={"settings": "Report"}, allow_reboot=True)

    found = plan_of(_intel(tmp_path, ple_gap=0), spec)

    assert found.steps == ()
    message = finding_of(found, "PLEDisabled").message
    assert "boot.settings is Report" in message
    assert f"`options kvm_intel ple_gap=128` in {PLE_CONF}" in message
