"""The whole probe: an empty root, this machine's real /, the CLI, the text report, bounds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kvtune_agent.engine import probe as engine_probe
from kvtune_agent.features import FEATURES
from kvtune_agent.host import cpulist
from kvtune_agent.host.hostfs import HostFS, ProcessTable
from kvtune_agent.report import format_report
from kvtune_agent.wiring import probe_host
from kvtune_api.v1alpha1.host import MAX_PROBLEMS, HostReport, Problem
from support.hosttree import (
    HostTree,
    amd_eight_node,
    amd_old_kernel,
    arm64_server,
    compute_units,
    intel_two_socket,
    large_host,
    loongarch64_host,
    power9_host,
    pvm_guest,
    riscv64_host,
    s390_lpar,
    vm_guest,
)


def test_an_empty_root_is_all_absent_or_unknown_and_no_crash(tmp_path: Path) -> None:
    report = probe_host(HostFS(tmp_path))

    assert report.cpu.virtualization == "Unknown"
    assert (report.cpu.ple.supported, report.cpu.ple.enabled) == ("Unknown", "Unknown")
    assert report.numa.nodes == []
    assert report.memory.total_kib is None
    assert report.ksm.state == "Absent"
    assert report.numad.unit == "NotInstalled"
    assert report.sriov.nics == [] and report.block.devices == []
    assert report.kubelet.config_path is None
    assert {p.feature for p in report.problems} == {"CPU", "NUMA", "Memory", "Kubelet"}
    assert all(p.severity != "Error" for p in report.problems)
    assert "PROBLEMS" in format_report(report)


def _lscpu_numa_nodes() -> int | None:
    if shutil.which("lscpu") is None:
        return None
    out = json.loads(subprocess.run(["lscpu", "-J"], capture_output=True, check=True).stdout)
    pending: list[Any] = list(out["lscpu"])
    while pending:
        entry = pending.pop()
        pending += entry.get("children", [])
        if entry["field"] == "NUMA node(s):":
            return int(entry["data"])
    return None


def test_the_real_root_agrees_with_nproc_lscpu_and_meminfo() -> None:
    report = probe_host(HostFS(Path("/")))

    assert len(cpulist.parse(report.numa.online_cpus)) == os.cpu_count()
    nodes = _lscpu_numa_nodes()
    if nodes is not None:
        assert len(report.numa.nodes) == nodes
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    assert report.memory.total_kib == int(meminfo["MemTotal"].split()[0])


def test_the_cli_prints_json_that_parses_back_into_a_host_report(tmp_path: Path) -> None:
    vm_guest(tmp_path)

    out = subprocess.run(
        [sys.executable, "-m", "kvtune_cli.main", "probe", "--root", str(tmp_path), "--json"],
        capture_output=True, text=True, check=True,
    ).stdout

    report = HostReport.model_validate_json(out)
    assert report == probe_host(HostFS(tmp_path))
    assert json.loads(out)["cpu"]["hypervisorGuest"] is True


def test_the_cli_probe_ends_quietly_when_its_reader_goes_away(tmp_path: Path) -> None:
    # `kvtune probe --json | head`: the JSON of a large host is more than a pipe holds, so the
    # flush before the quick exit meets a closed pipe; a status, not a traceback.
    large_host(tmp_path)
    probe = subprocess.Popen(
        [sys.executable, "-m", "kvtune_cli.main", "probe", "--root", str(tmp_path), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert probe.stdout is not None and probe.stderr is not None
    probe.stdout.read(10)
    probe.stdout.close()

    assert probe.wait(timeout=60) == 1
    assert probe.stderr.read() == b""


#: Modules that each cost milliseconds to import and that `kvtune probe --json` needs none of
#: (the kubelet's YAML only where a kubelet config exists; the text report only without --json;
#: kube_custom_resource only to render CRDs, and secrets only for the operator's peering).
NOT_FOR_THE_PROBE = {
    "kopf", "kubernetes", "prometheus_client", "yaml", "kube_custom_resource",
    "kvtune_api.v1alpha1.profile", "kvtune_api.v1alpha1.nodestate",
    "kvtune_api.v1alpha1.audit", "kvtune_api.v1alpha1.resource", "kvtune_agent.report",
}


def test_the_cli_probe_imports_neither_the_operator_the_metrics_nor_the_other_kinds(
    tmp_path: Path,
) -> None:
    script = ("import sys; from kvtune_cli.main import main; main(sys.argv[1:]); "
              "print(' '.join(sorted(sys.modules)), file=sys.stderr)")

    out = subprocess.run(
        [sys.executable, "-c", script, "probe", "--root", str(tmp_path), "--json"],
        capture_output=True, text=True, check=True,
    )

    imported = set(out.stderr.split())
    assert "kvtune_api.v1alpha1.host" in imported
    assert imported & NOT_FOR_THE_PROBE == set()


def test_the_text_report_highlights_a_problem_and_the_line_it_concerns(tmp_path: Path) -> None:
    text = format_report(probe_host(vm_guest(tmp_path).fs()))

    lines = text.splitlines()
    assert any(line.startswith("!!  ERROR   CPU") for line in lines)
    assert any(line.startswith("!!") and "Virtualization:" in line for line in lines)
    assert any(line.lstrip("!. ").startswith("vda") and "System" in line for line in lines)


def test_a_failing_probe_is_an_error_and_the_others_still_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(fs: HostFS, processes: ProcessTable) -> Any:
        raise KeyError("flags")

    monkeypatch.setattr(FEATURES[0], "probe", broken)

    report = probe_host(vm_guest(tmp_path).fs())

    [error] = [p for p in report.problems if p.severity == "Error"]
    assert "CPU probe failed (KeyError" in error.message
    assert report.block.devices[0].name == "vda"


def test_an_unreadable_process_is_a_problem_of_the_features_that_look_at_processes(
    tmp_path: Path,
) -> None:
    tree = vm_guest(tmp_path).unreadable("/proc/812/cmdline").file("/proc/812/comm", "bash")

    problems = probe_host(tree.fs()).problems

    assert [p.feature for p in problems if p.path == "/proc/812/cmdline"] == ["KSM", "Numad"]


def test_the_process_table_given_is_the_one_probed(tmp_path: Path) -> None:
    tree = vm_guest(tmp_path).process(4242, "numad")
    fs = tree.fs()
    table = fs.processes()
    shutil.rmtree(tmp_path / "proc/4242")  # numad stopped since: the table still shows it

    assert probe_host(fs, table).numad.pids == [4242]
    assert probe_host(fs).numad.pids == []


def _letters(index: int) -> str:
    return "".join(chr(ord("a") + int(d)) for d in f"{index:03d}")


def test_problems_are_bounded_with_a_last_entry_counting_the_rest() -> None:
    # Findings each of a kind of its own (words without digits), so none is told together.
    distinct = [Problem(severity="Warning" if index % 2 else "Info", feature="Block",
                        message=f"finding {_letters(index)}") for index in range(2 * MAX_PROBLEMS)]

    problems = engine_probe._bounded(distinct)

    assert len(problems) == MAX_PROBLEMS
    assert [p.severity for p in problems[:MAX_PROBLEMS // 2]] == ["Warning"] * (MAX_PROBLEMS // 2)
    assert (problems[-1].feature, problems[-1].message) == (
        "Report", f"{MAX_PROBLEMS + 1} more findings were left out (the report keeps "
        f"{MAX_PROBLEMS})")


def test_a_large_host_probes_into_a_bounded_report(tmp_path: Path) -> None:
    # How fast is bench/probe_bench.py's to prove (its synthetic probe target), not a test's.
    report = probe_host(large_host(tmp_path).fs())

    assert len(report.block.devices) == 64 and len(report.numa.nodes) == 8
    assert len(report.model_dump_json(exclude_none=True)) < 256 * 1024


def test_many_problems_of_one_kind_are_one_entry_and_push_no_true_finding_out(
    tmp_path: Path,
) -> None:
    tree = HostTree(tmp_path).cpus(1, 64, 2).numa_node(0, range(128), 2**30)
    tree.meminfo(2**30, swap_kib=2**20)
    for number in range(128):  # the same read failing on every CPU
        (tmp_path / f"sys/devices/system/cpu/cpu{number}/topology/core_id").unlink()
        tree.unreadable(f"/sys/devices/system/cpu/cpu{number}/topology/core_id")

    problems = probe_host(tree.fs()).problems

    assert "swap is on" in " ".join(p.message for p in problems)
    [told] = [p for p in problems if "core_id" in p.path and p.feature == "NUMA"
              and "cannot read" in p.message]
    assert told.message.startswith("128 findings of one kind; the first: ")
    assert "and 124 more" in told.message
    assert len(problems) < MAX_PROBLEMS


def test_problems_about_devices_named_in_letters_are_one_kind_and_push_no_finding_out(
    tmp_path: Path,
) -> None:
    tree = intel_two_socket(tmp_path)
    for index in range(60):  # sdaa..sdgj: names that differ in letters only
        tree.disk(f"sd{_letters(index)[1:]}", content=None)  # two problems each
    healthy = probe_host(intel_two_socket(tmp_path / "alone").fs()).problems

    problems = probe_host(tree.fs()).problems

    assert [p for p in problems if p.feature == "Report"] == []  # nothing left out
    assert all(p in problems for p in healthy)
    told = [p for p in problems if p.feature == "Block"]
    assert sorted(p.message[:80] for p in told) == [
        "60 findings of one kind; the first: /dev/sdaa: cannot read: Is a directory; run ",
        "60 findings of one kind; the first: sdaa is not handed to VMs: cannot read /dev/",
    ]
    assert all("/dev/sdab, /dev/sdac, /dev/sdad and 56 more" in p.message for p in told)


def test_a_few_problems_of_one_kind_stay_apart(tmp_path: Path) -> None:
    tree = vm_guest(tmp_path)
    for index in range(3):
        tree.unreadable(f"/proc/{800 + index}/cmdline").file(f"/proc/{800 + index}/comm", "sh")

    problems = probe_host(tree.fs()).problems

    assert len([p for p in problems if p.feature == "KSM"]) == 3


@pytest.mark.parametrize(
    ("build", "line"),
    [
        pytest.param(compute_units, "16 online; 1 socket(s) x 8 core(s) x 2 thread(s) (the "
                     "kubelet counts 16 cores)", id="amd compute units multiply out"),
        pytest.param(intel_two_socket, "64 online; 2 socket(s) x 16 core(s) x 2 thread(s)",
                     id="a two-socket intel host"),
    ],
)
def test_the_text_reports_cpu_line_multiplies_out_to_the_online_cpus(
    tmp_path: Path, build: Callable[[Path], HostTree], line: str
) -> None:
    tree = build(tmp_path)
    if not (tmp_path / "proc/cpuinfo").exists():
        tree.cpuinfo(16)

    text = format_report(probe_host(tree.fs()))

    assert any(row.strip(" !.").endswith(line) for row in text.splitlines()), text


def test_the_text_report_says_unknown_for_memory_it_could_not_read(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).cpus(1, 4).numa_node(0, range(4), 2**20, meminfo=False)
    tree.meminfo(2**20)
    shutil.rmtree(tmp_path / "sys/kernel/mm/hugepages")

    text = format_report(probe_host(tree.fs()))

    assert "node 0 size: unknown" in text
    assert any("Hugepages:" in row and "unknown" in row for row in text.splitlines())


def test_the_text_report_says_ple_is_an_x86_notion_on_other_architectures(
    tmp_path: Path,
) -> None:
    text = format_report(probe_host(arm64_server(tmp_path).fs()))

    assert "PLE belongs to VT-x and AMD-V" in text and "WFE" in text
    assert "KVM module:" in text


@pytest.mark.parametrize(
    "build",
    [intel_two_socket, amd_eight_node, large_host, arm64_server, s390_lpar, power9_host,
     pvm_guest, amd_old_kernel, riscv64_host, loongarch64_host],
)
def test_a_healthy_host_of_any_architecture_raises_no_warning(
    tmp_path: Path, build: Callable[[Path], HostTree]
) -> None:
    # Whole hosts (cpuinfo, KVM, sysfs, meminfo), healthy as a careful operator would call
    # them: what is worth knowing there is an Info with its evidence.
    problems = probe_host(build(tmp_path).fs()).problems

    assert [p.message for p in problems if p.severity != "Info"] == []
