"""The agent in Enforce against this machine's kernel: 2Mi hugepages, KSM, THP, a LUN's I/O
scheduler; then revert.

Each test runs whole agent cycles (probe, plan, apply, probe again) on the real `/` and checks
what the kernel itself then shows; `tunables` requires every value to read back as before.
Hugepage use stays at a few pages (tens of MiB): the machine is shared. A loop device with a
/dev/disk/by-id link stands in for a LUN whose I/O scheduler the agent sets (loops.py).
"""

from __future__ import annotations

import datetime
import mmap
import os
import subprocess
import time
import typing as t
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent.specs import node_spec
from kvtune_agent.engine.journal import Journal
from kvtune_agent.features.base import NodeMeta
from kvtune_agent.host.hostfs import setting
from kvtune_agent.host.systemd import Systemd
from kvtune_agent.wiring import run_cycle
from kvtune_api.v1alpha1.nodestate import HypervisorNodeStateSpec, HypervisorNodeStateStatus
from support.realhost import REALHOST, RecordingFS, guarded_tunables

from .loops import Disk, Host, loops_as_disks

pytestmark = REALHOST

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
POOL = "/sys/devices/system/node/node0/hugepages/hugepages-2048kB"
SYSTEM_POOL = "/sys/kernel/mm/hugepages/hugepages-2048kB"
KSM = "/sys/kernel/mm/ksm"
THP = "/sys/kernel/mm/transparent_hugepage/enabled"
PAGE_2M = 2 << 20


def _read(path: str) -> str:
    return Path(path).read_text().strip()


def _pool(name: str = "nr_hugepages", base: str = POOL) -> int:
    return int(_read(f"{base}/{name}"))


class Agent:
    """Agent cycles on the real host, with a journal of the test's own."""

    def __init__(self, fs: RecordingFS, journal: Path) -> None:
        self.fs = fs
        self.journal = str(journal)
        self.status = HypervisorNodeStateStatus()

    def cycle(self, spec: HypervisorNodeStateSpec) -> HypervisorNodeStateStatus:
        # No systemd runs here: a step that needs it fails, as on such a host.
        self.status = run_cycle(
            self.fs, spec, 1, NodeMeta(), self.status, systemd=Systemd(("systemctl",)),
            now=NOW, timeout=30, journal_path=self.journal).status
        return self.status

    def results(self) -> dict[str, tuple[str, str]]:
        return {r.id: (r.result, r.message) for r in self.status.results}

    def revert(self) -> dict[str, tuple[str, str]]:
        self.cycle(node_spec(revert=True))
        assert Journal(self.fs, self.journal).entries() == [], self.status.results
        return self.results()


@pytest.fixture
def agent(tunables: RecordingFS, tmp_path: Path) -> Agent:
    if not os.path.isdir(POOL):
        pytest.fail(f"{POOL} is missing: the realhost tier needs a kernel with 2Mi hugepages")
    return Agent(tunables, tmp_path / "journal.json")


def _hugepages(count: int, **memory: t.Any) -> HypervisorNodeStateSpec:
    # Only what the test is about: KSM and numad are left alone (their defaults manage them).
    return node_spec(approved=True, memory={
        "ksm": "Unmanaged", "hugepages": {"pages": [{"size": "2Mi", "count": count}]},
        **memory}, numa={"numad": "Unmanaged"})


@pytest.fixture
def hugetlbfs(tmp_path: Path) -> Iterator[Path]:
    """A 2Mi hugetlbfs mount of the test's own, as virt-launcher's memory backing uses."""
    mount = tmp_path / "hugepages"
    mount.mkdir()
    subprocess.run(["mount", "-t", "hugetlbfs", "-o", "pagesize=2M", "none", str(mount)],
                   check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_enforce_grows_a_2mi_pool_and_revert_gives_the_pages_back(agent: Agent) -> None:
    base = _pool()

    status = agent.cycle(_hugepages(base + 8))

    assert agent.results()["hugepages/node0/2Mi"][0] == "Applied", agent.results()
    assert (_pool(), _pool("free_hugepages")) == (base + 8, base + 8)
    assert _pool(base=SYSTEM_POOL) == base + 8  # the system-wide view of the same pages
    assert [s.id for s in status.plan] == []

    reverted = agent.revert()

    assert reverted["revert/hugepages/node0/2Mi"][0] == "Applied", reverted
    assert _pool() == base


def test_a_shrink_frees_pages_and_revert_restores_the_first_original(agent: Agent) -> None:
    base = _pool()
    agent.cycle(_hugepages(base + 8))

    agent.cycle(_hugepages(base + 2))

    assert agent.results()["hugepages/node0/2Mi"][0] == "Applied", agent.results()
    assert (_pool(), _pool("free_hugepages"), _pool("surplus_hugepages")) == (
        base + 2, base + 2, 0)
    agent.revert()
    assert _pool() == base  # the original before kvtune, not the first count it set


def test_a_shrink_into_pages_in_use_keeps_them_as_surplus_until_they_are_freed(
    agent: Agent, hugetlbfs: Path,
) -> None:
    base = _pool()
    agent.cycle(_hugepages(base + 4))
    fd = os.open(hugetlbfs / "vm-memory", os.O_CREAT | os.O_RDWR)
    try:
        os.ftruncate(fd, 3 * PAGE_2M)
        with mmap.mmap(fd, 3 * PAGE_2M) as memory:  # 3 pages reserved, as a VM maps its RAM
            memory[0] = memory[PAGE_2M] = 1  # 2 of them faulted in: in use
            assert (_pool("free_hugepages"), _pool("resv_hugepages", SYSTEM_POOL)) == (
                base + 2, 1)

            status = agent.cycle(_hugepages(base))

            result, message = agent.results()["hugepages/node0/2Mi"]
            assert result == "Partial", agent.results()
            # The kernel keeps the pages in use and the one still reserved, as surplus pages
            # it frees when they are released.
            assert (_pool(), _pool("free_hugepages"), _pool("surplus_hugepages")) == (
                base + 3, 1, 3)
            assert f"holds {base + 3}" in message and "in use" in message
            assert status.host is not None
            assert any(f"3 of the {base + 3} 2Mi hugepages in the pool are surplus" in p.message
                       for p in status.host.problems)
        os.unlink(hugetlbfs / "vm-memory")
    finally:
        os.close(fd)

    assert (_pool(), _pool("surplus_hugepages")) == (base, 0)  # surplus freed with the memory
    agent.revert()


@pytest.fixture
def mergeable() -> Iterator[None]:
    """Identical pages offered to KSM (madvise MADV_MERGEABLE), as QEMU offers guest RAM."""
    pages = 512
    # Private: KSM merges only private anonymous pages and ignores the advice on shared ones.
    private = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
    with mmap.mmap(-1, pages * mmap.PAGESIZE, flags=private) as memory:
        memory.write(b"kvtune-realhost!" * (pages * mmap.PAGESIZE // 16))
        memory.madvise(mmap.MADV_MERGEABLE)
        yield


def _wait_for(check: t.Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        time.sleep(0.1)


def test_ksm_enabled_merges_and_disabled_unmerges_then_stops(
    agent: Agent, mergeable: None, tunables: RecordingFS,
) -> None:
    if _read(f"{KSM}/run") != "0":
        pytest.skip("KSM already runs on this machine; the test starts from KSM stopped")

    agent.cycle(node_spec(memory={"ksm": "Enabled"}, numa={"numad": "Unmanaged"}))

    assert agent.results()["ksm/run"][0] == "Applied", agent.results()
    _wait_for(lambda: int(_read(f"{KSM}/pages_sharing")) > 0, "merging identical pages")
    assert agent.cycle(node_spec(memory={"ksm": "Enabled"}, numa={"numad": "Unmanaged"})).plan == []

    status = agent.cycle(node_spec(memory={"ksm": "Disabled"}, numa={"numad": "Unmanaged"}))

    assert agent.results()["ksm/run"][0] == "Applied", agent.results()
    assert [v for p, v in tunables.writes if p == f"{KSM}/run"][-2:] == ["2", "0"]
    assert (_read(f"{KSM}/run"), _read(f"{KSM}/pages_shared"), _read(f"{KSM}/pages_sharing")) == (
        "0", "0", "0")
    assert status.host is not None and status.host.ksm.state == "Stopped"
    assert status.plan == []
    agent.revert()


@pytest.mark.parametrize("mode", ["always", "madvise", "never"])
def test_a_thp_mode_is_set_and_reverted(agent: Agent, mode: str) -> None:
    original = _read(THP)
    spec = node_spec(memory={"ksm": "Unmanaged", "transparentHugepages": mode},
                     numa={"numad": "Unmanaged"})

    status = agent.cycle(spec)

    assert f"[{mode}]" in _read(THP)
    assert status.plan == []
    assert status.host is not None and status.host.memory.transparent_hugepage == mode
    agent.revert()
    assert _read(THP) == original


@pytest.fixture
def lun(tmp_path: Path) -> Iterator[Disk]:
    """A blank loop device with a /dev/disk/by-id link, as a free LUN is (see loops.py)."""
    (tmp_path / "disks").mkdir()
    disks = Host(tmp_path / "disks")
    try:
        yield disks.disk("lun")
    finally:
        disks.close()


def test_enforce_sets_a_luns_io_scheduler_and_revert_restores_exactly_what_the_kernel_offered(
    lun: Disk, tmp_path: Path,
) -> None:
    path = f"/sys/block/{lun.name}/queue/scheduler"
    before = _read(path)  # e.g. "[none] mq-deadline kyber bfq": what this kernel offers
    current = setting(before)
    want = "mq-deadline" if current != "mq-deadline" else "none"
    assert want in before.replace("[", " ").replace("]", " ").split(), before
    luns = {"selector": {"byIdPatterns": [f"kvtune-realhost-{lun.name}"]},
            "storageClassName": "realhost-luns", "ioScheduler": want}
    spec = node_spec(storage={"blockLuns": luns}, memory={"ksm": "Unmanaged"},
                     numa={"numad": "Unmanaged"})
    with guarded_tunables(extra=(path,)) as fs, loops_as_disks():
        agent = Agent(fs, tmp_path / "journal.json")

        status = agent.cycle(spec)

        assert agent.results()[f"block/{lun.name}/scheduler"][0] == "Applied", agent.results()
        assert fs.writes == [(path, want)]
        assert _read(path) == before.replace(f"[{current}]", current).replace(want, f"[{want}]")
        assert status.plan == [] and agent.cycle(spec).plan == []

        reverted = agent.revert()

        assert reverted[f"revert/block/{lun.name}/scheduler"][0] == "Applied", reverted
        assert _read(path) == before
