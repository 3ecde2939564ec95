"""audit_node end to end: launchers found in a /proc tree, each one's libvirt asked through its
socket (the test driver standing in), the unreachable reported as such, and the results turned
into the VMsCompliant condition and the text report."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path
from typing import Any

import libvirt
import pytest
from kvtune_agent.audit import AuditPolicy, audit_node, open_read_only, vms_condition
from kvtune_agent.audit.report import format_vm_audit
from kvtune_api.v1alpha1.audit import NodeVmAudit, VmAudit, VmFinding
from kvtune_cli.main import main
from support.hosttree import HostTree

from .builders import GOOD, GOOD_NODE1, HOST, STRICT, Sockets, domain_xml, launcher, libvirt_host


def audit_tree(tree: HostTree, policy: AuditPolicy = STRICT, **options: Any) -> NodeVmAudit:
    """audit_node of the host tree, with the process table read from the tree as a probe would."""
    fs = tree.fs()
    return audit_node(fs, policy, HOST, fs.processes(), **options)


def test_each_launchers_vm_is_read_through_its_own_socket(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    launcher(tree, 4100, "prod", "a", mems="0")
    launcher(tree, 4200, "prod", "b", mems="1")
    connect = Sockets(tree, 4100, 4200)

    with libvirt_host(domain_xml("prod_a", **GOOD), domain_xml("prod_b", **GOOD_NODE1)):
        audit = audit_tree(tree, connect=connect)

    assert sorted(connect.asked) == sorted(connect.uris)
    assert [(vm.name, vm.launcher_pid, vm.domain, vm.state) for vm in audit.items] == [
        ("a", 4100, "prod_a", "Compliant"),
        ("b", 4200, "prod_b", "Compliant"),
    ]


def test_kubevirts_in_pod_bridges_share_a_name_but_not_a_namespace(tmp_path: Path) -> None:
    in_pod = {"nics": [("bridge", "k6t-eth0")]}
    tree = HostTree(tmp_path)
    launcher(tree, 4100, "prod", "a", netns="net:[4026531001]")
    launcher(tree, 4200, "prod", "b", netns="net:[4026531002]")
    xmls = [domain_xml("prod_a", **{**GOOD, **in_pod}),
            domain_xml("prod_b", **{**GOOD_NODE1, **in_pod})]  # fmt: skip

    with libvirt_host(*xmls):
        apart = audit_tree(tree, connect=Sockets(tree, 4100, 4200))
    launcher(tree, 4300, "prod", "c", netns="net:[4026531001]")  # shares a's namespace
    xmls.append(domain_xml("prod_c", **{**GOOD, **in_pod, "pins": ["3"], "vcpus": 1}))
    with libvirt_host(*xmls):
        shared = audit_tree(tree, connect=Sockets(tree, 4100, 4200, 4300))

    assert apart.compliant == 2
    assert {vm.name: vm.state for vm in shared.items} == {
        "a": "Violation", "b": "Compliant", "c": "Violation",
    }  # fmt: skip


def test_a_socket_nobody_answers_on_is_unreachable_with_libvirts_error(short_root: Path) -> None:
    tree = HostTree(short_root)
    launcher(tree, 4100, "prod", "dead", socket=None)
    path = short_root / "run/containerd/rootfs/4100/var/run/libvirt/virtqemud-sock"
    path.parent.mkdir(parents=True)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))  # bound, never listening: connect() is refused

        audit = audit_tree(tree)

    (vm,) = audit.items
    assert (vm.name, vm.state, audit.unreachable, audit.vms) == ("dead", "Unreachable", 1, 1)
    assert vm.error is not None
    assert f"{short_root}/proc/4100/root/var/run/libvirt/virtqemud-sock" in vm.error
    assert "Connection refused" in vm.error
    assert [(f.severity, f.rule) for f in audit.findings] == [("Warning", "Reachable")]


def test_a_libvirt_that_does_not_answer_in_time_is_unreachable(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    launcher(tree, 4100, "prod", "hung")
    release = threading.Event()

    def hang(uri: str) -> Any:
        release.wait(10)
        raise libvirt.libvirtError("released")

    try:
        audit = audit_tree(tree, connect=hang, timeout=0.2)
    finally:
        release.set()

    assert audit.items[0].state == "Unreachable"
    assert "did not answer within 0.2s" in (audit.items[0].error or "")


def test_a_launcher_without_socket_is_unreachable_unless_a_host_uri_has_its_domain(
    tmp_path: Path,
) -> None:
    tree = HostTree(tmp_path)
    launcher(tree, 4100, "prod", "a", socket=None)

    alone = audit_tree(tree)
    with libvirt_host(domain_xml("prod_a", **GOOD), domain_xml("other", vcpus=1)):
        via_host = audit_tree(tree, connect=open_read_only, host_uri="test:///default")

    assert alone.items[0].state == "Unreachable"
    assert "no libvirt socket in its root" in (alone.items[0].error or "")
    assert [(vm.namespace, vm.name, vm.launcher_pid) for vm in via_host.items] == [
        ("", "other", None),  # not KubeVirt's: no namespace, not pinned (a violation here)
        ("prod", "a", 4100),
    ]
    assert via_host.unreachable == 0


def test_a_launchers_libvirt_running_another_domain_is_not_guessed_at(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    launcher(tree, 4100, "prod", "a")

    with libvirt_host(domain_xml("x_1", vcpus=1), domain_xml("x_2", vcpus=1)):
        audit = audit_tree(tree, connect=Sockets(tree, 4100))

    assert audit.items[0].state == "Unreachable"
    assert audit.items[0].error == "no running domain prod_a in its libvirt (running: x_1, x_2)"


def test_an_empty_host_has_nothing_to_audit(tmp_path: Path) -> None:
    audit = audit_tree(HostTree(tmp_path), AuditPolicy())

    assert audit == NodeVmAudit(memory=audit.memory)
    # 16 GiB minus the 8 GiB 2Mi pool and the kubelet's default eviction threshold, 100Mi
    assert audit.memory.capacity_kib == (8 << 20) - 100 * 1024
    assert vms_condition(audit).reason == "NoVMs"


def test_a_process_whose_command_line_is_unreadable_is_a_node_finding(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).unreadable("/proc/5/cmdline").file("/proc/5/comm", "bash")

    audit = audit_tree(tree)

    [finding] = audit.findings
    assert (finding.severity, finding.rule) == ("Warning", "Reachable")
    assert finding.message.startswith("/proc/5/cmdline: cannot read")


def vm(name: str, state: str, *findings: VmFinding, error: str | None = None) -> VmAudit:
    return VmAudit(name=name, namespace="ns", state=state, findings=list(findings), error=error)


PINS = VmFinding(severity="Violation", rule="DedicatedCpus", message="shares CPU 3 with ns/b")
OVER = VmFinding(severity="Violation", rule="Memory", message="overcommitted by 1.0 GiB")


@pytest.mark.parametrize(
    ("audit", "status", "reason", "words"),
    [
        pytest.param(
            NodeVmAudit(vms=2, compliant=2, items=[vm("a", "Compliant"), vm("b", "Compliant")]),
            "True", "Compliant", "all 2 running VMs", id="all compliant",
        ),
        pytest.param(
            NodeVmAudit(vms=2, compliant=1, violations=1,
                        items=[vm("a", "Violation", PINS), vm("b", "Compliant")]),
            "False", "Violations", "1 of 2 VMs do not get the isolation the profile promises: "
            "ns/a (shares CPU 3 with ns/b)", id="a violating VM is named with its first finding",
        ),
        pytest.param(
            NodeVmAudit(vms=1, compliant=1, findings=[OVER], items=[vm("a", "Compliant")]),
            "False", "Violations", "overcommitted by 1.0 GiB", id="node overcommit",
        ),
        pytest.param(
            NodeVmAudit(vms=2, compliant=1, unreachable=1,
                        items=[vm("a", "Unreachable", error="refused"), vm("b", "Compliant")]),
            "Unknown", "Unreachable", "1 of 2 VMs could not be inspected: ns/a (refused)",
            id="unreachable VMs make it unknown",
        ),
    ],
)  # fmt: skip
def test_the_vms_compliant_condition(
    audit: NodeVmAudit, status: str, reason: str, words: str
) -> None:
    condition = vms_condition(audit, generation=7)

    assert (condition.type, condition.status, condition.reason) == ("VMsCompliant", status, reason)
    assert words in condition.message
    assert condition.observed_generation == 7


def test_the_text_report_marks_violations_and_shows_what_each_vm_got(tmp_path: Path) -> None:
    xmls = [domain_xml("p_a", **GOOD), domain_xml("p_b", **{**GOOD, "pins": ["1", "3"]})]
    with libvirt_host(*xmls):
        audit = audit_tree(HostTree(tmp_path), host_uri="test:///default")

    text = format_vm_audit(audit)

    assert text.splitlines()[0] == (
        "VMS (libvirt): 2 running, 0 compliant, 2 with violations, 0 unreachable"
    )
    assert "!!  p/a: Violation" in text
    assert "      cpu: 2 vCPUs on 0-1 (node 0), emulator 2\n" in text
    assert "      memory: 2.0 GiB + 1.3 GiB overhead, from node 0, hugepages 2Mi\n" in text
    assert "!!    VIOLATION DedicatedCpus vCPUs are pinned to host CPUs 1" in text


def test_kvtune_probe_vms_prints_the_audit_after_the_host_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["probe", "--root", str(tmp_path), "--vms"]) == 0

    out = capsys.readouterr().out
    assert "VMS (libvirt): 0 running, 0 compliant, 0 with violations, 0 unreachable" in out
    assert out.index("NUMA") < out.index("VMS (libvirt)")


def test_kvtune_probe_vms_json_holds_both_status_fields(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A fresh test:///default runs the driver's own demo domain, "test".
    argv = ["probe", "--root", str(tmp_path), "--vms", "--json", "--libvirt-uri", "test:///default"]
    assert main(argv) == 0

    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"host", "vms"}
    assert NodeVmAudit.model_validate(out["vms"]).items[0].name == "test"


def test_a_fake_launcher_claiming_a_real_vm_makes_it_a_reported_conflict_not_a_spoof(
    tmp_path: Path,
) -> None:
    tree = HostTree(tmp_path)
    launcher(tree, 300, "prod", "db")  # another pod's process with the real VM's flags
    launcher(tree, 4100, "prod", "db")
    launcher(tree, 4200, "prod", "web")
    connect = Sockets(tree, 300, 4100, 4200)

    with libvirt_host(domain_xml("prod_db", **GOOD), domain_xml("prod_web", **GOOD_NODE1)):
        audit = audit_tree(tree, connect=connect)

    assert connect.asked == sorted(connect.uris)[2:]  # only web's own libvirt (pid 4200)
    states = {vm.name: (vm.state, vm.error) for vm in audit.items}
    assert states["web"] == ("Compliant", None)
    assert states["db"][0] == "Unreachable" and "none is trusted" in (states["db"][1] or "")


def test_what_a_launchers_daemon_says_reaches_status_only_cut_short(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    launcher(tree, 4100, "prod", "a")
    launcher(tree, 4200, "prod", "b")
    long_names = [domain_xml(f"x{i}_{'n' * 60}", vcpus=1) for i in range(30)]

    def babbling(uri: str) -> Any:
        if "/4200/" in uri:
            raise libvirt.libvirtError("y" * 100_000)
        return libvirt.openReadOnly("test:///default")

    with libvirt_host(*long_names):
        audit = audit_tree(tree, connect=babbling)

    errors = {vm.name: vm.error or "" for vm in audit.items}
    assert "and 25 more" in errors["a"] and len(errors["a"]) < 600
    assert errors["b"].endswith("... (cut)") and len(errors["b"]) < 600
