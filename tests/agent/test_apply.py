"""Applying a plan: journal first, kernel write protocols, grants, failures kept to their step."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

from kvtune_agent.engine.apply import apply
from kvtune_agent.engine.journal import JOURNAL_PATH, Journal
from kvtune_agent.features import FEATURES
from kvtune_agent.features.cpu import PLE_CONF
from kvtune_agent.host.hostfs import HostFS
from kvtune_agent.host.reboot import REBOOT_REQUIRED
from kvtune_agent.wiring import SEQUENCE, plan, probe_host
from kvtune_api.v1alpha1.nodestate import DisruptionGrant, HypervisorNodeStateSpec, StepResult
from support.hosttree import HostTree, KernelFS, intel_two_socket

from .specs import busy_host, busy_spec, node_spec

RUN = "/sys/kernel/mm/ksm/run"
THP = "/sys/kernel/mm/transparent_hugepage/enabled"
NUMVFS = "/sys/bus/pci/devices/0000:3b:00.0/sriov_numvfs"
NODE0_1G = "/sys/devices/system/node/node0/hugepages/hugepages-1048576kB/nr_hugepages"
NODE1_1G = "/sys/devices/system/node/node1/hugepages/hugepages-1048576kB/nr_hugepages"
LIVE = DisruptionGrant(allow_drain=True, allow_reboot=True, approved=False)


def _apply(
    tree: HostTree, spec: HypervisorNodeStateSpec, fs: HostFS | None = None,
    grant: DisruptionGrant = LIVE, timeout: float = 5,
) -> dict[str, StepResult]:
    fs = fs or tree.kernel()
    work = plan(spec, probe_host(fs))
    results = apply(FEATURES, work, fs, Journal(fs), tree.systemd(), grant, timeout=timeout)
    assert [r.id for r in results] == [s.planned.id for s in work.steps]
    return {r.id: r for r in results}


def _read(tmp_path: Path, path: str) -> str:
    return (tmp_path / path.lstrip("/")).read_text().strip()


def test_every_step_is_applied_and_its_original_journaled(tmp_path: Path) -> None:
    tree = busy_host(tmp_path)

    results = _apply(tree, busy_spec())

    assert {r.result for r in results.values()} == {"Applied"}, results
    assert (_read(tmp_path, NODE0_1G), _read(tmp_path, NODE1_1G)) == ("20", "20")
    assert _read(tmp_path, RUN) == "0" and _read(tmp_path, THP) == "always [madvise] never"
    assert _read(tmp_path, NUMVFS) == "8"
    host = probe_host(tree.fs())
    assert not host.numad.running and host.numad.unit == "Disabled"
    assert not host.ksm.ksmtuned.running and host.ksm.ksmtuned.unit == "Disabled"
    originals = {(e.path, e.original) for e in Journal(tree.fs()).entries()}
    assert originals == {
        (NODE0_1G, "16"), (NODE1_1G, "16"), ("ksmtuned.service", "enabled,active"),
        (RUN, "1"), ("numad.service", "enabled,active"), (THP, "always"), (NUMVFS, "2"),
    }


def test_ksm_is_unmerged_before_it_is_stopped(tmp_path: Path) -> None:
    tree = busy_host(tmp_path)
    fs = tree.kernel()

    _apply(tree, busy_spec(), fs=fs)

    assert [value for path, value in fs.writes if path == RUN] == ["2", "0"]


def test_a_vf_count_changes_through_zero(tmp_path: Path) -> None:
    tree = busy_host(tmp_path)
    fs = tree.kernel()

    _apply(tree, busy_spec(), fs=fs)

    assert [value for path, value in fs.writes if path == NUMVFS] == ["0", "8"]


def test_a_write_the_kernel_refuses_fails_its_step_only(tmp_path: Path) -> None:
    tree = busy_host(tmp_path)

    results = _apply(tree, busy_spec(), fs=tree.kernel(refuse={THP: errno.EINVAL}))

    assert results["thp"].result == "Failed"
    assert THP in results["thp"].message and "EINVAL" in results["thp"].message
    assert {i for i, r in results.items() if r.result == "Applied"} == set(results) - {"thp"}
    assert _read(tmp_path, THP) == "[always] madvise never"


class _Hanging(KernelFS):
    """A kernel whose driver hangs on one path until `unblock` is set."""

    def __init__(self, root: Path, path: str) -> None:
        super().__init__(root)
        self.hang_on = path
        self.unblock = threading.Event()

    def _store(self, path: str, value: str) -> None:
        if path == self.hang_on:
            self.unblock.wait()
        super()._store(path, value)


def test_a_write_that_hangs_fails_its_step_and_the_others_still_run(tmp_path: Path) -> None:
    tree = busy_host(tmp_path)
    fs = _Hanging(tmp_path, NUMVFS)
    # The deadline bounds every write, not only the hanging one: 3 s is one wait for the test
    # (the hang is never released before it), and room enough for the other writes' threads
    # to run on a loaded machine, where 0.2 s failed them too.
    try:
        results = _apply(tree, busy_spec(), fs=fs, timeout=3)
    finally:
        fs.unblock.set()

    assert results["sriov/ens1f0"].result == "Failed"
    assert "did not return within 3 s" in results["sriov/ens1f0"].message
    assert {i for i, r in results.items() if r.result == "Applied"} == (
        set(results) - {"sriov/ens1f0"})


def test_a_partial_hugepage_allocation_is_reported_and_the_rest_goes_on(tmp_path: Path) -> None:
    tree = busy_host(tmp_path)

    results = _apply(tree, busy_spec(), fs=tree.kernel(hugepage_limit=18))

    assert results["hugepages/node0/1Gi"].result == "Partial"
    assert "asked for 20" in results["hugepages/node0/1Gi"].message
    assert "holds 18" in results["hugepages/node0/1Gi"].message
    assert results["thp"].result == "Applied"


def test_a_vf_change_with_a_vf_in_use_waits_for_approval(tmp_path: Path) -> None:
    tree = busy_host(tmp_path, vf_drivers=["iavf", "vfio-pci"])

    waiting = _apply(tree, busy_spec())

    assert waiting["sriov/ens1f0"].result == "Waiting"
    assert "spec.disruption.approved" in waiting["sriov/ens1f0"].message
    assert _read(tmp_path, NUMVFS) == "2"
    assert NUMVFS not in {e.path for e in Journal(tree.fs()).entries()}

    approved = _apply(tree, busy_spec(), grant=DisruptionGrant(allow_drain=True, approved=True))

    assert approved["sriov/ens1f0"].result == "Applied"
    assert _read(tmp_path, NUMVFS) == "8"


def test_shrinking_hugepages_in_use_waits_for_approval_and_keeps_pages_in_use(
    tmp_path: Path,
) -> None:
    tree = intel_two_socket(tmp_path).systemctl()  # 1Gi: 16 per node, 8 in use
    spec = node_spec(memory={"hugepages": {"pages": [{"size": "1Gi", "count": 4}]}})

    assert {r.result for r in _apply(tree, spec).values()} == {"Waiting"}
    assert _read(tmp_path, NODE0_1G) == "16"

    results = _apply(tree, spec, grant=DisruptionGrant(approved=True))

    # Approved, but the VMs still hold their pages: the kernel keeps them, and says so.
    assert results["hugepages/node0/1Gi"].result == "Partial"
    assert "in use by running VMs" in results["hugepages/node0/1Gi"].message
    assert _read(tmp_path, NODE0_1G) == "8"
    # As a real kernel does: the pages kept beyond the count asked are surplus.
    assert _read(tmp_path, NODE0_1G.replace("nr_", "surplus_")) == "6"


def _ple_off(tmp_path: Path) -> HostTree:
    tree = HostTree(tmp_path).cpuinfo(4, flags="fpu vmx", vmx_flags="ept ple").systemctl()
    return tree.kvm_module("kvm_intel", ple_gap=0, ple_window=4096)


def test_a_reboot_class_change_waits_unless_reboots_are_allowed(tmp_path: Path) -> None:
    tree = _ple_off(tmp_path)
    spec = node_spec(cpu={"ple": "Required"}, allow_reboot=True)

    results = _apply(tree, spec, grant=DisruptionGrant(allow_reboot=False))

    assert results["ple/kvm_intel"].result == "Waiting"
    assert not tree.fs().exists(PLE_CONF) and not tree.fs().exists(REBOOT_REQUIRED)


def test_a_reboot_class_change_is_staged_and_a_reboot_requested_never_made(
    tmp_path: Path,
) -> None:
    tree = _ple_off(tmp_path)
    spec = node_spec(cpu={"ple": "Required"}, allow_reboot=True)

    results = _apply(tree, spec, grant=DisruptionGrant(allow_reboot=True))

    assert results["ple/kvm_intel"].result == "Applied"
    assert (tmp_path / PLE_CONF.lstrip("/")).read_text() == "options kvm_intel ple_gap=128\n"
    assert tree.fs().exists(REBOOT_REQUIRED)
    assert [(e.path, e.original) for e in Journal(tree.fs()).entries()] == [
        (PLE_CONF, None), (REBOOT_REQUIRED, None)]  # revert removes both files
    assert tree.systemctl_calls() == []


def test_nothing_is_changed_when_the_journal_cannot_be_written(tmp_path: Path) -> None:
    tree = busy_host(tmp_path).file("/var/lib/kvtune", "a file where the directory should be")

    results = _apply(tree, busy_spec())

    assert {r.result for r in results.values()} == {"Failed"}
    assert all("could not be recorded in the journal" in r.message for r in results.values())
    assert JOURNAL_PATH.rsplit("/", 1)[0] in results["thp"].message
    assert _read(tmp_path, THP) == "[always] madvise never" and _read(tmp_path, RUN) == "1"
    assert [c for c in tree.systemctl_calls() if not c.startswith("is-")] == []


def _rename_netdev(root: Path, old: str, new: str) -> None:
    """What udev does to an interface at boot: the same NIC under another name."""
    link = root / f"sys/class/net/{old}"
    netdir = link.resolve()
    netdir.rename(netdir.with_name(new))
    link.unlink()
    (root / f"sys/class/net/{new}").symlink_to(
        os.path.relpath(netdir.with_name(new), link.parent))


def test_revert_restores_the_vf_count_of_the_nic_it_changed_after_interfaces_are_renamed(
    tmp_path: Path,
) -> None:
    tree = busy_host(tmp_path).nic("ens1f1", "0000:3b:00.1", total_vfs=64)
    fs = tree.kernel()
    _apply(tree, busy_spec(), fs=fs)
    assert _read(tmp_path, NUMVFS) == "8"
    for old, new in (("ens1f0", "tmp0"), ("ens1f1", "ens1f0"), ("tmp0", "ens1f1")):
        _rename_netdev(tmp_path, old, new)  # a reboot swapped the two ports' names

    Journal(fs).revert(tree.systemd(), sequence=SEQUENCE, timeout=5)

    assert _read(tmp_path, NUMVFS) == "2"  # 0000:3b:00.0, the NIC kvtune changed
    assert _read(tmp_path, "/sys/bus/pci/devices/0000:3b:00.1/sriov_numvfs") == "0"


def test_a_vf_taken_after_the_plan_was_made_keeps_its_count_until_approval(
    tmp_path: Path,
) -> None:
    tree = busy_host(tmp_path)  # two VFs on iavf: the plan finds them free (Live)
    fs = tree.kernel()
    work = plan(busy_spec(), probe_host(fs))
    vf = tmp_path / "sys/devices/pci0000:00/0000:3b:02.1/driver"
    vf.unlink()
    vf.symlink_to("../../../bus/pci/drivers/pci-stub")  # then a DPDK app took one

    [result] = [r for r in apply(FEATURES, work, fs, Journal(fs), tree.systemd(), LIVE, timeout=5)
                if r.id == "sriov/ens1f0"]

    assert result.result == "Waiting"
    assert "0000:3b:02.1 (pci-stub)" in result.message and NUMVFS in result.message
    assert _read(tmp_path, NUMVFS) == "2" and (NUMVFS, "0") not in fs.writes


PKGS = "/var/run/reboot-required.pkgs"


def test_revert_withdraws_the_reboot_request_kvtune_made(tmp_path: Path) -> None:
    tree = _ple_off(tmp_path)
    _apply(tree, node_spec(cpu={"ple": "Required"}, allow_reboot=True))
    assert _read(tmp_path, PKGS) == "kvtune"

    results = Journal(tree.kernel()).revert(tree.systemd(), sequence=SEQUENCE, timeout=5)

    assert [(r.id, r.result) for r in results] == [
        ("revert/reboot-required", "Applied"), ("revert/ple/kvm_intel", "Applied")]
    assert not tree.fs().exists(REBOOT_REQUIRED) and not tree.fs().exists(PKGS)


def test_withdrawing_the_reboot_request_keeps_what_others_asked_for(tmp_path: Path) -> None:
    tree = _ple_off(tmp_path).file(REBOOT_REQUIRED, "*** System restart required ***")
    tree.file(PKGS, "linux-image-6.1.0-28-amd64")
    _apply(tree, node_spec(cpu={"ple": "Required"}, allow_reboot=True))
    assert _read(tmp_path, PKGS) == "linux-image-6.1.0-28-amd64\nkvtune"
    (tmp_path / PKGS.lstrip("/")).write_text("linux-image-6.1.0-28-amd64\nkvtune\nlibc6\n")

    Journal(tree.kernel()).revert(tree.systemd(), sequence=SEQUENCE, timeout=5)

    assert _read(tmp_path, PKGS) == "linux-image-6.1.0-28-amd64\nlibc6"
    assert _read(tmp_path, REBOOT_REQUIRED) == "*** System restart required ***"


def test_a_shrink_keeps_the_pages_in_use_and_reserved_as_surplus_as_a_real_kernel_does(
    tmp_path: Path,
) -> None:
    # What tests/realhost saw: 4 pages, 3 mapped (1 of them only reserved), 2 faulted in.
    pool = "/sys/devices/system/node/node0/hugepages/hugepages-2048kB"
    tree = HostTree(tmp_path).hugepages(2048, 4, 2, reserved=1)
    tree.numa_node(0, [0], 2**20, hugepages={2048: (4, 2)})

    written = tree.kernel().write(f"{pool}/nr_hugepages", "0", timeout=5)

    assert written.outcome == "Partial" and written.read_back == "3"
    assert [_read(tmp_path, f"{pool}/{name}_hugepages") for name in ("nr", "free", "surplus")] == [
        "3", "1", "3"]
    system = "/sys/kernel/mm/hugepages/hugepages-2048kB"
    assert [_read(tmp_path, f"{system}/{name}_hugepages") for name in ("nr", "surplus")] == [
        "3", "3"]


def test_a_reboot_request_set_by_someone_else_after_a_reboot_survives_the_revert(
    tmp_path: Path,
) -> None:
    tree = _ple_off(tmp_path)
    _apply(tree, node_spec(cpu={"ple": "Required"}, allow_reboot=True))
    # The node rebooted (/var/run is a tmpfs, so kvtune's request is gone), then a tool that
    # lists no package asked for another reboot.
    (tmp_path / PKGS.lstrip("/")).unlink()
    (tmp_path / REBOOT_REQUIRED.lstrip("/")).write_text("*** System restart required ***\n")

    Journal(tree.kernel()).revert(tree.systemd(), sequence=SEQUENCE, timeout=5)

    assert _read(tmp_path, REBOOT_REQUIRED) == "*** System restart required ***"
    assert not tree.fs().exists(PKGS)
