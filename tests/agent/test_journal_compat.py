"""Journals written by earlier agents still revert: the agent's journal outlives its image.

A node keeps its journal across agent upgrades (it lives on the host, see journal.py), so an agent
must restore every entry an earlier one recorded. `fixtures/journal-v1.json` was written by the
agent as of commit e9f7f19 (before the agent was split into feature modules over an engine) by
the cycles of `_converged`, on the host of `_host`: one entry of every kind (sysfs values with
their write protocols, KSM's run and a VF count, regular files, systemd units, boot arguments
and the reboot request) and a disk named by its stable name.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

from kvtune_agent.engine.journal import JOURNAL_PATH, Journal
from kvtune_agent.features.base import NodeMeta
from kvtune_agent.wiring import run_cycle
from kvtune_api.v1alpha1.nodestate import HypervisorNodeStateSpec, HypervisorNodeStateStatus
from support.boottree import bls, bls_options, osrelease
from support.hosttree import HostTree, KernelFS

from .specs import busy_host, busy_spec

FIXTURE = Path(__file__).parent / "fixtures" / "journal-v1.json"
NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
DISK = "/sys/devices/pci0000:00/0000:00:17.0/sdb"
UNITS = ("numad.service", "ksmtuned.service")


def _host(root: Path) -> HostTree:
    """busy_host with PLE off, a LUN with a scheduler to change, and a BLS boot loader."""
    tree = osrelease(bls(busy_host(root)), "6.1.0-18-amd64")
    tree.kvm_module("kvm_intel", ple_gap=0, ple_window=4096)
    tree.disk("sdb", wwid="0x5000c500aaaa0001").file(f"{DISK}/queue/scheduler",
                                                      "[mq-deadline] none")
    return tree


def _spec(*, revert: bool = False) -> HypervisorNodeStateSpec:
    spec = busy_spec(allow_reboot=True, approved=True, revert=revert)
    return HypervisorNodeStateSpec.model_validate({
        **spec.model_dump(by_alias=True, exclude_none=True),
        "host": {**spec.host.model_dump(by_alias=True, exclude_none=True),
                 "cpu": {"ple": "Required"},
                 "storage": {"blockLuns": {"selector": {"byIdPatterns": ["wwn-*"]},
                                           "storageClassName": "raw", "ioScheduler": "none"}}},
    })


def _converged(tree: HostTree, fs: KernelFS) -> HypervisorNodeStateStatus:
    """Two Enforce cycles: the second stages the boot-time hugepages the first fell short of."""
    status = HypervisorNodeStateStatus()
    for minutes in (0, 11):
        status = run_cycle(fs, _spec(), 3, NodeMeta(), status, systemd=tree.systemd(),
                           now=NOW + datetime.timedelta(minutes=minutes), timeout=10).status
    return status


def _values(tree: HostTree, root: Path, paths: list[str]) -> dict[str, str | None]:
    """The host's value of every journaled target: a unit's state, a file's text or None."""
    values: dict[str, str | None] = {}
    for path in paths:
        if not path.startswith("/"):
            values[path] = str(tree.systemd().state(path, timeout=10))
            continue
        real = Path(os.path.realpath(root / path.lstrip("/")))
        values[path] = real.read_text() if real.exists() else None
    return values


def test_the_journal_of_the_agent_before_the_feature_split_reverts(tmp_path: Path) -> None:
    tree = _host(tmp_path)
    fixture = json.loads(FIXTURE.read_text())
    paths = [e["path"] for e in fixture["entries"]]
    before = _values(tree, tmp_path, paths)
    boot_options = bls_options(tree)
    fs = KernelFS(tmp_path, hugepage_limit=18)
    _converged(tree, fs)
    journal = tmp_path / JOURNAL_PATH.lstrip("/")
    # Today's agent writes the same journal (behaviour has not changed), and the host has moved.
    assert json.loads(journal.read_text()) == fixture
    assert _values(tree, tmp_path, paths) != before

    journal.write_text(FIXTURE.read_text())  # the earlier agent's file, as it left it
    status = run_cycle(fs, _spec(revert=True), 3, NodeMeta(), HypervisorNodeStateStatus(),
                       systemd=tree.systemd(), now=NOW + datetime.timedelta(minutes=12),
                       timeout=10).status

    assert [r.result for r in status.results] == ["Applied"] * len(paths)
    assert _values(tree, tmp_path, paths) == before
    assert bls_options(tree) == boot_options
    assert not Journal(tree.fs()).entries() and not journal.exists()


def test_the_fixture_holds_an_entry_of_every_kind_and_both_write_protocols() -> None:
    entries = json.loads(FIXTURE.read_text())["entries"]

    assert {e["kind"] for e in entries} == {"sysfs", "file", "unit", "reboot", "bootargs"}
    paths = {e["path"] for e in entries}
    assert "/sys/kernel/mm/ksm/run" in paths
    assert any(p.endswith("/sriov_numvfs") for p in paths)
    assert any(p.startswith("/dev/disk/by-id/") for p in paths)
    assert set(UNITS) <= paths
