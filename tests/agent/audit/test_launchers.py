"""Finding virt-launcher processes, their libvirt sockets and namespaces in a /proc tree."""

from __future__ import annotations

import os
import stat
import typing as t
from pathlib import Path

import pytest
from kvtune_agent.host import launchers
from support.hosttree import HostTree

from .builders import launcher


def discover(tree: HostTree) -> list[launchers.Launcher]:
    """The launchers among the processes of the tree's /proc."""
    fs = tree.fs()
    return launchers.discover(fs, fs.processes())


def test_a_monitor_and_the_launcher_it_started_are_one_vm_with_its_socket(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).process(1, "systemd")
    launcher(tree, 4100, "prod", "db", netns="net:[4026532777]", mems="1")
    launcher(tree, 4130, "prod", "db", comm="virt-launcher", program="/usr/bin/virt-launcher",
             netns="net:[4026532777]", pod=4100)

    found = discover(tree)

    assert found == [
        launchers.Launcher(
            pid=4100, name="db", namespace="prod", uid="uid-db",
            socket="/proc/4100/root/var/run/libvirt/virtqemud-sock",
            netns="net:[4026532777]", mems_allowed=frozenset({1}),
        )
    ]  # fmt: skip
    assert found[0].domain == "prod_db"


def test_the_older_libvirt_sock_is_found_and_a_missing_socket_is_none(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    launcher(tree, 200, "a", "old", socket="libvirt-sock")
    launcher(tree, 300, "a", "starting", socket=None)

    sockets = {lc.name: lc.socket for lc in discover(tree)}

    assert sockets == {"old": "/proc/200/root/var/run/libvirt/libvirt-sock", "starting": None}


def test_a_wrapped_monitor_and_flags_with_equals_are_recognised(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).process(
        77, "bash", "bash", "/usr/bin/virt-launcher-monitor", "--name=vm1", "--namespace=dev"
    )

    assert [(lc.namespace, lc.name) for lc in discover(tree)] == [("dev", "vm1")]


def test_other_processes_are_ignored_even_when_they_mention_virt_launcher(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).process(10, "grep", "grep", "virt-launcher")
    tree.process(11, "virt-handler", "virt-handler", "--name", "x", "--namespace", "y")

    assert discover(tree) == []


def test_a_launcher_without_name_or_namespace_is_noted_not_guessed(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).process(5, "virt-launcher", "/usr/bin/virt-launcher", "--uid", "u")
    fs = tree.fs()

    assert launchers.discover(fs, fs.processes()) == []
    assert [issue.path for issue in fs.take_issues()] == ["/proc/5/cmdline"]


def test_an_empty_host_has_no_launchers(tmp_path: Path) -> None:
    assert discover(HostTree(tmp_path)) == []


def test_the_session_uri_carries_the_socket_path_under_the_host_root(tmp_path: Path) -> None:
    fs = HostTree(tmp_path / "host root").fs()

    uri = launchers.session_uri(fs, "/proc/9/root/var/run/libvirt/virtqemud-sock")

    assert uri == (
        f"qemu+unix:///session?socket={tmp_path}/host%20root/proc/9/root/var/run/libvirt/"
        "virtqemud-sock"
    )


def _fifo(tree: HostTree, path: str) -> None:
    real = tree.root / path.lstrip("/")
    real.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(real)


@pytest.mark.parametrize("plant", [
    pytest.param(lambda t, p: _fifo(t, p), id="a FIFO"),
    pytest.param(lambda t, p: t.file(p, "not a socket"), id="a regular file"),
    pytest.param(lambda t, p: t.unreadable(p), id="a directory"),
    # Followed by the kernel from the agent's root, this would reach the host's own libvirt.
    pytest.param(lambda t, p: t.link(p, "/var/run/host-libvirt/virtqemud-sock", absolute=True)
                 .link("/var/run/host-libvirt/virtqemud-sock", "/dev/null", absolute=True),
                 id="a link out of its root"),
    pytest.param(lambda t, p: t.link(p, "../../../../../../../../../tmp/sock")
                 .file("/tmp/sock", ""), id="a relative link climbing out"),
])
def test_a_launcher_socket_that_is_no_socket_inside_its_root_is_not_asked(
    tmp_path: Path, plant: t.Callable[[HostTree, str], object]
) -> None:
    tree = HostTree(tmp_path)
    launcher(tree, 700, "evil", "vm", socket=None)
    plant(tree, "/run/containerd/rootfs/700/var/run/libvirt/virtqemud-sock")
    fs = tree.fs()

    found = launchers.discover(fs, fs.processes())

    assert [(lc.name, lc.socket) for lc in found] == [("vm", None)]
    assert [i.path for i in fs.take_issues()] == ["/proc/700/root/var/run/libvirt/virtqemud-sock"]


def test_a_socket_reached_through_a_link_inside_the_root_is_asked_at_its_resolved_path(
    tmp_path: Path,
) -> None:
    tree = HostTree(tmp_path)
    launcher(tree, 800, "prod", "vm", socket=None)
    rootfs = tmp_path / "run/containerd/rootfs/800"
    (rootfs / "run/libvirt").mkdir(parents=True)
    os.mknod(rootfs / "run/libvirt/virtqemud-sock", stat.S_IFSOCK | 0o600)
    (rootfs / "var").mkdir()
    (rootfs / "var/run").symlink_to("/run")  # as in container images: absolute, to its own /run

    assert [lc.socket for lc in discover(tree)] == ["/proc/800/root/run/libvirt/virtqemud-sock"]


@pytest.mark.parametrize("namespace,name", [
    ("prod", "x" * 300), ("Prod", "db"), ("prod", "db\n- error: forged"), ("a" * 64, "db"),
    ("prod", "../db"), ("prod", "db_x"),
])
def test_a_launcher_with_a_name_no_kubernetes_object_can_have_is_noted_not_audited(
    tmp_path: Path, namespace: str, name: str
) -> None:
    tree = HostTree(tmp_path)
    tree.process(9, "virt-launcher", "/usr/bin/virt-launcher", "--name", name,
                 "--namespace", namespace)
    fs = tree.fs()

    assert launchers.discover(fs, fs.processes()) == []
    (issue,) = fs.take_issues()
    assert issue.path == "/proc/9/cmdline" and len(issue.detail) < 300


def test_launchers_of_different_pods_claiming_one_vm_are_a_conflict_neither_trusted(
    tmp_path: Path,
) -> None:
    tree = HostTree(tmp_path)
    launcher(tree, 300, "prod", "db")  # the fake, started first: the lowest pid
    launcher(tree, 4100, "prod", "db")
    launcher(tree, 4130, "prod", "db", comm="virt-launcher", pod=4100)

    (found,) = discover(tree)

    assert found.conflict is not None and "300, 4100, 4130" in found.conflict
