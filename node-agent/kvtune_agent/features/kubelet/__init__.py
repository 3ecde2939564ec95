"""Kubelet: what the profile asks of the kubelet (a topology manager policy, whole cores for
dedicated CPUs, memory it reserves per NUMA node) against how it is configured. With
spec.cpu.kubelet Unmanaged (the default) every gap is a finding naming the file or flag to
change; with Report or Enforce, config.py decides what the kubelet must run and in which form,
and drop_in.py writes it on a drained node and restarts the kubelet (docs/kubelet.md)."""

from __future__ import annotations

import datetime
import typing as t

from kvtune_api.v1alpha1.host import (
    HostReport,
    KubeletReport,
    Problem,
)

from ...host import cpulist
from ...host.hostfs import HostFS, ProcessTable
from ...host.systemd import Systemd
from .. import kubelet_report
from ..base import (
    Backoff,
    Draft,
    Feature,
    Finding,
    PlanInputs,
)
from ..cpu_partition import PartitionRefused, partition
from ..page import Page
from . import config, drop_in, text
from . import probe as kubelet_probe

if t.TYPE_CHECKING:
    from kvtune_api.v1alpha1.nodestate import (
        HypervisorNodeStateSpec,
        KubeletRetry,
        PlannedStep,
        StepResult,
    )
    from kvtune_api.v1alpha1.profile import (
        NumaSettings,
        VmiSettings,
    )

#: The kubelet's CPU manager option that hands out whole cores only, in a file and as a flag.
WHOLE_CORES = ('{full-pcpus-only: "true"}', "full-pcpus-only=true")


def _kubelet(
    settings: NumaSettings, vmi: VmiSettings | None, host: HostReport, out: Draft
) -> None:
    """What the profile asks of the kubelet, against what it is configured to give.

    kvtune does not rewrite kubelet configuration, so each gap is a finding naming the file or
    flag to change; a gap that keeps VMs from getting what the profile promises is an Error
    (Degraded).
    """
    kubelet = host.kubelet
    want_topology = settings.topology_manager_policy
    wants = [want_topology is not None, vmi is not None and vmi.dedicated_cpus]
    if not any(wants):
        return
    if not kubelet_report.known(kubelet):
        out.warn("Kubelet", "KubeletConfigUnknown", (
            "the profile asks the kubelet for "
            f"{'a topology manager policy' if wants[0] else 'dedicated CPUs'}, but the kubelet's "
            f"configuration is unknown ({kubelet.error or 'no kubelet process or config found'}"
            "), so it is not checked"))
        return
    read = f"the kubelet reads {kubelet_report.read_from(kubelet)}"
    restart = "restart the kubelet on a drained node"
    if want_topology is not None and kubelet.topology_manager_policy != want_topology:
        out.error("Kubelet", "KubeletTopologyPolicyMismatch", (
            f"numa.topologyManagerPolicy is {want_topology}, but the kubelet runs "
            f"{kubelet.topology_manager_policy!r} ({read}); kvtune does not rewrite kubelet "
            f"configuration: {kubelet_probe.fix(kubelet, 'topologyManagerPolicy', want_topology)}"
            f" and {restart}"))
    if vmi is None or not vmi.dedicated_cpus:
        return
    _kubelet_cpus(vmi, host, read, restart, out)
    if vmi.hugepage_size is not None or vmi.numa_passthrough:
        _kubelet_memory(vmi, host, read, restart, out)


def _kubelet_cpus(
    vmi: VmiSettings, host: HostReport, read: str, restart: str, out: Draft
) -> None:
    kubelet = host.kubelet
    if kubelet.cpu_manager_policy != "static":
        out.error("Kubelet", "KubeletCpuManagerNotStatic", (
            f"vmi.dedicatedCpus is true, but the kubelet's cpuManagerPolicy is "
            f"{kubelet.cpu_manager_policy!r} ({read}): VMIs with dedicated CPUs stay Pending; "
            f"{kubelet_probe.fix(kubelet, 'cpuManagerPolicy', 'static')}, remove "
            f"/var/lib/kubelet/cpu_manager_state and {restart}"))
        return
    online = cpulist.parse(host.numa.online_cpus)  # the report's cpulists are validated
    try:
        reserved = cpulist.parse(kubelet.reserved_system_cpus or "")
    except ValueError as err:
        out.error("Kubelet", "KubeletReservedCpusInvalid", (
            f"the kubelet's reservedSystemCPUs {kubelet.reserved_system_cpus!r} ({read}) is not "
            f"a CPU list ({err}); "
            f"{kubelet_probe.fix(kubelet, 'reservedSystemCPUs', '<a CPU list such as 0-1>')}"))
        reserved = set()
    if online and reserved - online:
        out.error("Kubelet", "KubeletReservedCpusOffline", (
            f"the kubelet's reservedSystemCPUs {kubelet.reserved_system_cpus} ({read}) name "
            f"CPUs {cpulist.format_ids(reserved - online)} that are not online on this host "
            f"(online: {host.numa.online_cpus}): the CPUs kept from VMs are not the ones "
            f"meant; {kubelet_probe.fix(kubelet, 'reservedSystemCPUs', '<online CPUs>')}"))
    whole_cores = kubelet.cpu_manager_policy_options.get("full-pcpus-only") == "true"
    if host.numa.threads_per_core > 1 and not whole_cores:
        out.warn("Kubelet", "KubeletSharesCores", (
            f"the kubelet's static CPU manager runs without full-pcpus-only ({read}) on a host "
            f"with {host.numa.threads_per_core} threads per core: a VM's dedicated vCPUs may "
            "share a core with another container's, which costs both; "
            f"{kubelet_probe.fix(kubelet, 'cpuManagerPolicyOptions', *WHOLE_CORES)} and {restart}"))


def _kubelet_memory(
    vmi: VmiSettings, host: HostReport, read: str, restart: str, out: Draft
) -> None:
    kubelet = host.kubelet
    asks = ("vmi.numaPassthrough is true" if vmi.numa_passthrough
            else f"vmi.hugepageSize is {vmi.hugepage_size}")
    if kubelet.memory_manager_policy != "Static":
        out.error("Kubelet", "KubeletMemoryManagerNotStatic", (
            f"{asks}, but the kubelet's memoryManagerPolicy is "
            f"{kubelet.memory_manager_policy!r} ({read}): only the Static memory manager gives "
            "a guaranteed VM its memory and hugepages from the NUMA node of its CPUs; "
            f"{kubelet_probe.fix(kubelet, 'memoryManagerPolicy', 'Static')} with reservedMemory "
            f"per NUMA node, remove /var/lib/kubelet/memory_manager_state and {restart}"))
        return
    nodes = {node.id for node in host.numa.nodes}
    unknown = sorted(set(e.numa_node for e in kubelet.reserved_memory) - nodes)
    if nodes and unknown:
        out.error("Kubelet", "KubeletReservedMemoryMismatch", (
            f"the kubelet's reservedMemory ({read}) names NUMA node(s) "
            f"{', '.join(map(str, unknown))}, which this host does not have (nodes "
            f"{', '.join(map(str, sorted(nodes)))}); "
            f"{kubelet_probe.fix(kubelet, 'reservedMemory', '<one entry per NUMA node>')}"))
    # To the byte, by the kubelet's own rule (config.py): the eviction threshold it counts
    # depends on where evictionHard is set, and it compares quantities, not KiB.
    try:
        host_wide, split = config.reserved_bytes(kubelet), sum(
            config.reserved_split(kubelet).values())
    except config.Refusal as err:
        out.warn("Kubelet", "KubeletReservedMemoryUnknown", str(err))
        return
    if split != host_wide:
        out.error("Kubelet", "KubeletReservedMemoryMismatch", (
            f"the Static memory manager needs reservedMemory's memory over all NUMA nodes "
            f"({_size(split)}) to equal systemReserved + kubeReserved + the hard eviction "
            f"threshold for memory.available ({_size(host_wide)}, as the kubelet counts it), and "
            f"the kubelet refuses to start otherwise ({read}); "
            f"{kubelet_probe.fix(kubelet, 'reservedMemory', '<entries adding up to that>')}"))


def _record(step: PlannedStep, result: StepResult, attempts: int, now: datetime.datetime,
            following: datetime.datetime, host: HostReport) -> KubeletRetry:
    from kvtune_api.v1alpha1.nodestate import KubeletRetry

    return KubeletRetry(step=step.id, path=step.path, wanted=step.desired,
                        error=result.message, attempts=attempts, last_attempt=now,
                        next_attempt=following)


def _findings(held: list[KubeletRetry]) -> list[Finding]:
    return [Finding("Kubelet", "Error", "KubeletConfigNotTaken", (
        f"the kubelet did not come back healthy with {r.path} after {r.attempts} attempt(s), "
        f"so its previous configuration was put back: {r.error}. Each attempt drains the node, "
        f"so the next is at {r.next_attempt.isoformat(timespec='seconds')}, each waiting twice "
        "as long; fix what the kubelet says (or change spec.cpu.kubelet, which is tried at "
        "once)")) for r in held]


#: kvtune's kubelet configuration the kubelet refused: each attempt drains the node and
#: restarts the kubelet, so it is not made every cycle.
KUBELET_BACKOFF = Backoff(
    "kubelet_retries", lambda step: step.id == drop_in.STEP_ID,
    lambda result: result.result == "Failed", _record, _findings)


def _size(amount: int) -> str:
    """Bytes as GiB and to the byte: the kubelet compares them to the byte."""
    return f"{amount / 2**30:.1f} GiB, {amount} bytes"


class Kubelet(Feature[KubeletReport, drop_in.Observed]):
    condition = "Kubelet"
    section = "kubelet"
    problem_name = "Kubelet"
    backoffs = (KUBELET_BACKOFF,)

    def __init__(self, health: drop_in.Health | None = None,
                 ready_seconds: float = drop_in.READY_SECONDS) -> None:
        #: How the kubelet's healthz is asked after a restart (a stand-in in tests).
        self.health = health or drop_in.healthz()
        self.ready_seconds = ready_seconds

    def probe(self, fs: HostFS, processes: ProcessTable) -> KubeletReport:
        return kubelet_probe.probe(fs, processes)

    def check(self, found: KubeletReport) -> list[Problem]:
        return kubelet_probe.check(found)

    def read(self, fs: HostFS, host: HostReport) -> drop_in.Observed:
        return drop_in.observe(fs, host.kubelet)

    def plan(self, inputs: PlanInputs, facts: drop_in.Observed | None, out: Draft) -> None:
        settings = inputs.spec.host.cpu.kubelet
        if settings.management == "Unmanaged" or facts is None:
            _kubelet(inputs.spec.host.numa, inputs.spec.vmi, inputs.host, out)
            return
        housekeeping: frozenset[int] | None = None  # no partition: the kubelet's own stay
        if inputs.spec.host.cpu.partition is not None:
            try:
                housekeeping = partition(inputs.spec.host.cpu.partition, inputs.host).housekeeping
            except PartitionRefused as refused:
                # A Warning, not an Error: the CPUIsolation condition is Degraded with the
                # reason already, and one cause should not be counted twice.
                out.warn("Kubelet", "KubeletWaitsForCpuPartition", (
                    f"spec.cpu.kubelet.management is {settings.management}, but nothing is "
                    f"{'written' if settings.management == 'Enforce' else 'shown'}: the "
                    "kubelet's reservedSystemCPUs are the housekeeping CPUs of "
                    f"spec.cpu.partition, which cannot be made on this node ({refused.reason}, "
                    "see the CPUIsolation condition); once the partition fits, the kubelet "
                    "follows"))
                return
        drop_in.plan(settings, inputs.spec.host.numa.topology_manager_policy, facts,
                     inputs.host.numa.nodes, housekeeping, inputs.spec.profile.name, out)

    def hold_restore(self, fs: HostFS, path: str, original: str | None, approved: bool,
                     timeout: float) -> str | None:
        return drop_in.hold_restore(path, approved)

    def settle(self, fs: HostFS, systemd: Systemd, path: str, timeout: float) -> str | None:
        return drop_in.settle(fs, systemd, path, self.health, timeout=timeout,
                              ready_seconds=self.ready_seconds)

    def unmanaged(self, spec: HypervisorNodeStateSpec) -> str | None:
        dedicated = spec.vmi is not None and spec.vmi.dedicated_cpus
        if (spec.host.numa.topology_manager_policy is None and not dedicated
                and spec.host.cpu.kubelet.management == "Unmanaged"):
            return ("spec.host.numa.topologyManagerPolicy is not set and the VMIs get no "
                    "dedicated CPUs")
        return None

    def report(self, page: Page, report: HostReport) -> None:
        text.section(page, report)


FEATURE = Kubelet()
