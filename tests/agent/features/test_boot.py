"""Boot-time hugepages: planned from what the live path could not allocate, staged through the
host's own boot loader tools (grubby, a GRUB drop-in and update-grub), reported elsewhere."""

from __future__ import annotations

import dataclasses
import datetime
import os
import sys
import typing as t
from pathlib import Path

import pytest
from kvtune_agent.engine import change
from kvtune_agent.engine.journal import Journal
from kvtune_agent.features.base import NodeMeta, Plan
from kvtune_agent.features.memory import boot
from kvtune_agent.host import bootloader
from kvtune_agent.host.bootloader import (
    GRUB_DROPIN,
    BootArgsError,
    BootFacts,
    Loader,
    find_loader,
    read_args,
    read_facts,
    write_args,
)
from kvtune_agent.host.hostfs import HostCommandError
from kvtune_agent.host.reboot import REBOOT_REQUIRED
from kvtune_agent.wiring import SEQUENCE, probe_host, run_cycle
from kvtune_api import conditions as cond
from kvtune_api.v1alpha1.nodestate import (
    HugepageRetry,
    HypervisorNodeStateSpec,
    HypervisorNodeStateStatus,
)
from kvtune_api.v1alpha1.profile import VmiSettings
from support.boottree import (
    GRUB_CFG,
    GRUBBY,
    UPDATE_GRUB,
    apply_boot_args,
    bls,
    bls_options,
    boot_commands,
    debian_grub,
    failing_grubby,
    grubby_failing_updates,
    osrelease,
)
from support.hosttree import HostTree, KernelFS, intel_two_socket

from ..specs import busy_host, busy_spec, node_spec

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
GRUBBY_LOADER = Loader("grubby", GRUBBY)
PER_NODE = "hugepagesz=1G hugepages=0:20,1:20"


def _retry(node: int = 0, size: str = "1Gi") -> HugepageRetry:
    return HugepageRetry(
        step=f"hugepages/node{node}/{size}", path="/sys/...", node=node, size=size, wanted=20,
        allocated=18, attempts=1, last_attempt=NOW, next_attempt=NOW)


def _stage(
    tmp_path: Path, facts: BootFacts, *, retries: t.Sequence[HugepageRetry] = (_retry(),),
    pages: t.Sequence[dict[str, t.Any]] = ({"size": "1Gi", "count": 40},),
    allow_reboot: bool = True, vmi: dict[str, t.Any] | None = None, **host: t.Any,
) -> Plan:
    spec = node_spec(memory={"hugepages": {"pages": list(pages)}}, allow_reboot=allow_reboot,
                     **host)
    if vmi:
        spec.vmi = VmiSettings.model_validate(vmi)
    return boot.stage(Plan(), spec, probe_host(intel_two_socket(tmp_path).fs()), retries, facts)


# -- planning -------------------------------------------------------------------------------


@pytest.mark.parametrize(("release", "args"), [
    pytest.param("6.1.0-18-amd64", PER_NODE, id="a kernel with the node format: per-node counts"),
    pytest.param("5.16.0", PER_NODE, id="the first kernel with the node format"),
    pytest.param("5.15.0-91-generic", "hugepagesz=1G hugepages=40",
                 id="an older kernel: one total, spread evenly"),
    pytest.param(None, "hugepagesz=1G hugepages=40", id="an unknown kernel: one total"),
])
def test_pages_the_kernel_could_not_allocate_are_staged_for_the_next_boot(
    tmp_path: Path, release: str | None, args: str,
) -> None:
    found = _stage(tmp_path, BootFacts(GRUBBY_LOADER, "", release=release))

    [step] = found.steps
    assert (step.kind, step.planned.id, step.planned.path) == ("bootargs", boot.STEP_ID, GRUBBY)
    assert (step.planned.current, step.planned.desired) == ("", args)
    assert step.planned.disruption == "NeedsReboot"
    assert step.planned.feature == "Hugepages"


def test_the_vmis_page_size_becomes_the_default_size(tmp_path: Path) -> None:
    found = _stage(tmp_path, BootFacts(GRUBBY_LOADER, "", release="6.1.0"),
                   vmi={"namespaceSelector": {}, "hugepageSize": "1Gi"})

    [step] = found.steps
    assert step.planned.desired == f"default_hugepagesz=1G {PER_NODE}"


def test_without_a_shortfall_nothing_goes_on_the_command_line(tmp_path: Path) -> None:
    assert _stage(tmp_path, BootFacts(GRUBBY_LOADER, "", release="6.1.0"), retries=()) == Plan()


def test_a_staged_size_keeps_following_the_spec_after_the_pools_are_full(tmp_path: Path) -> None:
    staged = "hugepagesz=1G hugepages=0:16,1:16"
    facts = BootFacts(GRUBBY_LOADER, staged, running=staged, release="6.1.0")

    [step] = _stage(tmp_path, facts, retries=()).steps

    assert (step.planned.current, step.planned.desired) == (staged, PER_NODE)


@pytest.mark.parametrize("retries", [pytest.param((), id="a staged pair to follow"),
                                     pytest.param((_retry(),), id="a live shortfall")])
def test_a_count_is_not_staged_while_a_node_s_cpus_are_unknown(
    tmp_path: Path, retries: t.Sequence[HugepageRetry]
) -> None:
    tree = intel_two_socket(tmp_path).file("/sys/devices/system/node/node1/cpulist", "4-\n")
    staged = "hugepagesz=1G hugepages=0:16,1:16"
    spec = node_spec(memory={"hugepages": {"pages": [{"size": "1Gi", "count": 40}]}})

    found = boot.stage(Plan(), spec, probe_host(tree.fs()), retries,
                       BootFacts(GRUBBY_LOADER, staged, running=staged, release="6.1.0"))

    # The planner says why (NumaNodeCpusUnknown); node 1's share is not moved at boot either.
    assert found == Plan()


def test_other_page_sizes_on_the_command_line_are_kept(tmp_path: Path) -> None:
    facts = BootFacts(GRUBBY_LOADER, "hugepagesz=2M hugepages=512", release="6.1.0")

    [step] = _stage(tmp_path, facts).steps

    assert step.planned.desired == f"hugepagesz=2M hugepages=512 {PER_NODE}"


@pytest.mark.parametrize(("staged", "desired"), [
    pytest.param("hugepages=512 hugepagesz=1G hugepages=4", f"hugepages=512 {PER_NODE}",
                 id="a default-size count before the pair stays before it"),
    pytest.param("hugepagesz=1G hugepages=4 hugepagesz=2M hugepages=512",
                 f"{PER_NODE} hugepagesz=2M hugepages=512", id="the pair is rewritten in place"),
    pytest.param("hugepagesz=2M", f"hugepagesz=2M {PER_NODE}",
                 id="a size without a count is kept"),
    pytest.param("hugepagesz=1G hugepagesz=2M hugepages=512",
                 f"{PER_NODE} hugepagesz=2M hugepages=512",
                 id="the managed size without a count gets one after its hugepagesz"),
    pytest.param("hugepages=512 default_hugepagesz=2M", "hugepages=512 default_hugepagesz=2M "
                 f"{PER_NODE}", id="a default size not the VMI's is kept in place"),
])
def test_the_command_line_keeps_its_order_and_only_kvtunes_count_changes(
    tmp_path: Path, staged: str, desired: str,
) -> None:
    [step] = _stage(tmp_path, BootFacts(GRUBBY_LOADER, staged, release="6.1.0")).steps

    assert (step.planned.current, step.planned.desired) == (staged, desired)


def test_the_vmis_default_size_replaces_the_one_there_in_place(tmp_path: Path) -> None:
    facts = BootFacts(GRUBBY_LOADER, "hugepagesz=2M hugepages=512 default_hugepagesz=2M",
                      release="6.1.0")

    [step] = _stage(tmp_path, facts, vmi={"namespaceSelector": {}, "hugepageSize": "1Gi"}).steps

    assert step.planned.desired == (
        f"hugepagesz=2M hugepages=512 default_hugepagesz=1G {PER_NODE}")


@pytest.mark.parametrize(("staged", "vmi", "why"), [
    pytest.param("default_hugepagesz=1G hugepages=16", None,
                 "`hugepages=16` before any hugepagesz= counts pages of the default size",
                 id="the admin's count of the 1G default size"),
    pytest.param("hugepages=512 default_hugepagesz=2M", "1Gi",
                 "`hugepages=512` before any hugepagesz= counts pages of the default size",
                 id="a default-size count the VMIs' default size would turn into 1G pages"),
])
def test_a_count_the_kernel_would_take_twice_is_a_conflict_not_staged(
    tmp_path: Path, staged: str, vmi: str | None, why: str,
) -> None:
    facts = BootFacts(GRUBBY_LOADER, staged, release="6.1.0")

    vmis = {"namespaceSelector": {}, "hugepageSize": vmi} if vmi else None
    found = _stage(tmp_path, facts, vmi=vmis)

    assert found.steps == ()
    [finding] = found.findings
    assert (finding.reason, finding.severity) == ("BootArgumentsConflict", "Error")
    assert why in finding.message and "specified twice" in finding.message


def test_an_admins_pair_in_etc_default_grub_is_a_conflict_kvtunes_drop_in_cannot_edit(
    tmp_path: Path,
) -> None:
    facts = BootFacts(Loader("grub", GRUB_DROPIN, ("/usr/sbin/update-grub",)), "",
                      release="6.1.0", effective="hugepagesz=1G hugepages=8")

    found = _stage(tmp_path, facts)

    assert [f.reason for f in found.findings] == ["BootArgumentsConflict"]
    assert "`hugepagesz=1G` is set already in /etc/default/grub" in found.findings[0].message


def test_staged_arguments_wait_for_the_reboot_and_then_are_done(tmp_path: Path) -> None:
    pending = _stage(tmp_path, BootFacts(GRUBBY_LOADER, PER_NODE, release="6.1.0",
                                         reboot_requested=True, written_since_boot=True))
    booted = _stage(tmp_path, BootFacts(GRUBBY_LOADER, PER_NODE, running=PER_NODE,
                                        release="6.1.0"))

    assert pending.steps == () and pending.reboot_pending
    [finding] = pending.findings
    assert (finding.reason, finding.severity) == ("HugepagesRebootPending", "Pending")
    assert booted == Plan()


@pytest.mark.parametrize(("staged", "original", "pages", "desired"), [
    pytest.param(PER_NODE, "", (), "", id="pages emptied: back to nothing"),
    pytest.param(f"default_hugepagesz=1G {PER_NODE}", "", (), "",
                 id="pages emptied: the default size kvtune set goes too"),
    pytest.param(f"hugepagesz=2M hugepages=512 {PER_NODE}", "hugepagesz=2M hugepages=512",
                 (), "hugepagesz=2M hugepages=512",
                 id="a size removed from pages: the original's own pair stays"),
    pytest.param("hugepagesz=1G hugepages=0:20,1:20", "hugepagesz=1G hugepages=4",
                 (), "hugepagesz=1G hugepages=4", id="a size that was there: its original count"),
])
def test_a_size_the_spec_no_longer_allocates_is_withdrawn_to_the_journals_original(
    tmp_path: Path, staged: str, original: str, pages: t.Sequence[dict[str, t.Any]],
    desired: str,
) -> None:
    facts = BootFacts(GRUBBY_LOADER, staged, running=staged, release="6.1.0")
    spec = node_spec(memory={"hugepages": {"pages": list(pages)}}, allow_reboot=True)
    host = probe_host(intel_two_socket(tmp_path).fs())

    found = boot.stage(Plan(), spec, host, (), facts, {GRUBBY: original})

    [step] = found.steps
    assert (step.planned.id, step.planned.current, step.planned.desired) == (
        boot.STEP_ID, staged, desired)
    assert step.planned.disruption == "NeedsReboot" and "no longer allocates" in step.planned.reason


def test_arguments_kvtune_did_not_stage_are_not_withdrawn(tmp_path: Path) -> None:
    facts = BootFacts(GRUBBY_LOADER, PER_NODE, running=PER_NODE, release="6.1.0")
    spec = node_spec(memory={"hugepages": {"pages": []}}, allow_reboot=True)
    host = probe_host(intel_two_socket(tmp_path).fs())

    assert boot.stage(Plan(), spec, host, (), facts) == Plan()
    assert boot.stage(Plan(), spec, host, (), facts, {GRUBBY: PER_NODE}) == Plan()


def test_a_withdrawal_kvtune_may_not_stage_is_reported_with_the_command(tmp_path: Path) -> None:
    facts = BootFacts(GRUBBY_LOADER, PER_NODE, running=PER_NODE, release="6.1.0")
    spec = node_spec(memory={"hugepages": {"pages": []}}, allow_reboot=False)
    host = probe_host(intel_two_socket(tmp_path).fs())

    found = boot.stage(Plan(), spec, host, (), facts, {GRUBBY: ""})

    assert found.steps == ()
    [finding] = found.findings
    assert (finding.reason, finding.severity) == ("BootArgumentsNotStaged", "Warning")
    assert "spec.rollout.allowReboot is false" in finding.message
    assert f"grubby --update-kernel=ALL --remove-args='{PER_NODE}'" in finding.message


@pytest.mark.parametrize(("facts", "flags", "why", "command"), [
    pytest.param(BootFacts(GRUBBY_LOADER, "", release="6.1.0"), {"boot": {"settings": "Report"}},
                 "spec.host.boot.settings is Report",
                 f"grubby --update-kernel=ALL --args='{PER_NODE}'", id="report on a BLS host"),
    pytest.param(BootFacts(GRUBBY_LOADER, "", release="6.1.0"), {"allow_reboot": False},
                 "spec.rollout.allowReboot is false",
                 f"grubby --update-kernel=ALL --args='{PER_NODE}'",
                 id="stage, but reboots are not allowed"),
    pytest.param(BootFacts(Loader("grub", GRUB_DROPIN, ("/usr/sbin/update-grub",)), "",
                           release="6.1.0"), {"boot": {"settings": "Report"}},
                 "spec.host.boot.settings is Report",
                 f"""echo 'GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT {PER_NODE}"'"""
                 f" > {GRUB_DROPIN} && /usr/sbin/update-grub", id="report on a Debian host"),
    pytest.param(BootFacts(Loader("ostree"), "", release="6.1.0"), {},
                 "this host's command line is set through rpm-ostree",
                 "rpm-ostree kargs --append=hugepagesz=1G --append=hugepages=0:20,1:20",
                 id="an ostree host is never written"),
    pytest.param(BootFacts(Loader("bls"), "", release="6.1.0"), {},
                 "without grubby", f"add `{PER_NODE}` to the options line of every entry",
                 id="BLS without grubby (systemd-boot) is never written"),
])
def test_arguments_kvtune_does_not_stage_are_reported_with_the_exact_command(
    tmp_path: Path, facts: BootFacts, flags: dict[str, t.Any], why: str, command: str,
) -> None:
    found = _stage(tmp_path, facts, **flags)

    assert found.steps == ()
    [finding] = found.findings
    assert (finding.feature, finding.reason, finding.severity) == (
        "Hugepages", "BootArgumentsNotStaged", "Warning")
    assert why in finding.message and command in finding.message


def test_an_unreadable_boot_configuration_is_an_error_when_pages_fall_short(
    tmp_path: Path,
) -> None:
    found = _stage(tmp_path, BootFacts(GRUBBY_LOADER, None, "grubby failed"))

    [finding] = found.findings
    assert (finding.reason, finding.severity) == ("BootArgumentsUnknown", "Error")
    assert "grubby failed" in finding.message


# -- the host's mechanism -------------------------------------------------------------------


def _upstream_grub(tree: HostTree) -> HostTree:
    tree.file("/usr/sbin/grub-mkconfig", "#!/bin/sh\n# reads /etc/default/grub only\n")
    (tree.root / "usr/sbin/grub-mkconfig").chmod(0o755)
    return tree.file("/boot/grub/grub.cfg", "")


@pytest.mark.parametrize(("build", "loader"), [
    pytest.param(bls, GRUBBY_LOADER, id="BLS entries and grubby: grubby"),
    pytest.param(debian_grub, Loader("grub", GRUB_DROPIN, (UPDATE_GRUB,)),
                 id="Debian's GRUB: a drop-in and update-grub"),
    pytest.param(lambda tree: bls(tree, grubby=False), Loader("bls"),
                 id="BLS entries without grubby: nothing to write with"),
    pytest.param(lambda tree: bls(tree.file("/run/ostree-booted", "")), Loader("ostree"),
                 id="an ostree host, even with BLS entries and grubby: nothing written"),
    pytest.param(_upstream_grub, Loader("unknown"),
                 id="a grub-mkconfig that ignores drop-ins: nothing written"),
    pytest.param(lambda tree: tree, Loader("unknown"), id="an empty root"),
])
def test_the_hosts_own_mechanism_is_found(
    tmp_path: Path, build: t.Callable[[HostTree], HostTree], loader: Loader,
) -> None:
    tree = HostTree(tmp_path)
    build(tree)
    assert find_loader(tree.fs()) == loader


def test_grubby_adds_to_every_entry_and_a_revert_removes_exactly_that(tmp_path: Path) -> None:
    tree = bls(HostTree(tmp_path))
    fs = tree.fs()

    write_args(fs, GRUBBY, PER_NODE, timeout=10)
    added = bls_options(tree)
    write_args(fs, GRUBBY, "", timeout=10)

    assert added == [f"root=UUID=1234 ro quiet {PER_NODE}"] * 2
    assert bls_options(tree) == ["root=UUID=1234 ro quiet"] * 2
    assert boot_commands(tree)[-2] == f"grubby --update-kernel=ALL '--remove-args={PER_NODE}'"


def test_entries_that_disagree_are_not_changed(tmp_path: Path) -> None:
    tree = bls(HostTree(tmp_path))
    bls(tree, "root=UUID=1234 hugepages=8", kernels=("5.0.0",))

    with pytest.raises(BootArgsError, match="disagree"):
        read_args(tree.fs(), GRUBBY, timeout=10)


def test_a_grub_drop_in_is_written_and_grub_cfg_regenerated_and_reverted(tmp_path: Path) -> None:
    tree = debian_grub(HostTree(tmp_path))
    fs = tree.fs()

    write_args(fs, GRUB_DROPIN, PER_NODE, timeout=10)
    staged = (tmp_path / GRUB_CFG.lstrip("/")).read_text()
    write_args(fs, GRUB_DROPIN, "", timeout=10)

    assert staged == f"linux /vmlinuz root=/dev/sda1 quiet {PER_NODE}\n"
    assert (tmp_path / GRUB_CFG.lstrip("/")).read_text() == "linux /vmlinuz root=/dev/sda1 quiet\n"
    assert not fs.exists(GRUB_DROPIN)
    assert boot_commands(tree) == ["update-grub", "update-grub"]


def test_a_drop_in_whose_grub_cfg_cannot_be_regenerated_is_put_back(tmp_path: Path) -> None:
    tree = debian_grub(HostTree(tmp_path), exit_code=1)

    with pytest.raises(BootArgsError, match="exit 1"):
        write_args(tree.fs(), GRUB_DROPIN, PER_NODE, timeout=10)

    assert not tree.fs().exists(GRUB_DROPIN)
    # This update-grub writes grub.cfg before it fails: it is generated again without kvtune's
    # line, so the next boot does not get what the status says was not staged.
    assert "hugepages" not in (tmp_path / GRUB_CFG.lstrip("/")).read_text()


@pytest.mark.parametrize("before", [
    pytest.param(None, id="no drop-in before: none after"),
    pytest.param('# by hand\nGRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT hugepages=8"',
                 id="a drop-in before: the same one after"),
])
def test_a_drop_in_whose_regeneration_hangs_or_cannot_start_is_put_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, before: str | None,
) -> None:
    tree = debian_grub(HostTree(tmp_path))
    if before is not None:
        tree.file(GRUB_DROPIN, before)  # with a trailing newline
    fs = tree.fs()

    def hangs(argv: t.Sequence[str], *, timeout: float) -> t.NoReturn:
        raise HostCommandError(f"`{' '.join(argv)}` did not finish within {timeout:g} s")

    monkeypatch.setattr(fs, "run", hangs)
    with pytest.raises(BootArgsError, match="did not finish"):
        write_args(fs, GRUB_DROPIN, PER_NODE, timeout=10)

    assert fs.read_text(GRUB_DROPIN) == f"{before}\n" if before else not fs.exists(GRUB_DROPIN)


def test_facts_give_the_staged_and_the_running_arguments_and_the_release(tmp_path: Path) -> None:
    tree = bls(osrelease(HostTree(tmp_path), "6.1.0-18-amd64"), f"ro {PER_NODE}")
    tree.cmdline("BOOT_IMAGE=/vmlinuz ro hugepagesz=1G hugepages=4 transparent_hugepage=never")

    facts = read_facts(tree.fs(), timeout=10)

    assert facts == BootFacts(GRUBBY_LOADER, PER_NODE, running="hugepagesz=1G hugepages=4",
                              release="6.1.0-18-amd64")


# -- whole cycles ---------------------------------------------------------------------------


def test_a_cycle_stages_boot_hugepages_with_grubby_once_the_kernel_falls_short_and_reverts(
    tmp_path: Path,
) -> None:
    tree = osrelease(bls(busy_host(tmp_path)), "6.1.0-18-amd64")
    fs = KernelFS(tmp_path, hugepage_limit=18)  # 20 wanted per node
    spec = busy_spec(allow_reboot=True)

    def cycle(at: datetime.datetime, previous: HypervisorNodeStateStatus,
              spec: HypervisorNodeStateSpec = spec) -> HypervisorNodeStateStatus:
        return run_cycle(fs, spec, 3, NodeMeta(), previous, systemd=tree.systemd(), now=at,
                         timeout=10).status

    first = cycle(NOW, HypervisorNodeStateStatus())
    assert boot.STEP_ID in {s.id for s in first.plan}  # planned from the shortfall just seen
    assert bls_options(tree) == ["root=UUID=1234 ro quiet"] * 2
    second = cycle(NOW + datetime.timedelta(minutes=11), first)

    assert {r.id: r.result for r in second.results}[boot.STEP_ID] == "Applied"
    assert bls_options(tree) == [f"root=UUID=1234 ro quiet {PER_NODE}"] * 2
    assert fs.exists(REBOOT_REQUIRED) and second.reboot_required
    assert boot.STEP_ID not in {s.id for s in second.plan}
    waiting = cond.find(second.conditions, cond.WAITING)
    assert waiting is not None and (waiting.status, waiting.reason) == ("True", "RebootRequired")
    assert f"`{PER_NODE}` is staged" in waiting.message
    assert any(e.kind == "bootargs" and e.original == "" for e in Journal(fs).entries())

    cycle(NOW + datetime.timedelta(minutes=12), second, busy_spec(revert=True))

    assert bls_options(tree) == ["root=UUID=1234 ro quiet"] * 2
    assert f"grubby --update-kernel=ALL '--remove-args={PER_NODE}'" in boot_commands(tree)


def test_a_cycle_withdraws_the_boot_hugepages_once_the_spec_drops_their_size(
    tmp_path: Path,
) -> None:
    tree = osrelease(bls(busy_host(tmp_path)), "6.1.0-18-amd64")
    fs = KernelFS(tmp_path, hugepage_limit=18)
    staged = busy_spec(allow_reboot=True)
    dropped = busy_spec(allow_reboot=True)
    dropped.host.memory.hugepages.pages = []

    def cycle(at: datetime.datetime, previous: HypervisorNodeStateStatus,
              spec: HypervisorNodeStateSpec) -> HypervisorNodeStateStatus:
        return run_cycle(fs, spec, 3, NodeMeta(), previous, systemd=tree.systemd(), now=at,
                         timeout=10).status

    first = cycle(NOW, HypervisorNodeStateStatus(), staged)
    second = cycle(NOW + datetime.timedelta(minutes=11), first, staged)
    assert bls_options(tree) == [f"root=UUID=1234 ro quiet {PER_NODE}"] * 2

    third = cycle(NOW + datetime.timedelta(minutes=12), second, dropped)

    assert {r.id: r.result for r in third.results}[boot.STEP_ID] == "Applied"
    assert bls_options(tree) == ["root=UUID=1234 ro quiet"] * 2
    fourth = cycle(NOW + datetime.timedelta(minutes=13), third, dropped)
    assert boot.STEP_ID not in {s.id for s in fourth.plan}


@pytest.mark.parametrize("loader", [
    pytest.param(lambda tree: debian_grub(tree, exit_code=1), id="update-grub exits 1"),
    pytest.param(lambda tree: grubby_failing_updates(bls(tree)),
                 id="grubby exits 1 on --update-kernel"),
])
def test_a_boot_loader_tool_that_fails_is_tried_again_at_growing_intervals_not_every_cycle(
    tmp_path: Path, loader: t.Callable[[HostTree], HostTree],
) -> None:
    tree = osrelease(loader(busy_host(tmp_path)), "6.1.0-18-amd64")
    fs = KernelFS(tmp_path, hugepage_limit=18)  # 20 wanted per node: staged for boot
    spec = busy_spec(allow_reboot=True)

    def cycle(minutes: int, previous: HypervisorNodeStateStatus) -> HypervisorNodeStateStatus:
        return run_cycle(fs, spec, 3, NodeMeta(), previous, systemd=tree.systemd(),
                         now=NOW + datetime.timedelta(minutes=minutes), timeout=10).status

    def staged() -> int:  # the commands that write the boot configuration
        return len([c for c in boot_commands(tree) if "--info" not in c])

    failed = cycle(11, cycle(0, HypervisorNodeStateStatus()))
    assert {r.id: r.result for r in failed.results}[boot.STEP_ID] == "Failed"
    [retry] = failed.boot_retries
    assert (retry.attempts, retry.next_attempt) == (1, NOW + datetime.timedelta(minutes=21))
    tries = staged()

    held = cycle(12, failed)

    assert staged() == tries, "not run again before its next attempt"
    assert held.boot_retries == [retry] and boot.STEP_ID not in {s.id for s in held.plan}
    found = cond.find(held.conditions, "Hugepages")
    assert found is not None and "failed 1 time(s), the last: " in found.message

    again = cycle(21, held)

    assert staged() > tries
    [retry] = again.boot_retries
    assert (retry.attempts, retry.next_attempt) == (2, NOW + datetime.timedelta(minutes=41))


def test_a_host_without_boot_hugepage_needs_runs_no_boot_loader_command(tmp_path: Path) -> None:
    tree = osrelease(bls(busy_host(tmp_path)), "6.1.0")

    run_cycle(KernelFS(tmp_path), busy_spec(allow_reboot=True), 3, NodeMeta(),
              HypervisorNodeStateStatus(), systemd=tree.systemd(), now=NOW, timeout=10)

    assert [c for c in boot_commands(tree) if "--info" not in c] == []


# -- failing commands: a command that fails means "unknown", never "no arguments" -------------


@pytest.mark.parametrize("break_grubby", [
    pytest.param(lambda tree: failing_grubby(tree, 1), id="grubby exits 1"),
    pytest.param(lambda tree: failing_grubby(tree, 0, "no entries"),
                 id="grubby exits 0 but lists no args line"),
    pytest.param(lambda tree: (tree.root / GRUBBY.lstrip("/")).unlink(),
                 id="grubby is gone (the fake chroot cannot exec it)"),
])
def test_a_failing_grubby_is_unknown_arguments_never_none(
    tmp_path: Path, break_grubby: t.Callable[[HostTree], object],
) -> None:
    tree = bls(HostTree(tmp_path), "root=UUID=1234 ro hugepagesz=1G hugepages=16")
    break_grubby(tree)

    with pytest.raises(BootArgsError):
        read_args(tree.fs(), GRUBBY, timeout=10)
    with pytest.raises(BootArgsError):
        write_args(tree.fs(), GRUBBY, "", timeout=10)
    assert bls_options(tree) == ["root=UUID=1234 ro hugepagesz=1G hugepages=16"] * 2


@pytest.mark.parametrize("says", [
    pytest.param("sys.stdout.buffer.write(b'\\xff\\xfe not UTF-8')", id="bytes that are not UTF-8"),
    pytest.param("sys.stdout.write('x' * 30_000_000)", id="30 MB of output"),
])
def test_a_grubby_that_prints_garbage_is_unknown_arguments_in_a_bounded_message(
    tmp_path: Path, says: str,
) -> None:
    tree = bls(HostTree(tmp_path), "root=UUID=1234 ro hugepagesz=1G hugepages=16")
    tree.file(GRUBBY, f"#!{sys.executable}\nimport sys\n{says}\nsys.exit(1)\n")
    (tmp_path / GRUBBY.lstrip("/")).chmod(0o755)

    with pytest.raises(BootArgsError) as caught:
        read_args(tree.fs(), GRUBBY, timeout=10)

    # The message goes into status, which the API server refuses past about 1.5 MiB.
    assert "exit 1" in str(caught.value) and len(str(caught.value)) < 100_000


def test_a_failing_grubby_while_recording_journals_nothing_and_changes_nothing(
    tmp_path: Path,
) -> None:
    tree = failing_grubby(bls(HostTree(tmp_path), "ro hugepagesz=1G hugepages=16"))
    fs = tree.fs()

    result = apply_boot_args(tree, GRUBBY, PER_NODE)

    assert result.result == "Failed" and "exit 1" in result.message
    assert Journal(fs).entries() == []
    assert bls_options(tree) == ["ro hugepagesz=1G hugepages=16"] * 2
    assert not fs.exists(REBOOT_REQUIRED)


def test_a_revert_with_grubby_gone_keeps_the_entry_and_says_so(tmp_path: Path) -> None:
    tree = bls(HostTree(tmp_path), f"ro {PER_NODE}")
    fs = tree.fs()
    Journal(fs).record("bootargs", GRUBBY, "", boot.STEP_ID)
    (tmp_path / GRUBBY.lstrip("/")).unlink()

    [result] = Journal(fs).revert(tree.systemd(), sequence=SEQUENCE, timeout=10)

    assert result.result == "Failed"
    assert [e.path for e in Journal(fs).entries()] == [GRUBBY]
    assert bls_options(tree) == [f"ro {PER_NODE}"] * 2


# -- the kernel command line, parsed as the kernel parses it ---------------------------------


@pytest.mark.parametrize(("line", "words"), [
    pytest.param('ro acpi_osi="!Windows 2012" quiet', ["ro", 'acpi_osi="!Windows 2012"', "quiet"],
                 id="a quoted value with a space is one word"),
    pytest.param('"dyndbg=file x +p" ro', ['"dyndbg=file x +p"', "ro"],
                 id="a word quoted from its start"),
    pytest.param('ro acpi_osi="!Windows 2012 hugepages=4', ["ro", 'acpi_osi="!Windows 2012 '
                 'hugepages=4'], id="an unbalanced quote runs to the end of the line"),
    pytest.param("  ro\tquiet  \n", ["ro", "quiet"], id="any whitespace separates"),
    pytest.param("", [], id="empty"),
])
def test_the_command_line_is_split_as_the_kernel_splits_it(line: str, words: list[str]) -> None:
    assert bootloader.split(line) == words


def test_a_quoted_option_keeps_the_admins_pair_readable(tmp_path: Path) -> None:
    tree = bls(HostTree(tmp_path),
               'root=UUID=1234 acpi_osi="!Windows 2012" hugepagesz=1G hugepages=16')

    assert read_args(tree.fs(), GRUBBY, timeout=10) == "hugepagesz=1G hugepages=16"


def test_an_unbalanced_quote_in_the_entries_does_not_raise_out_of_the_facts(
    tmp_path: Path,
) -> None:
    tree = bls(HostTree(tmp_path), 'root=UUID=1234 acpi_osi="!Windows 2012 hugepages=16')
    tree.cmdline('BOOT_IMAGE=/vmlinuz acpi_osi="!Windows hugepagesz=1G hugepages=2')

    facts = read_facts(tree.fs(), timeout=10)

    assert (facts.staged, facts.running) == ("", "")  # inside the open quote: one word


# -- every path that makes the kernel reserve memory goes through the budget ------------------


@pytest.mark.parametrize(("staged", "retries"), [
    pytest.param("hugepagesz=1G hugepages=4", (), id="the admin's pair on the command line"),
    pytest.param("hugepagesz=1G hugepages=0:16,1:16", (),
                 id="a pair kvtune staged before, raised past the budget"),
    pytest.param("", (_retry(),), id="a shortfall of the live path"),
])
def test_counts_past_the_memory_budget_are_never_staged(
    tmp_path: Path, staged: str, retries: t.Sequence[HugepageRetry],
) -> None:
    # 600 x 1Gi on a host of 2 x 256 GiB: the live path refuses HugepagesExceedNodeMemory.
    facts = BootFacts(GRUBBY_LOADER, staged, running=staged, release="6.1.0")

    found = _stage(tmp_path, facts, retries=retries, pages=({"size": "1Gi", "count": 600},))

    assert found.steps == ()
    [finding] = found.findings
    assert (finding.reason, finding.severity) == ("BootHugepagesExceedMemory", "Error")
    assert "NUMA node 0 would hold 302.0 GiB of hugepages" in finding.message  # 2 GiB of 2Mi


def test_an_unknown_budget_stages_nothing(tmp_path: Path) -> None:
    tree = intel_two_socket(tmp_path)
    (tmp_path / "proc/meminfo").unlink()
    spec = node_spec(memory={"hugepages": {"pages": [{"size": "1Gi", "count": 40}]}},
                     allow_reboot=True)
    facts = BootFacts(GRUBBY_LOADER, "hugepagesz=1G hugepages=4", release="6.1.0")

    found = boot.stage(Plan(), spec, probe_host(tree.fs()), (_retry(),), facts)

    assert found.steps == ()
    assert [f.reason for f in found.findings] == ["BootHugepagesExceedMemory"]


def test_counts_within_the_budget_are_still_staged_and_withdrawals_go_on(tmp_path: Path) -> None:
    facts = BootFacts(GRUBBY_LOADER, "hugepagesz=1G hugepages=4", release="6.1.0")

    [step] = _stage(tmp_path, facts, retries=()).steps

    assert step.planned.desired == PER_NODE


# -- "staged" is what the node will boot, and it converges after a crash ---------------------


def test_a_staged_line_whose_reboot_request_was_lost_asks_again(tmp_path: Path) -> None:
    facts = BootFacts(GRUBBY_LOADER, PER_NODE, release="6.1.0", written_since_boot=True)

    [step] = _stage(tmp_path, facts).steps

    assert (step.kind, step.planned.id, step.planned.path) == (
        "reboot", boot.REBOOT_STEP_ID, REBOOT_REQUIRED)
    assert step.planned.disruption == "NeedsReboot"


def test_a_staged_line_the_node_booted_without_is_an_error_not_another_reboot(
    tmp_path: Path,
) -> None:
    facts = BootFacts(GRUBBY_LOADER, PER_NODE, running="", release="6.1.0",
                      written_since_boot=False)

    found = _stage(tmp_path, facts)

    assert found.steps == () and not found.reboot_pending
    assert [(f.reason, f.severity) for f in found.findings] == [
        ("BootArgumentsIgnored", "Error")]


def test_a_drop_in_grub_cfg_was_never_generated_from_is_staged_again(tmp_path: Path) -> None:
    tree = osrelease(debian_grub(HostTree(tmp_path)), "6.1.0").file("/proc/stat", "btime 1")
    tree.file(GRUB_DROPIN, bootloader.dropin_line(PER_NODE))  # the crash: update-grub never ran
    os.utime(tmp_path / GRUB_CFG.lstrip("/"), (2, 2))  # grub.cfg is older than the drop-in
    facts = read_facts(tree.fs(), timeout=10)
    assert facts.stale and facts.effective == ""

    [step] = _stage(tmp_path / "host", dataclasses.replace(facts, reboot_requested=True)).steps

    assert (step.planned.current, step.planned.desired) == (PER_NODE, PER_NODE)
    assert "grub.cfg was not generated again" in step.planned.reason
    change.set_value(tree.fs(), tree.systemd(), "bootargs", GRUB_DROPIN, PER_NODE, timeout=10)
    assert (tmp_path / GRUB_CFG.lstrip("/")).read_text().endswith(f"quiet {PER_NODE}\n")
    assert not read_facts(tree.fs(), timeout=10).stale


def test_a_later_drop_in_that_overrides_kvtunes_is_found_before_and_after_any_write(
    tmp_path: Path,
) -> None:
    tree = osrelease(debian_grub(HostTree(tmp_path)), "6.1.0")
    tree.file("/etc/default/grub.d/zz-override.cfg", 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"')
    fs = tree.fs()

    facts = read_facts(fs, timeout=10)
    found = _stage(tmp_path / "host", facts)
    with pytest.raises(BootArgsError, match=r"zz-override\.cfg sets GRUB_CMDLINE_LINUX_DEFAULT"):
        write_args(fs, GRUB_DROPIN, PER_NODE, timeout=10)

    assert facts.overridden_by == ("/etc/default/grub.d/zz-override.cfg",)
    assert found.steps == ()
    assert [f.reason for f in found.findings] == ["BootArgumentsOverridden"]
    assert not fs.exists(GRUB_DROPIN)


def test_an_admins_own_kvtune_cfg_keeps_its_lines_and_words_through_a_stage_and_a_revert(
    tmp_path: Path,
) -> None:
    tree = debian_grub(HostTree(tmp_path))
    own = ('# mine\nGRUB_TIMEOUT=3\n'
           'GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT quiet hugepages=8"\n')
    (tmp_path / GRUB_DROPIN.lstrip("/")).write_text(own)
    fs = tree.fs()
    original = read_args(fs, GRUB_DROPIN, timeout=10)

    write_args(fs, GRUB_DROPIN, f"hugepages=8 {PER_NODE}", timeout=10)
    staged = (tmp_path / GRUB_DROPIN.lstrip("/")).read_text()
    write_args(fs, GRUB_DROPIN, original, timeout=10)

    assert "GRUB_TIMEOUT=3\n" in staged and "# mine\n" in staged
    assert f"quiet hugepages=8 {PER_NODE}\"" in staged
    assert (tmp_path / GRUB_DROPIN.lstrip("/")).read_text() == own
