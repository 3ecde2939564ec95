"""Crash at every point of boot staging and of the reboot request, then recover by running
again: the host tree is exactly the crash-free one (every file, link and temporary file), and a
revert leaves exactly the tree from before. See support/crashpoints.py for what a point is."""

from __future__ import annotations

import datetime
import typing as t
from pathlib import Path

import pytest
from kvtune_agent.engine.journal import Journal
from kvtune_agent.features.base import NodeMeta
from kvtune_agent.features.memory import boot
from kvtune_agent.host.bootloader import GRUB_DROPIN
from kvtune_agent.host.reboot import REBOOT_PKGS, REBOOT_REQUIRED
from kvtune_agent.wiring import SEQUENCE, run_cycle
from kvtune_api.v1alpha1.nodestate import HypervisorNodeStateStatus
from support.boottree import GRUBBY, apply_boot_args, bls, debian_grub, osrelease
from support.crashpoints import Crash, crashing, picture
from support.hosttree import HostTree, KernelFS

from .specs import busy_host, busy_spec

PER_NODE = "hugepagesz=1G hugepages=0:20,1:20"
NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def _host(root: Path) -> HostTree:
    """What every host has: /var/lib, /var/log, and /run with /var/run an absolute link to it
    (Debian, Ubuntu, Fedora)."""
    for directory in ("var/lib", "var/log", "run"):
        (root / directory).mkdir(parents=True)
    return HostTree(root).link("/var/run", "/run", absolute=True)


def _grubby_host(root: Path) -> HostTree:
    return osrelease(bls(_host(root)), "6.1.0")


def _debian_host(root: Path) -> HostTree:
    return osrelease(debian_grub(_host(root)), "6.1.0")


def _others_asked_too(root: Path) -> HostTree:
    """A BLS host where a package had already asked for a reboot: its flag and line stay."""
    tree = _grubby_host(root)  # written through /run: the tree's /var/run leads out of it
    return tree.file(REBOOT_REQUIRED.replace("/var/run", "/run"), "*** System restart required"
                     " ***").file(REBOOT_PKGS.replace("/var/run", "/run"), "linux-image-6.1.0-19")


HOSTS = [
    pytest.param(_grubby_host, GRUBBY, id="BLS entries through grubby"),
    pytest.param(_debian_host, GRUB_DROPIN, id="Debian's GRUB drop-in and update-grub"),
    pytest.param(_others_asked_too, GRUBBY, id="a reboot another package asked for"),
]


def _stage(tree: HostTree, target: str) -> None:
    result = apply_boot_args(tree, target, PER_NODE)
    assert result.result == "Applied", result.message


def _revert(tree: HostTree, target: str) -> None:
    results = Journal(tree.fs()).revert(tree.systemd(), sequence=SEQUENCE, timeout=10)
    assert {r.result for r in results} <= {"Applied"}, results


def _points(build: t.Callable[[Path], HostTree], target: str, root: Path) -> tuple[
        list[str], list[str]]:
    tree = build(root)
    with crashing(None) as staging:
        _stage(tree, target)
    with crashing(None) as reverting:
        _revert(tree, target)
    return staging.seen, reverting.seen


@pytest.mark.parametrize(("build", "target"), HOSTS)
def test_a_crash_at_any_point_of_staging_recovers_to_the_exact_staged_tree_and_reverts_clean(
    tmp_path: Path, build: t.Callable[[Path], HostTree], target: str,
) -> None:
    clean = build(tmp_path / "clean")
    before = picture(clean.root)
    _stage(clean, target)
    staged = picture(clean.root)
    points, _ = _points(build, target, tmp_path / "count")
    assert len(points) >= 5, points

    for at, where in enumerate(points, 1):
        tree = build(tmp_path / f"crash{at}")
        with pytest.raises(Crash), crashing(at):
            _stage(tree, target)
        _stage(tree, target)  # the next cycle
        assert picture(tree.root) == staged, f"crash {at}: {where}"
        _revert(tree, target)
        assert picture(tree.root) == before, f"crash {at}: {where}, then a revert"
        # The profile left while the node was down: a revert follows the crash directly.
        tree = build(tmp_path / f"left{at}")
        with pytest.raises(Crash), crashing(at):
            _stage(tree, target)
        _revert(tree, target)
        assert picture(tree.root) == before, f"crash {at}: {where}, then only a revert"


@pytest.mark.parametrize(("build", "target"), HOSTS)
def test_a_crash_at_any_point_of_a_revert_recovers_to_the_exact_tree_from_before(
    tmp_path: Path, build: t.Callable[[Path], HostTree], target: str,
) -> None:
    before = picture(build(tmp_path / "clean").root)
    _, points = _points(build, target, tmp_path / "count")
    assert len(points) >= 4, points

    for at, where in enumerate(points, 1):
        tree = build(tmp_path / f"crash{at}")
        _stage(tree, target)
        with pytest.raises(Crash), crashing(at):
            _revert(tree, target)
        _revert(tree, target)  # the next cycle
        assert picture(tree.root) == before, f"crash {at}: {where}"


def test_a_crash_at_any_point_of_a_staging_cycle_is_repaired_by_the_next_cycle(
    tmp_path: Path,
) -> None:
    # The planner, not a replay of the step, must see what a crash left: a drop-in grub.cfg was
    # not generated from, a line staged with no reboot requested.
    spec = busy_spec(allow_reboot=True)

    def host(root: Path) -> tuple[HostTree, KernelFS]:
        tree = osrelease(debian_grub(busy_host(_host(root).root)), "6.1.0-18-amd64")
        return tree, KernelFS(root, hugepage_limit=18)  # 20 wanted per node

    def cycle(tree: HostTree, fs: KernelFS, minutes: int,
              previous: HypervisorNodeStateStatus) -> HypervisorNodeStateStatus:
        return run_cycle(fs, spec, 3, NodeMeta(), previous, systemd=tree.systemd(),
                         now=NOW + datetime.timedelta(minutes=minutes), timeout=10).status

    tree, fs = host(tmp_path / "clean")
    first = cycle(tree, fs, 0, HypervisorNodeStateStatus())
    with crashing(None) as counted:
        second = cycle(tree, fs, 11, first)
    assert boot.STEP_ID in {r.id for r in second.results}
    cycle(tree, fs, 12, second)
    staged = picture(tree.root)
    points = counted.seen
    assert any("update-grub" in p for p in points) and any("reboot-required" in p for p in points)
    assert len(points) >= 7, points

    for at, where in enumerate(points, 1):
        tree, fs = host(tmp_path / f"crash{at}")
        first = cycle(tree, fs, 0, HypervisorNodeStateStatus())
        with pytest.raises(Crash), crashing(at):
            cycle(tree, fs, 11, first)
        repaired = cycle(tree, fs, 12, first)  # the crashed cycle reported nothing
        cycle(tree, fs, 13, repaired)
        assert picture(tree.root) == staged, f"crash {at}: {where}"
