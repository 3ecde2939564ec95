"""Hostile processes: any pod can start a process named kubelet, k3s or virt-launcher, with any
flags. The node's kubelet is the one outside pods' cgroups, and only if it is the only one; what
its files hold never reaches status; every value it gives is checked before the memory budget
uses it, and one that cannot be used makes the budget unknown (no pool grows), never larger."""

from __future__ import annotations

import socket
import threading
import time
import typing as t
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from kvtune_agent.audit import AuditPolicy, audit_node, connect
from kvtune_agent.features import memory_budget
from kvtune_agent.features.kubelet import probe as kubelet
from kvtune_agent.host.hostfs import ProcessTable, ReadIssue
from kvtune_agent.wiring import plan, probe_host
from kvtune_api.v1alpha1.audit import MAX_VMS, NodeVmAudit
from kvtune_api.v1alpha1.host import KubeletReport
from support.hosttree import HostTree, intel_two_socket

from .audit.builders import launcher, two_node_host
from .specs import node_spec

V2_POD = "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri.scope"
V1_POD = "11:memory:/kubepods/burstable/pod0c0ffee/0123abcd\n1:cpu:/kubepods/burstable/pod0c0ffee"
SYSTEM = "0::/system.slice/kubelet.service"


def _probe(tree: HostTree) -> KubeletReport:
    fs = tree.fs()
    return kubelet.probe(fs, fs.processes())


@pytest.mark.parametrize("cgroup", [
    pytest.param(V2_POD, id="in a pod, cgroup v2"),
    pytest.param(V1_POD, id="in a pod, cgroup v1"),
    # Outside pods: the one in the kubelet's unit is the node's, not "two kubelets, unknown".
    pytest.param("0::/machine.slice/systemd-nspawn@evil.service/payload", id="systemd-nspawn"),
    pytest.param("0::/system.slice/docker-0123abcd.scope", id="a docker --pid=host container"),
    pytest.param("0::/user.slice/user-1000.slice/session-4.scope", id="a login session"),
    pytest.param("12:memory:/docker/0123abcd\n0::/system.slice/kubelet.service.d",
                 id="a unit that only looks like it"),
])
def test_a_fake_kubelet_is_not_the_nodes_kubelet_even_with_the_lowest_pid(
    tmp_path: Path, cgroup: str,
) -> None:
    tree = HostTree(tmp_path).process(10, "kubelet", "kubelet", "--system-reserved=memory=0")
    tree.file("/proc/10/cgroup", cgroup)
    tree.process(500, "kubelet", "/usr/bin/kubelet", "--system-reserved=memory=8Gi")
    tree.file("/proc/500/cgroup", SYSTEM)

    found = _probe(tree)

    assert (found.pid, found.system_reserved_memory, found.error) == (500, "8Gi", None)


def test_a_kubelet_whose_cgroup_cannot_be_read_is_not_trusted(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).process(10, "kubelet", "kubelet", "--config=/dev/zero")
    tree.unreadable("/proc/10/cgroup")

    assert _probe(tree).pid is None


def test_a_fake_k3s_in_a_pod_cannot_make_the_agent_read_files_for_it(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).file("/etc/shadow", "root:$6$s3cr3t-hash:19000:0:99999:7:::")
    tree.process(12, "k3s-server", "/usr/local/bin/k3s", "server", "-c", "/etc/shadow")
    tree.file("/proc/12/cgroup", V2_POD)

    found = _probe(tree)

    assert (found.pid, found.error, found.flag_files) == (None, None, [])


def test_what_a_broken_config_holds_never_reaches_the_report(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).file("/etc/rancher/k3s/config.yaml",
                                   "token: [K10-s3cr3t-token\nkubelet-arg: x")
    tree.process(12, "k3s-server", "/usr/local/bin/k3s", "server")

    found = _probe(tree)

    assert found.error is not None and found.error.startswith(
        "/etc/rancher/k3s/config.yaml is invalid YAML at line ")
    assert "s3cr3t" not in found.model_dump_json()


def test_a_value_of_the_wrong_type_is_named_not_quoted(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).kubelet_config(
        "cpuManagerPolicy: {leaked: s3cr3t}\nreservedMemory: [{s3cr3t: 1}]\n")
    fs = tree.fs()

    kubelet.probe(fs, fs.processes())

    details = [issue.detail for issue in fs.take_issues()]
    assert details == ["cpuManagerPolicy should be a string, found a dict",
                       "reservedMemory entry 0 lacks numaNode or limits"]


def test_two_kubelets_outside_pods_make_the_kubelet_unknown_and_the_budget_with_it(
    tmp_path: Path,
) -> None:
    tree = HostTree(tmp_path).process(10, "kubelet", "kubelet", "--system-reserved=memory=0")
    tree.process(500, "kubelet", "/usr/bin/kubelet", "--system-reserved=memory=8Gi")

    found = _probe(tree)

    assert found.error is not None and "processes 10, 500 outside pods" in found.error
    with pytest.raises(memory_budget.BudgetUnknown):
        memory_budget.kubelet_reservation(found, 2**30)


def test_processes_that_cannot_be_listed_make_the_kubelet_unknown(tmp_path: Path) -> None:
    # A kubelet config on disk says nothing about what the running kubelet reserves.
    fs = HostTree(tmp_path).kubelet_config("kind: KubeletConfiguration").fs()
    table = ProcessTable((), (ReadIssue("/proc", "cannot read: Permission denied", True),))

    found = kubelet.probe(fs, table)

    assert found.error is not None and "(/proc) cannot be read" in found.error
    with pytest.raises(memory_budget.BudgetUnknown):
        memory_budget.kubelet_reservation(found, 2**30)


# -- every value is hostile: the budget is unknown, never larger --------------------------------


@pytest.mark.parametrize("flag", [
    pytest.param("--eviction-hard=memory.available<inf%", id="an infinite percentage"),
    pytest.param("--eviction-hard=memory.available<nan%", id="a percentage that is no number"),
    pytest.param("--eviction-hard=memory.available<-50%", id="a negative percentage"),
    pytest.param("--eviction-hard=memory.available<150%", id="more than 100%"),
    pytest.param("--system-reserved=memory=-100Gi", id="a negative system reserve"),
    pytest.param("--kube-reserved=memory=-1", id="a negative kube reserve"),
    pytest.param("--eviction-hard=memory.available<-1Gi", id="a negative threshold"),
    pytest.param("--reserved-memory=0:memory=-64Gi", id="a negative reservedMemory"),
])
def test_a_hostile_kubelet_value_makes_the_budget_unknown_and_grows_no_pool(
    tmp_path: Path, flag: str,
) -> None:
    tree = intel_two_socket(tmp_path).process(500, "kubelet", "/usr/bin/kubelet", flag)
    spec = node_spec(memory={"hugepages": {"pages": [{"size": "1Gi", "count": 40}]}})

    found = plan(spec, probe_host(tree.fs()))

    assert "HugepageBudgetUnknown" in [f.reason for f in found.findings]
    assert [s for s in found.steps if s.planned.feature == "Hugepages"
            and int(s.planned.desired) > int(s.planned.current)] == []


@pytest.mark.parametrize(("reserved", "kib"), [
    pytest.param({"system_reserved_memory": "1Gi"}, 2**20 + 102400, id="a reserve"),
    pytest.param({"eviction_hard_memory": "10%"}, 104858, id="a percentage, rounded up"),
    pytest.param({"eviction_hard_memory": "0%"}, 0, id="zero percent"),
])
def test_sound_kubelet_values_still_make_a_budget(reserved: dict[str, t.Any], kib: int) -> None:
    found = memory_budget.kubelet_reservation(KubeletReport(pid=1, **reserved), 2**20)

    assert found.host_wide_kib == kib


def test_a_memtotal_of_zero_makes_the_budget_unknown_not_a_division_by_zero(
    tmp_path: Path,
) -> None:
    tree = intel_two_socket(tmp_path).meminfo(0)
    spec = node_spec(memory={"hugepages": {"pages": [{"size": "1Gi", "count": 40}]}})

    found = plan(spec, probe_host(tree.fs()))

    assert "HugepageBudgetUnknown" in [f.reason for f in found.findings]


def test_two_kubelets_in_kubelet_units_are_still_unknown(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).process(10, "kubelet", "kubelet", "--system-reserved=memory=0")
    tree.file("/proc/10/cgroup", "0::/system.slice/k3s-agent.service")
    tree.process(500, "kubelet", "/usr/bin/kubelet", "--system-reserved=memory=8Gi")
    tree.file("/proc/500/cgroup", SYSTEM)

    assert _probe(tree).error is not None


@contextmanager
def hanging_launchers(root: Path, count: int) -> Iterator[HostTree]:
    """`count` pods posing as virt-launchers, each with a real socket in its root that accepts
    connections (the listen backlog does) and never answers; closed at the end, which ends the
    libvirt calls left waiting on them: their threads must end then (and free their slots for
    the next test)."""
    tree = HostTree(root)
    threads = threading.active_count()
    with ExitStack() as stack:
        for index in range(count):
            pid = 4100 + index
            launcher(tree, pid, "evil", f"vm-{index}", socket=None)
            path = root / f"run/containerd/rootfs/{pid}/var/run/libvirt/virtqemud-sock"
            path.parent.mkdir(parents=True)
            server = stack.enter_context(socket.socket(socket.AF_UNIX))
            server.bind(str(path))
            server.listen(4)
        yield tree
    ends = time.monotonic() + 10
    while threading.active_count() > threads and time.monotonic() < ends:
        time.sleep(0.05)
    assert threading.active_count() <= threads, "libvirt calls outlived their daemons"


def _audit(tree: HostTree, **options: t.Any) -> tuple[NodeVmAudit, float]:
    fs = tree.fs()
    started = time.monotonic()
    found = audit_node(fs, AuditPolicy(), two_node_host(), fs.processes(), **options)
    return found, time.monotonic() - started


def test_fake_launchers_that_never_answer_are_asked_together_not_one_timeout_each(
    short_root: Path,
) -> None:
    with hanging_launchers(short_root, 20) as tree:
        found, took = _audit(tree, timeout=0.5)

    # One after the other (as before) this took 20 x 0.5 s; 8 at once, 3 rounds.
    assert took < 4.0, took
    assert (found.vms, found.unreachable) == (20, 20)
    assert all((vm.error or "").endswith("did not answer within 0.5s") for vm in found.items)


def test_hundreds_of_fake_launchers_bound_the_audits_time_threads_and_status(
    short_root: Path,
) -> None:
    threads = threading.active_count()
    with hanging_launchers(short_root, 300) as tree:
        found, took = _audit(tree, timeout=0.5, budget=1.5)
        left_behind = threading.active_count() - threads

    assert took < 4.0, took  # the budget, and one daemon's timeout past it at most
    assert left_behind <= connect.MAX_LEFT_BEHIND
    assert (found.vms, found.unreachable, len(found.items)) == (300, 300, MAX_VMS)
    assert found.truncated
    assert len(found.model_dump_json()) < 64 * 1024
    errors = " ".join(vm.error or "" for vm in found.items)
    assert "was not asked" in errors and "did not answer within 0.5s" in errors


def test_libvirt_calls_left_behind_are_capped_across_audits(
    short_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connect, "MAX_LEFT_BEHIND", 2)
    monkeypatch.setattr(connect, "_LEFT_BEHIND", threading.BoundedSemaphore(2))
    threads = threading.active_count()
    with hanging_launchers(short_root, 4) as tree:
        first, _ = _audit(tree, timeout=0.3)
        second, _ = _audit(tree, timeout=0.3)
        left_behind = threading.active_count() - threads

    assert left_behind <= 2
    assert sum("did not answer" in (vm.error or "") for vm in first.items) == 2
    assert all("2 libvirt calls (of this audit or earlier ones) have still not returned"
               in (vm.error or "") for vm in second.items)
