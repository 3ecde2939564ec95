"""What CPU isolation changes on a host with a partition: IRQs, kernel noise, irqbalance, and
the kernel arguments of the next boot.

Every measure moves work off the isolated CPUs onto the housekeeping ones, through a kernel file
or a file and unit the engine already journals, so that a revert puts back the value each target
held before:
- IRQs (Live): each IRQ allowed on an isolated CPU gets the housekeeping CPUs it was allowed on
  (all of them where it had none), so that an administrator's narrower choice survives; new
  IRQs start on /proc/irq/default_smp_affinity. An IRQ the kernel marks managed (debugfs) is
  its driver's to place: reported, never written; isolcpus=managed_irq keeps it off the isolated
  CPUs from the next boot;
- irqbalance would move them back within 10 s: it is stopped, or its banned CPUs are set and it
  is restarted (a stop and a start, after the file);
- kernel noise (Live): kernel.numa_balancing 0, the unbound workqueue mask to housekeeping, and
  where the profile asks, the isolated CPUs' frequency governor and their deepest idle states;
  unbound kernel threads allowed on isolated CPUs are reported (the engine has no write for a
  thread's affinity; nohz_full confines them from the next boot);
- boot (NeedsReboot): nohz_full, rcu_nocbs, isolcpus=managed_irq, systemd.cpu_affinity and, where
  VMs never share CPUs, PLE off (`boot_words`; staged by boot.py).
A mask is written as wide as the kernel prints it (read from the file), so the read-back that
checks every write compares like with like. Pure: the host's facts come in `IsolationFacts`.
"""

from __future__ import annotations

import typing as t
from collections.abc import Mapping
from dataclasses import dataclass, field

from kvtune_api.features import ConditionFeature
from kvtune_api.v1alpha1.host import HostReport, PleReport

from ...host import cpulist
from ...host.systemd import UnitState
from ..base import Draft
from ..cpu_partition import Partition, PartitionRefused, partition
from .probe import (
    DEFAULT_IRQ_AFFINITY,
    NUMA_BALANCING,
    WORKQUEUE_CPUMASK,
    irq_affinity_path,
)

if t.TYPE_CHECKING:
    from kvtune_api.v1alpha1.profile import CpuSettings

CONDITION: t.Final[ConditionFeature] = "CPUIsolation"
#: irqbalance's configuration, Debian's and Red Hat's; its unit reads it as an EnvironmentFile.
IRQBALANCE_CONFIGS = ("/etc/default/irqbalance", "/etc/sysconfig/irqbalance")
IRQBALANCE_UNIT = "irqbalance.service"
#: The kernel arguments this feature sets; every other word of the command line is left alone.
BOOT_KEYS = ("nohz_full", "rcu_nocbs", "isolcpus", "systemd.cpu_affinity", "kvm_intel.ple_gap",
             "kvm_amd.pause_filter_count")


class Out(t.Protocol):
    """The plan under construction (the engine's Draft)."""

    def step(self, kind: t.Any, step_id: str, feature: t.Any, path: str, current: str,
             desired: str, reason: str, disruption: t.Any = "Live") -> None: ...

    def error(self, feature: t.Any, reason: str, message: str) -> None: ...

    def warn(self, feature: t.Any, reason: str, message: str) -> None: ...


@dataclass(frozen=True)
class IdleState:
    """One of a CPU's idle states (/sys/devices/system/cpu/cpuN/cpuidle/stateK)."""

    index: int
    name: str
    #: Exit latency in microseconds.
    latency: int
    disabled: str


def governor_path(cpu: int) -> str:
    return f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"


def idle_state_path(cpu: int, index: int) -> str:
    return f"/sys/devices/system/cpu/cpu{cpu}/cpuidle/state{index}/disable"


@dataclass(frozen=True)
class IsolationFacts:
    """Host facts the report does not carry, read once per plan (`read_facts`)."""

    #: IRQ -> the CPUs its smp_affinity_list allows (IRQs whose file could not be read absent).
    irqs: Mapping[int, frozenset[int]] = field(default_factory=dict)
    #: IRQs debugfs (/sys/kernel/debug/irq/irqs/N) marks IRQD_AFFINITY_MANAGED.
    managed: frozenset[int] = frozenset()
    #: The raw text of /proc/irq/default_smp_affinity and the workqueue cpumask (None: absent).
    default_mask: str | None = None
    workqueue_mask: str | None = None
    #: irqbalance's configuration file and what it holds ("": not there yet; None: unreadable).
    irqbalance_config: tuple[str, str | None] = (IRQBALANCE_CONFIGS[0], "")
    #: CPU -> (its scaling_governor, the governors it offers); CPUs without cpufreq absent.
    governors: Mapping[int, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    #: CPU -> its idle states, in order (CPUs without cpuidle absent).
    idle_states: Mapping[int, tuple[IdleState, ...]] = field(default_factory=dict)


def format_mask(ids: frozenset[int] | set[int], like: str) -> str:
    """`ids` as a cpumask of the width and form of `like`, a mask the kernel printed: 32-bit
    words, most significant first, the first as many digits as the kernel gave it."""
    words = like.strip().split(",")
    value = sum(1 << i for i in ids)
    out = []
    for index in range(len(words)):
        word = (value >> (32 * (len(words) - 1 - index))) & 0xFFFFFFFF
        out.append(f"{word:0{len(words[0]) if index == 0 else 8}x}")
    return ",".join(out)


def _moved(allowed: frozenset[int], part: Partition) -> frozenset[int]:
    """Where work allowed on `allowed` goes: the housekeeping CPUs among them, else all."""
    return (allowed & part.housekeeping) or part.housekeeping


def _irqs(part: Partition, host: HostReport, facts: IsolationFacts, out: Out) -> None:
    if host.cpu_isolation.irqs_unknown:
        out.error(CONDITION, "IrqsUnknown", (
            f"{DEFAULT_IRQ_AFFINITY} cannot be read, so where IRQs run is unknown and none is "
            "moved; check that the agent sees the host's /proc"))
        return
    managed = sorted(irq for irq, cpus in facts.irqs.items()
                     if irq in facts.managed and cpus & part.isolated)
    if managed:
        out.warn(CONDITION, "ManagedIrqsOnIsolatedCpus", (
            f"IRQs {cpulist.format_ids(managed)} are managed by their drivers (the kernel "
            "refuses to move them) and may run on isolated CPUs; bootIsolation's "
            "isolcpus=managed_irq keeps them off from the next boot"))
    for irq, allowed in sorted(facts.irqs.items()):
        if irq in facts.managed or not allowed & part.isolated:
            continue
        noisy = cpulist.format_ids(allowed & part.isolated)
        out.step("sysfs", f"irq/{irq}", CONDITION, irq_affinity_path(irq),
                 cpulist.format_ids(allowed), cpulist.format_ids(_moved(allowed, part)),
                 f"IRQ {irq} may run on isolated CPUs {noisy}")
    _mask("irq/default", DEFAULT_IRQ_AFFINITY, facts.default_mask, part,
          "IRQs set up from now on (a hot-plugged VF's) start on the isolated CPUs", out)


def _mask(step_id: str, path: str, text: str | None, part: Partition, why: str,
          out: Out) -> None:
    if text is None:
        return
    try:
        now = frozenset(cpulist.parse_mask(text))
    except ValueError:
        out.error(CONDITION, "CpuMaskUnreadable", (
            f"{path} holds {text[:40]!r}, not a CPU mask; it is left as it is"))
        return
    if now & part.isolated:
        out.step("sysfs", step_id, CONDITION, path, text.strip(),
                 format_mask(_moved(now, part), text), f"{why} ({cpulist.format_ids(now)})")


def _kernel_noise(settings: CpuSettings, part: Partition, host: HostReport,
                  facts: IsolationFacts, out: Out) -> None:
    balancing = host.cpu_isolation.numa_balancing
    if balancing not in (None, 0):
        out.step("sysfs", "kernel/numa_balancing", CONDITION, NUMA_BALANCING, str(balancing), "0",
                 "automatic NUMA balancing migrates pinned guests' memory and unmaps their "
                 "pages to sample them, as numad does")
    _mask("workqueue/cpumask", WORKQUEUE_CPUMASK, facts.workqueue_mask, part,
          "unbound workqueues run on the isolated CPUs", out)
    if settings.governor is not None:
        _governor(settings.governor, part, facts, out)
    if settings.max_idle_latency_microseconds is not None:
        _idle(settings.max_idle_latency_microseconds, part, facts, out)
    noisy = [group for group in host.cpu_isolation.kernel_threads
             if cpulist.parse(group.affinity) & part.isolated]
    if noisy:
        count = sum(group.count for group in noisy)
        names = ", ".join(name for group in noisy for name in group.examples)
        out.warn(CONDITION, "KernelThreadsOnIsolatedCpus", (
            f"{count} unbound kernel threads (e.g. {names}) may run on isolated CPUs "
            f"{part.isolated_list}; kvtune does not set thread affinities live: nohz_full "
            "(bootIsolation) confines them to the housekeeping CPUs from the next boot, or "
            f"run `taskset -pc {part.housekeeping_list} <pid>` for each"))


def _governor(want: str, part: Partition, facts: IsolationFacts, out: Out) -> None:
    cpus = sorted(part.isolated & set(facts.governors))
    if not cpus:
        out.warn(CONDITION, "NoCpuFrequencyScaling", (
            f"spec.cpu.governor is {want}, but the isolated CPUs have no cpufreq "
            "(/sys/devices/system/cpu/cpuN/cpufreq): the firmware or the hypervisor sets their "
            "clock; nothing to set"))
        return
    lacking = [cpu for cpu in cpus if want not in facts.governors[cpu][1]]
    if lacking:
        offered = " ".join(facts.governors[lacking[0]][1]) or "none"
        out.error(CONDITION, "GovernorUnavailable", (
            f"spec.cpu.governor is {want}, but CPUs {cpulist.format_ids(lacking)} offer "
            f"{offered} (scaling_available_governors); choose one of those, or load the "
            f"cpufreq_{want} module"))
    for cpu in cpus:
        now = facts.governors[cpu][0]
        if cpu not in lacking and now != want:
            out.step("sysfs", f"cpufreq/cpu{cpu}", CONDITION, governor_path(cpu), now, want,
                     f"spec.cpu.governor is {want} for the isolated CPUs")


def _idle(limit: int, part: Partition, facts: IsolationFacts, out: Out) -> None:
    for cpu in sorted(part.isolated & set(facts.idle_states)):
        for state in facts.idle_states[cpu]:
            if state.latency > limit and state.disabled != "1":
                out.step("sysfs", f"cpuidle/cpu{cpu}/state{state.index}", CONDITION,
                         idle_state_path(cpu, state.index), state.disabled, "1",
                         f"idle state {state.name} of isolated CPU {cpu} takes {state.latency} "
                         f"us to leave, more than spec.cpu.maxIdleLatencyMicroseconds {limit}")


def _with_ban(content: str, part: Partition) -> str:
    """The irqbalance configuration with the isolated CPUs banned, its other lines kept."""
    words = {"IRQBALANCE_BANNED_CPULIST": part.isolated_list,
             # irqbalance before 1.8 knows only the mask.
             "IRQBALANCE_BANNED_CPUS": format_mask(part.isolated, "0" * 8 * (
                 max(part.isolated) // 32 + 1))}
    now = dict(line.strip().partition("=")[::2] for line in content.splitlines())
    if all(now.get(key, "").strip('"') == value for key, value in words.items()):
        return content
    lines = [line for line in content.rstrip("\n").splitlines()
             if line.split("=", 1)[0].strip() not in words]
    return "".join(f"{line}\n" for line in [*lines, *(f"{k}={v}" for k, v in words.items())])


def _irqbalance(settings: CpuSettings, part: Partition, host: HostReport,
                facts: IsolationFacts, out: Out) -> None:
    daemon = host.cpu_isolation.irqbalance
    installed = daemon.unit not in ("NotInstalled", "Masked")
    now = UnitState(enabled=daemon.unit == "Enabled", active=daemon.running)
    if settings.irqbalance == "Unmanaged" and daemon.running:
        out.warn(CONDITION, "IrqbalanceUnmanaged", (
            "irqbalance runs and spec.cpu.irqbalance is Unmanaged: every 10 s it may move IRQs "
            f"back onto the isolated CPUs {part.isolated_list} that kvtune moves off them; ban "
            "them in its configuration (IRQBALANCE_BANNED_CPULIST), or set cpu.irqbalance to "
            "BanIsolated or Stop"))
    if settings.irqbalance == "Unmanaged" or (not daemon.running and not installed):
        return
    if daemon.running and not installed:
        out.warn(CONDITION, "IrqbalanceWithoutUnit", (
            f"irqbalance runs (pid {', '.join(map(str, daemon.pids))}) without a systemd "
            "unit, so kvtune cannot restart or stop it; it moves IRQs back onto isolated CPUs: "
            "stop it on the host"))
        return
    if settings.irqbalance == "Stop":
        want = UnitState(enabled=False, active=False)
        if now != want:
            out.step("unit", "irqbalance", CONDITION, IRQBALANCE_UNIT, str(now), str(want),
                     "cpu.irqbalance is Stop: irqbalance would move IRQs onto isolated CPUs")
        return
    path, content = facts.irqbalance_config
    if content is None:
        out.error(CONDITION, "IrqbalanceConfigUnreadable", (
            f"{path} cannot be read (a regular file of at most 1 MiB is expected), so the "
            "isolated CPUs cannot be banned there without losing what it holds; fix it, or set "
            "cpu.irqbalance to Stop"))
        return
    wanted = _with_ban(content, part)
    if wanted != content:
        out.step("file", "irqbalance/config", CONDITION, path, content, wanted,
                 f"irqbalance must not place IRQs on the isolated CPUs {part.isolated_list}")
    if daemon.running and wanted != content:
        # It reads the file only when it starts: a restart, as a stop and a start applied in
        # this order after the file (the journal keeps the state from before the stop).
        stopped = UnitState(enabled=now.enabled, active=False)
        out.step("unit", "irqbalance/stop", CONDITION, IRQBALANCE_UNIT, str(now), str(stopped),
                 "irqbalance reads its banned CPUs only when it starts: restarted")
        out.step("unit", "irqbalance/start", CONDITION, IRQBALANCE_UNIT, str(stopped), str(now),
                 "irqbalance started again, with the isolated CPUs banned")


def boot_words(settings: CpuSettings, part: Partition, ple: PleReport) -> dict[str, str]:
    """The kernel arguments (key -> value) that isolate `part` from the next boot."""
    words = {
        "nohz_full": part.isolated_list,
        "rcu_nocbs": part.isolated_list,
        "isolcpus": f"managed_irq,{part.isolated_list}",
        "systemd.cpu_affinity": part.housekeeping_list,
    }
    # With dedicated CPUs a spinning vCPU has its CPU to itself: a pause exit only adds an exit
    # and a reschedule (TuneD's realtime-virtual-host). Never where PLE is Required.
    if settings.turns_ple_off():
        if ple.module == "kvm_intel" and ple.supported != "No":
            words["kvm_intel.ple_gap"] = "0"
        elif ple.module == "kvm_amd" and ple.supported != "No":
            words["kvm_amd.pause_filter_count"] = "0"
    return words


class _Reported:
    """A measure in Report form: the steps it would take, told as one warning instead."""

    def __init__(self, out: Out, field_name: str) -> None:
        self.out, self.field_name = out, field_name
        self.steps: list[str] = []

    def step(self, kind: t.Any, step_id: str, feature: t.Any, path: str, current: str,
             desired: str, reason: str, disruption: t.Any = "Live") -> None:
        self.steps.append(f"{path} {current!r} -> {desired!r}")

    def error(self, feature: t.Any, reason: str, message: str) -> None:
        self.out.error(feature, reason, message)

    def warn(self, feature: t.Any, reason: str, message: str) -> None:
        self.out.warn(feature, reason, message)

    def flush(self) -> None:
        if self.steps:
            shown = "; ".join(self.steps[:5])
            more = f" and {len(self.steps) - 5} more" if len(self.steps) > 5 else ""
            self.out.warn(CONDITION, "NotIsolated", (
                f"spec.cpu.{self.field_name} is Report, and {len(self.steps)} change(s) would "
                f"isolate the CPUs: {shown}{more}; set it to Enforce to make them"))


def plan(settings: CpuSettings, host: HostReport, facts: IsolationFacts, out: Draft) -> None:
    """The steps and findings of CPU isolation; nothing without a partition (existing profiles
    keep their behaviour), and nothing but the refusal where the partition cannot be made."""
    if settings.partition is None:
        return
    try:
        part = partition(settings.partition, host)
    except PartitionRefused as refused:
        out.error(CONDITION, refused.reason, refused.message)
        return
    from kvtune_api.v1alpha1.nodestate import CpuPartitionStatus  # not for `kvtune probe`

    out.publish("cpu_partition", CpuPartitionStatus(
        housekeeping=part.housekeeping_list, isolated=part.isolated_list))
    for warning in part.warnings:
        out.warn(CONDITION, "CoresSplit", warning)
    if settings.irqs != "Unmanaged":
        irqs = out if settings.irqs == "Enforce" else _Reported(out, "irqs")
        _irqs(part, host, facts, irqs)
        _irqbalance(settings, part, host, facts, irqs)
        if isinstance(irqs, _Reported):
            irqs.flush()
    if settings.kernel_noise != "Unmanaged":
        noise = out if settings.kernel_noise == "Enforce" else _Reported(out, "kernelNoise")
        _kernel_noise(settings, part, host, facts, noise)
        if isinstance(noise, _Reported):
            noise.flush()
