"""Hostile files: whatever stands where a host file is expected (a FIFO, a device, a file of
hundreds of MiB, a YAML bomb, links that loop or lead out of the root), every reader gets a
bounded answer: a regular file (or the kernel file kind expected), size-capped, under a deadline,
its links resolved inside the host root, YAML aliases bounded (HostFS). Each test would hang,
exhaust memory or read the wrong file without it; the timeouts make a hang a failure."""

from __future__ import annotations

import os
import stat
import typing as t
from pathlib import Path

import pytest
from kvtune_agent.engine.change import set_value
from kvtune_agent.engine.journal import Journal, JournalError
from kvtune_agent.features.kubelet import probe as kubelet
from kvtune_agent.host import launchers
from kvtune_agent.host.hostfs import MAX_CONFIG, HostFS
from kvtune_agent.host.reboot import REBOOT_PKGS, REBOOT_REQUIRED, REBOOT_REQUIRED_TEXT
from kvtune_agent.wiring import probe_host
from support.hosttree import HostTree

CONFIG = "/var/lib/kubelet/config.yaml"
JOURNAL = "/var/lib/kvtune/journal.json"
LAUNCHER_STATUS = "/proc/4100/status"
KSM_RUN = "/sys/kernel/mm/ksm/run"


def _fifo(tree: HostTree, path: str) -> None:
    real = tree.root / path.lstrip("/")
    real.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(real)


def _zero(tree: HostTree, path: str) -> None:
    """A character device that never ends, as /dev/zero (1:5)."""
    real = tree.root / path.lstrip("/")
    real.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mknod(real, stat.S_IFCHR | 0o644, os.makedev(1, 5))
    except PermissionError:
        pytest.skip("creating a device node needs CAP_MKNOD")


def _huge(tree: HostTree, path: str) -> None:
    """A sparse file of 400 MiB: costs no disk, and all of it would be read."""
    real = tree.root / path.lstrip("/")
    real.parent.mkdir(parents=True, exist_ok=True)
    with open(real, "wb") as f:
        f.truncate(400 * 2**20)


MAKERS = [pytest.param(_fifo, id="a FIFO"), pytest.param(_zero, id="a character device"),
          pytest.param(_huge, id="a 400 MiB file")]


def _meminfo(tree: HostTree) -> str | None:
    assert probe_host(tree.fs()).memory.total_kib is None
    return "/proc/meminfo"


def _kubelet_config(tree: HostTree) -> str | None:
    fs = tree.fs()
    return kubelet.probe(fs, fs.processes()).error


def _journal(tree: HostTree) -> str | None:
    with pytest.raises(JournalError) as raised:
        Journal(tree.fs()).entries()
    return str(raised.value)


def _launcher(tree: HostTree) -> str | None:
    tree.process(4100, "virt-launcher", "virt-launcher", "--name", "a", "--namespace", "prod")
    fs = tree.fs()
    [found] = launchers.discover(fs, fs.processes())
    assert found.mems_allowed is None
    [issue] = [i for i in fs.take_issues() if i.path == LAUNCHER_STATUS]
    return issue.detail


def _before_write(tree: HostTree) -> str | None:
    value, why = tree.fs().read_within(KSM_RUN, timeout=2)
    assert value is None
    return why


READERS = [
    pytest.param("/proc/meminfo", _meminfo, id="meminfo"),
    pytest.param(KSM_RUN, _before_write, id="a kernel value read before its write"),
    pytest.param(CONFIG, _kubelet_config, id="the kubelet's config"),
    pytest.param(JOURNAL, _journal, id="the journal"),
    pytest.param(LAUNCHER_STATUS, _launcher, id="a virt-launcher's status"),
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("path", "reader"), READERS)
@pytest.mark.parametrize("make", MAKERS)
def test_a_file_that_is_no_regular_file_or_too_large_is_unreadable_not_a_hang(
    tmp_path: Path, make: t.Callable[[HostTree, str], None], path: str,
    reader: t.Callable[[HostTree], str | None],
) -> None:
    tree = HostTree(tmp_path)
    make(tree, path)

    message = reader(tree)

    assert message is not None
    assert "not a regular file" in message or "more than" in message or message == path


def test_a_kernel_file_read_through_a_link_to_a_device_is_refused(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    _zero(tree, "/dev/zero")
    tree.link("/proc/meminfo", "/dev/zero")
    fs = tree.fs()

    assert fs.read_text("/proc/meminfo") is None
    [issue] = fs.take_issues()
    assert issue.detail == "cannot read: it is a character device, not a regular file"


def test_a_config_just_under_the_cap_is_read_and_just_over_is_not(tmp_path: Path) -> None:
    fs = HostTree(tmp_path).file("/etc/a", "x" * (MAX_CONFIG - 1)).file(
        "/etc/b", "x" * MAX_CONFIG).fs()  # HostTree adds a newline

    assert fs.read_file("/etc/a") == "x" * (MAX_CONFIG - 1) + "\n"
    assert fs.read_file("/etc/b") is None
    [issue] = fs.take_issues()
    assert issue.detail == (f"cannot read: it holds more than {MAX_CONFIG} bytes, more than such "
                            "a file ever does")


def _bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels):
        lines.append(f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * 9)}]")
    return "\n".join(lines) + f"\nkind: KubeletConfiguration\nreservedMemory: [*a{levels - 1}]\n"


@pytest.mark.timeout(30)
def test_a_yaml_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).kubelet_config(_bomb())

    error = _kubelet_config(tree)

    assert error == (f"{CONFIG} expands to more than 100000 YAML nodes through its aliases (a "
                     "YAML bomb?); it is not read")


def test_yaml_aliases_a_real_config_uses_are_read(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).kubelet_config(
        "kind: KubeletConfiguration\nsystemReserved: &r {memory: 1Gi}\nkubeReserved: *r\n")
    fs = tree.fs()

    found = kubelet.probe(fs, fs.processes())

    assert (found.system_reserved_memory, found.kube_reserved_memory) == ("1Gi", "1Gi")


@pytest.mark.timeout(30)
def test_links_that_loop_in_the_config_dir_are_not_walked_and_each_file_is_read_once(
    tmp_path: Path,
) -> None:
    tree = HostTree(tmp_path).file("/etc/kubelet.d/10-a.conf", "cpuManagerPolicy: static")
    tree.file("/etc/kubelet.d/sub/20-b.conf", "topologyManagerPolicy: restricted")
    tree.link("/etc/kubelet.d/loop", "/etc/kubelet.d")
    tree.link("/etc/kubelet.d/sub/up", "/etc/kubelet.d", absolute=True)
    tree.process(4242, "kubelet", "/usr/bin/kubelet", "--config-dir=/etc/kubelet.d")
    fs = tree.fs()

    found = kubelet.probe(fs, fs.processes())

    assert found.drop_in_paths == ["/etc/kubelet.d/10-a.conf", "/etc/kubelet.d/sub/20-b.conf"]
    assert (found.cpu_manager_policy, found.topology_manager_policy) == ("static", "restricted")


# -- every path resolves inside the host root ---------------------------------------------------


def test_the_reboot_request_lands_in_the_hosts_run_through_var_run(tmp_path: Path) -> None:
    # Debian and Ubuntu: /var/run -> /run, an absolute link the kernel would follow out of the
    # root (into the agent's own, read-only, /run).
    tree = HostTree(tmp_path).link("/var/run", "/run", absolute=True)
    (tmp_path / "run").mkdir()
    real = Path("/run/reboot-required")
    existed = real.exists()
    try:
        outcome = set_value(tree.fs(), tree.systemd(), "reboot", REBOOT_REQUIRED,
                            REBOOT_REQUIRED_TEXT, timeout=5)
        assert outcome.result == "Applied", outcome.message
        assert (tmp_path / "run/reboot-required").read_text() == REBOOT_REQUIRED_TEXT
        assert (tmp_path / "run/reboot-required.pkgs").read_text() == "kvtune\n"
        assert real.exists() == existed
        outcome = set_value(tree.fs(), tree.systemd(), "reboot", REBOOT_REQUIRED, None,
                            timeout=5)
        assert outcome.result == "Applied"
        assert sorted(p.name for p in (tmp_path / "run").iterdir()) == []
    finally:
        if not existed and real.exists():  # the defect wrote the machine's own /run
            real.unlink()
            Path(REBOOT_PKGS).unlink(missing_ok=True)


def test_the_kubelets_config_and_config_dir_resolve_their_links_inside_the_root(
    tmp_path: Path,
) -> None:
    tree = HostTree(tmp_path).file("/srv/kube/config.yaml", "cpuManagerPolicy: static")
    tree.file("/srv/kube/conf.d/10.conf", "topologyManagerPolicy: restricted")
    tree.link("/etc/kubernetes", "/srv/kube", absolute=True)
    tree.process(4242, "kubelet", "/usr/bin/kubelet", "--config=/etc/kubernetes/config.yaml",
                 "--config-dir=/etc/kubernetes/conf.d")
    fs = tree.fs()

    found = kubelet.probe(fs, fs.processes())

    assert found.error is None
    assert (found.cpu_manager_policy, found.topology_manager_policy) == ("static", "restricted")
    assert found.drop_in_paths == ["/etc/kubernetes/conf.d/10.conf"]


def test_the_kubelets_files_are_read_in_its_own_root_not_the_agents(tmp_path: Path) -> None:
    # `kvtune probe` with root / in a hostPID pod: / is the agent's container, and the kubelet's
    # --config names a file of the host, which the kubelet's /proc/<pid>/root reaches.
    tree = HostTree(tmp_path).kubelet_config("cpuManagerPolicy: none")  # the container's own
    tree.kubelet_config("cpuManagerPolicy: static", f"/proc/4242/root{CONFIG}")
    tree.link("/proc/4242/root/etc/kubelet.d", "/var/lib/kubelet/drop-ins", absolute=True)
    tree.file("/proc/4242/root/var/lib/kubelet/drop-ins/10.conf", "memoryManagerPolicy: Static")
    tree.process(4242, "kubelet", "/usr/bin/kubelet", f"--config={CONFIG}",
                 "--config-dir=/etc/kubelet.d")
    fs = tree.fs()

    found = kubelet.probe(fs, fs.processes())

    assert (found.config_path, found.cpu_manager_policy) == (CONFIG, "static")
    assert (found.drop_in_paths, found.memory_manager_policy) == (
        ["/etc/kubelet.d/10.conf"], "Static")


def test_a_link_out_of_the_root_reads_the_hosts_file_not_this_machines(tmp_path: Path) -> None:
    # /etc/hostname exists on this machine; in the tree the link names the tree's own.
    tree = HostTree(tmp_path).file("/srv/hostname", "in-the-tree")
    tree.link("/etc/kvtune-test", "/srv/hostname", absolute=True)
    tree.link("/etc/escape", "../../../../../../../../etc/hostname")

    fs: HostFS = tree.fs()

    assert fs.read_file("/etc/kvtune-test") == "in-the-tree\n"
    assert fs.read_file("/etc/escape") is None  # .. stops at the root: the tree has none
