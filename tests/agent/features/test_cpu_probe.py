"""The CPU probe: vendor and counts, hardware virtualization, and PLE with its evidence."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from kvtune_agent.features.cpu import probe as cpu
from kvtune_agent.host.hostfs import HostFS
from kvtune_agent.wiring import probe_host
from support.hosttree import (
    INTEL_FLAGS,
    HostTree,
    amd_old_kernel,
    arm64_cpuinfo,
    arm64_server,
    intel_two_socket,
    loongarch64_host,
    power9_host,
    pvm_guest,
    riscv64_host,
    s390_lpar,
    vm_guest,
)

PLE_BIT = 1 << 42
Build = Callable[[HostTree], object]


def test_a_vm_guest_without_vmx_says_so_plainly(tmp_path: Path) -> None:
    report = probe_host(vm_guest(tmp_path).fs())

    assert report.cpu.virtualization == "None"
    assert report.cpu.hypervisor_guest
    assert (report.cpu.ple.supported, report.cpu.ple.enabled) == ("No", "No")
    [error] = [p for p in report.problems if p.severity == "Error"]
    assert "virtual machine without VMX or SVM" in error.message
    assert error.path == "/proc/cpuinfo"


def test_a_bare_metal_host_without_vmx_is_told_to_enable_it_in_firmware(tmp_path: Path) -> None:
    found = cpu.probe(HostTree(tmp_path).cpuinfo(4).fs())

    [error] = cpu.check(found)
    assert error.severity == "Error"
    assert "BIOS" in error.message


def test_a_two_socket_intel_host_reports_vendor_model_and_counts(tmp_path: Path) -> None:
    report = probe_host(intel_two_socket(tmp_path).fs())

    assert report.cpu.vendor == "GenuineIntel"
    assert report.cpu.model_name == "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz"
    assert (report.cpu.family, report.cpu.model) == (6, 106)
    assert report.cpu.logical_cpus == 64
    assert (report.numa.sockets, report.numa.cores, report.numa.threads_per_core) == (2, 32, 2)
    assert report.cpu.virtualization == "VMX"
    assert report.cpu.ple.ple_gap == 128
    assert report.cpu.ple.ple_window == 4096


def _intel(vmx_flags: str | None = "ept ple") -> Build:
    return lambda tree: tree.cpuinfo(4, flags=f"{INTEL_FLAGS} vmx", vmx_flags=vmx_flags)


def _amd(flags: str = "svm pausefilter pfthreshold") -> Build:
    return lambda tree: tree.cpuinfo(4, vendor="AuthenticAMD", flags=f"{INTEL_FLAGS} {flags}")


def _svm_only(family: int, extra: str = "") -> Build:
    """An AMD CPU of `family` on a kernel that printed svm but no SVM feature flag, with
    kvm_amd loaded and its pause filter parameters on."""
    return lambda tree: tree.cpuinfo(
        4, vendor="AuthenticAMD", family=family, flags=f"{INTEL_FLAGS} svm {extra}".strip()
    ).kvm_module("kvm_amd", pause_filter_count=3000, pause_filter_thresh=128)


def _with(*steps: Build) -> Build:
    def build(tree: HostTree) -> None:
        for step in steps:
            step(tree)

    return build


PLE_CASES = [
    pytest.param(
        _with(_intel(), lambda t: t.kvm_module("kvm_intel", ple_gap=128, ple_window=4096)),
        "Yes", "Yes", "'vmx flags' lists ple",
        id="intel vmx flags listing ple with ple_gap 128 is supported and enabled",
    ),
    pytest.param(
        _with(_intel(), lambda t: t.kvm_module("kvm_intel", ple_gap=0)),
        "Yes", "No", "ple_gap=0",
        id="intel ple_gap 0 is supported but disabled",
    ),
    pytest.param(
        _with(_intel("ept vpid"), lambda t: t.kvm_module("kvm_intel", ple_gap=0)),
        "No", "No", "does not list ple",
        id="intel vmx flags without ple is unsupported",
    ),
    pytest.param(
        _with(_intel(None), lambda t: t.msr(PLE_BIT | 0xFF),
              lambda t: t.kvm_module("kvm_intel", ple_gap=128)),
        "Yes", "Yes", "bit 42 = 1",
        id="intel MSR bit 42 proves support on a kernel without vmx flags",
    ),
    pytest.param(
        _with(_intel(), lambda t: t.msr(0xFF), lambda t: t.kvm_module("kvm_intel", ple_gap=0)),
        "No", "No", "bit 42 = 0",
        id="intel MSR bit 42 clear outranks the vmx flags line",
    ),
    pytest.param(
        _with(_intel(None), lambda t: t.kvm_module("kvm_intel", ple_gap=128)),
        "Yes", "Yes", "ple_gap=128",
        id="intel non-zero ple_gap alone proves support since the kernel zeroes it otherwise",
    ),
    pytest.param(
        _intel(None), "Unknown", "Unknown", "kvm_intel is not loaded",
        id="intel without msr, vmx flags or kvm_intel is unknown",
    ),
    pytest.param(
        _with(_amd(), lambda t: t.kvm_module("kvm_amd", pause_filter_count=3000,
                                             pause_filter_thresh=128)),
        "Yes", "Yes", "pausefilter listed",
        id="amd pausefilter with both parameters non-zero is enabled",
    ),
    pytest.param(
        _with(_amd(), lambda t: t.kvm_module("kvm_amd", pause_filter_count=3000,
                                             pause_filter_thresh=0)),
        "Yes", "No", "pause_filter_thresh=0",
        id="amd pause_filter_thresh 0 disables the filter",
    ),
    pytest.param(
        _with(_amd("svm npt nrip_save"), lambda t: t.kvm_module(
            "kvm_amd", pause_filter_count=3000, pause_filter_thresh=128)),
        "No", "No", "pausefilter not listed, though other SVM features are",
        id="amd without pausefilter among the svm feature flags is unsupported",
    ),
    pytest.param(
        _svm_only(21), "Yes", "Yes", "family 0x15 CPUs all have the pause filter",
        id="amd family 15h on a kernel printing no svm feature flags has it by its family",
    ),
    pytest.param(
        _svm_only(16), "Unknown", "Unknown", "family 0x10 does not settle it",
        id="amd family 10h on a kernel printing no svm feature flags is unknown, not no",
    ),
    pytest.param(
        _svm_only(25, "hypervisor"), "Unknown", "Unknown", "in a VM does not settle it",
        id="amd in a vm printing no svm feature flags is unknown: the hypervisor may hide it",
    ),
    pytest.param(
        _amd(), "Yes", "Unknown", "kvm_amd is not loaded",
        id="amd with kvm_amd not loaded has enabled unknown",
    ),
]


@pytest.mark.parametrize(("build", "supported", "enabled", "evidence"), PLE_CASES)
def test_ple(tmp_path: Path, build: Build, supported: str, enabled: str, evidence: str) -> None:
    tree = HostTree(tmp_path)
    build(tree)

    ple = cpu.probe(tree.fs()).ple

    assert (ple.supported, ple.enabled) == (supported, enabled)
    assert any(evidence in f"{e.source}: {e.observed}" for e in ple.evidence), ple.evidence


@pytest.mark.parametrize(
    ("build", "severity", "words"),
    [
        pytest.param(
            _with(_intel(), lambda t: t.kvm_module("kvm_intel", ple_gap=0)),
            "Warning", "/etc/modprobe.d",
            id="disabled PLE points at modprobe.d and a reboot",
        ),
        pytest.param(
            _with(_intel("ept"), lambda t: t.kvm_module("kvm_intel", ple_gap=0)),
            "Warning", "do not overcommit",
            id="missing PLE warns against vCPU overcommit",
        ),
        pytest.param(
            _with(_intel(None), lambda t: t.kvm_module("kvm_intel", ple_gap=0)),
            "Warning", "may have it",
            id="ple_gap 0 with no other evidence is still reported as off",
        ),
        pytest.param(
            _intel(None), "Info", "msr module",
            id="unknown support asks for the msr module",
        ),
    ],
)
def test_ple_problems(tmp_path: Path, build: Build, severity: str, words: str) -> None:
    tree = HostTree(tmp_path).file("/dev/kvm", b"")
    build(tree)

    problems = [p for p in cpu.check(cpu.probe(tree.fs())) if p.feature == "PLE"]

    assert [p.severity for p in problems] == [severity]
    assert words in problems[0].message


def test_virtualization_without_dev_kvm_is_an_error(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).cpuinfo(4, flags=f"{INTEL_FLAGS} vmx", vmx_flags="ple")

    problems = cpu.check(cpu.probe(tree.fs()))

    assert [(p.severity, p.path) for p in problems if p.feature == "CPU"] == [
        ("Error", "/dev/kvm")
    ]


def test_an_old_kernel_on_an_amd_family_15h_host_raises_no_false_ple_warning(
    tmp_path: Path,
) -> None:
    report = probe_host(amd_old_kernel(tmp_path).fs())

    assert (report.cpu.ple.supported, report.cpu.ple.enabled) == ("Yes", "Yes")
    assert not [p for p in report.problems if p.feature in ("CPU", "PLE")]


def test_an_amd_cpu_whose_pause_filter_is_unknown_gets_an_info_naming_why(
    tmp_path: Path,
) -> None:
    tree = HostTree(tmp_path).cpuinfo(4, vendor="AuthenticAMD", family=16,
                                      flags=f"{INTEL_FLAGS} svm")
    tree.kvm_module("kvm_amd", pause_filter_count=3000, pause_filter_thresh=128)

    [info] = [p for p in cpu.check(cpu.probe(tree.fs())) if p.feature == "PLE"]

    assert info.severity == "Info"
    assert "no SVM feature flags" in info.message and "msr" not in info.message


# -- KVM beyond VT-x and AMD-V ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "architecture", "virtualization", "module"),
    [
        pytest.param(pvm_guest, "x86", "PVM", "kvm_pvm", id="a VM running KVM through kvm_pvm"),
        pytest.param(arm64_server, "arm64", "ARM", "kvm", id="an arm64 server"),
        pytest.param(s390_lpar, "s390", "SIE", "kvm", id="an s390x LPAR"),
        pytest.param(power9_host, "power", "POWER", "kvm_hv", id="a POWER9 PowerNV host"),
        pytest.param(riscv64_host, "riscv", "RISCV", "kvm", id="a riscv64 host with H"),
        pytest.param(loongarch64_host, "loongarch", "LoongArch", "kvm",
                     id="a loongarch64 host with LVZ"),
    ],
)
def test_hosts_where_kvm_runs_without_vmx_or_svm_get_no_error_and_name_the_module(
    tmp_path: Path, build: Callable[[Path], HostTree], architecture: str, virtualization: str,
    module: str,
) -> None:
    report = probe_host(build(tmp_path).fs())

    found = report.cpu
    assert (found.architecture, found.virtualization, found.kvm_module) == (
        architecture, virtualization, module)
    assert found.kvm_device
    assert not found.ple.applicable
    # Nothing stands in for PLE under kvm_pvm, on RISC-V or on LoongArch (no exit on a spin).
    assert bool(found.ple.equivalent) is (virtualization in ("ARM", "SIE", "POWER"))
    assert found.ple.evidence[0].observed
    assert [p for p in report.problems if p.feature in ("CPU", "PLE")
            and p.severity != "Info"] == []


def test_kvm_pvm_says_which_module_runs_guests_and_that_ple_does_not_apply(
    tmp_path: Path,
) -> None:
    found = cpu.probe(pvm_guest(tmp_path).fs())

    [info] = cpu.check(found)
    assert (info.severity, info.path) == ("Info", "/sys/module/kvm_pvm")
    assert "kvm_pvm" in info.message and "Pause-Loop Exiting" in info.message
    assert found.ple.equivalent is None
    assert "no VM exit on PAUSE" in found.ple.evidence[0].observed


def test_an_arm64_cpuinfo_with_features_is_not_taken_for_a_missing_one(tmp_path: Path) -> None:
    tree = arm64_cpuinfo(HostTree(tmp_path), 4)

    problems = cpu.check(cpu.probe(tree.fs()))

    # no /dev/kvm: that is the finding, with arm64's cause, not "no flags line"
    assert [(p.severity, p.path) for p in problems] == [("Error", "/dev/kvm")]
    assert "EL2" in problems[0].message


def test_an_s390_lpar_without_sie_cannot_run_kvm(tmp_path: Path) -> None:
    tree = s390_lpar(tmp_path)
    text = (tmp_path / "proc/cpuinfo").read_text().replace(" sie", "")
    tree.file("/proc/cpuinfo", text)
    (tmp_path / "dev/kvm").unlink()  # kvm does not initialise without SIE

    [error] = cpu.check(cpu.probe(tree.fs()))

    assert error.severity == "Error" and "sie" in error.message


def test_dev_kvm_is_checked_even_when_cpuinfo_is_unfamiliar(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).file("/proc/cpuinfo", "system type\t\t: UBNT_E300\n\nprocessor"
                                   "\t\t: 0\ncpu model\t\t: Cavium Octeon III V0.2\n")

    [warning] = cpu.check(cpu.probe(tree.fs()))

    assert warning.severity == "Warning" and "/dev/kvm is missing too" in warning.message


def test_the_real_root_running_kvm_through_a_module_is_not_told_kvm_cannot_run() -> None:
    real = Path("/")
    if not (real / "dev/kvm").exists():
        pytest.skip("this machine has no /dev/kvm")

    found = cpu.probe(HostFS(real))

    assert found.kvm_module is not None
    assert not [p for p in cpu.check(found) if p.severity == "Error"]


@pytest.mark.parametrize(
    ("build", "old", "new", "named"),
    [
        pytest.param(riscv64_host, "rv64imafdch_", "rv64imafdc_", "no H (hypervisor) extension",
                     id="riscv64 harts without H"),
        pytest.param(loongarch64_host, " lvz", "", "do not list lvz",
                     id="a loongarch64 CPU without LVZ"),
    ],
)
def test_a_cpu_without_the_extension_kvm_needs_is_told_so_by_its_architectures_name(
    tmp_path: Path, build: Callable[[Path], HostTree], old: str, new: str, named: str,
) -> None:
    tree = build(tmp_path)
    tree.file("/proc/cpuinfo", (tmp_path / "proc/cpuinfo").read_text().replace(old, new))
    (tmp_path / "dev/kvm").unlink()  # kvm does not initialise without it

    [error] = cpu.check(cpu.probe(tree.fs()))

    assert (error.severity, error.path) == ("Error", "/proc/cpuinfo")
    assert named in error.message


def test_a_loongarch64_cpu_is_not_taken_for_arm64_though_both_write_features(
    tmp_path: Path,
) -> None:
    found = cpu.probe(loongarch64_host(tmp_path).fs())

    assert (found.architecture, found.vendor, found.model_name) == (
        "loongarch", "Loongson", "Loongson-3C5000")
    assert found.logical_cpus == 16
    assert "arm64" not in (found.ple.equivalent or "") + found.ple.evidence[0].observed


def test_an_arm64_cpu_is_named_by_its_implementer_and_part(tmp_path: Path) -> None:
    found = cpu.probe(arm64_server(tmp_path).fs())

    assert (found.vendor, found.model_name, found.logical_cpus) == ("ARM", "CPU part 0xd0c", 64)


def test_dev_kvm_without_a_backend_kvtune_knows_is_a_warning_not_an_error(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).cpuinfo(2, flags=f"{INTEL_FLAGS} hypervisor").file("/dev/kvm", b"")

    [warning] = cpu.check(cpu.probe(tree.fs()))

    assert (warning.severity, warning.path) == ("Warning", "/dev/kvm")
    assert "backend kvtune cannot judge" in warning.message
