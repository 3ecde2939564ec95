"""Finding virt-launcher processes, their libvirt sockets and namespaces in a /proc tree."""

from __future__ import annotations

from pathlib import Path

from hosttree import HostTree
from kvtune_agent import launchers

from .builders import launcher


def discover(tree: HostTree) -> list[launchers.Launcher]:
    """The launchers among the processes of the tree's /proc."""
    fs = tree.fs()
    return launchers.discover(fs, fs.processes())


def test_a_monitor_and_the_launcher_it_started_are_one_vm_with_its_socket(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).process(1, "systemd")
    launcher(tree, 4100, "prod", "db", netns="net:[4026532777]", mems="1")
    launcher(tree, 4130, "prod", "db", comm="virt-launcher", program="/usr/bin/virt-launcher")

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
