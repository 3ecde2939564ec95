"""Whether the kubelet will take a VMI's dedicated CPUs whole cores at a time, and KubeVirt's fix.

A kubelet whose static CPU manager runs with `full-pcpus-only` refuses (SMTAlignmentError,
pkg/kubelet/cm/cpumanager/policy_static.go enforceSMTAlignment) a guaranteed container whose CPU
count is not a multiple of the threads per core, and the VMI's pod then fails on every such
node. KubeVirt's compute container asks for the vCPUs, the supplemental pool's IO threads, and
one CPU more for an isolated emulator thread (virt-controller renderresources.go WithCPUPinning).
KubeVirt's answer for the odd emulator CPU is the VMI annotation
`alpha.kubevirt.io/EmulatorThreadCompleteToEvenParity`: with it, the emulator thread gets two
CPUs where one would leave the count odd. KubeVirt only copies the annotation from its own CR
when its AlignCPUs feature gate (Alpha) is on, so kvtune sets it only there too; elsewhere the
VMI is refused (or warned about) at admission, naming the fix, instead of failing on the node.

Pure: the facts about the nodes come from their HypervisorNodeStates (NodeFacts), the gate from
the KubeVirt CR (KubeVirtConfig).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from ...common.node_facts import WHOLE_CORES, NodeFacts
from ...common.profiles import Profile
from .kubevirt_config import KubeVirtConfig
from .mutate import JsonPatch
from .paths import CPU
from .read import lookup, vcpu_count

ALIGN_CPUS_GATE = "AlignCPUs"
EVEN_PARITY = "alpha.kubevirt.io/EmulatorThreadCompleteToEvenParity"
#: The parity KubeVirt's annotation completes to: it knows two threads per core only.
PARITY = 2


def _io_threads(vmi: Mapping[str, Any]) -> tuple[int, int]:
    """(IO thread CPUs in the container, CPUs KubeVirt adds only to the parity check)."""
    count = lookup(vmi, "spec", "domain", "ioThreads", "supplementalPoolThreadCount")
    count = count if isinstance(count, int) and not isinstance(count, bool) else 0
    policy = lookup(vmi, "spec", "domain", "ioThreadsPolicy")
    return count, count if policy == "supplementalPool" else 0


def exclusive_cpus(vmi: Mapping[str, Any]) -> int:
    """The whole CPUs KubeVirt's compute container asks for, as WithCPUPinning renders them
    (for a VMI with dedicated CPUs)."""
    io_cpus, additional = _io_threads(vmi)
    total = vcpu_count(vmi) + io_cpus
    if lookup(vmi, *CPU, "isolateEmulatorThread") is True:
        annotated = EVEN_PARITY in _annotations(vmi)
        total += 2 if annotated and (total + additional) % PARITY == 0 else 1
    return total


@dataclasses.dataclass(frozen=True)
class Alignment:
    """What admission does about a VMI's SMT alignment."""

    patch: JsonPatch = dataclasses.field(default_factory=list)
    refused: list[str] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)


def merged(facts: Iterable[NodeFacts]) -> NodeFacts:
    """The profile's nodes as one: the most threads per core, whole cores if any kubelet."""
    found = list(facts)
    return NodeFacts(max((f.threads_per_core for f in found), default=0),
                     any(f.whole_cores for f in found))


def whole_cores(profile: Profile, nodes: NodeFacts) -> bool:
    """The profile's kubelets hand out whole cores: kvtune writes the option (spec.cpu.kubelet)
    or a node's kubelet reports it."""
    kubelet = profile.spec.cpu.kubelet
    return nodes.whole_cores or (kubelet.management != "Unmanaged" and kubelet.full_pcpus_only)


def align(
    profile: Profile, vmi: Mapping[str, Any], kubevirt: KubeVirtConfig, nodes: NodeFacts
) -> Alignment:
    """The annotation that aligns the VMI, or why it cannot be aligned (refused or warned, per
    vmi.smtAlignment; Audit mode only warns)."""
    settings = profile.spec.vmi
    threads = nodes.threads_per_core
    if (settings is None or settings.smt_alignment == "Off" or threads < 2
            or lookup(vmi, *CPU, "dedicatedCpuPlacement") is not True
            or not whole_cores(profile, nodes)):
        return Alignment()
    count = exclusive_cpus(vmi)
    if count % threads == 0:
        return Alignment()
    isolated = lookup(vmi, *CPU, "isolateEmulatorThread") is True
    # The annotation evens the count only with two threads per core, and not always: KubeVirt
    # counts a supplemental pool's IO threads twice in the parity it completes.
    evens = (isolated and threads == PARITY and EVEN_PARITY not in _annotations(vmi)
             and exclusive_cpus(_with_parity(vmi)) % PARITY == 0)
    if evens and ALIGN_CPUS_GATE in kubevirt.feature_gates:
        return Alignment(patch=_annotate(vmi))
    vcpus = vcpu_count(vmi)
    fixes = [f"give it {vcpus + threads - count % threads} vCPUs (spec.domain.cpu.cores)"]
    if evens:
        fixes.append(f"turn on KubeVirt's {ALIGN_CPUS_GATE} feature gate (spec.configuration."
                     "developerConfiguration.featureGates), and kvtune annotates such VMIs "
                     f"{EVEN_PARITY} so that KubeVirt evens the count")
    why = (f"its pod asks for {count} dedicated CPUs ({vcpus} vCPUs"
           f"{' + 1 for the isolated emulator thread' if isolated else ''}), not a multiple of "
           f"the {threads} threads per core of HypervisorProfile {profile.name}'s nodes, whose "
           f"kubelets hand out whole cores only ({WHOLE_CORES}): the kubelet refuses such a pod "
           f"(SMTAlignmentError); {' or '.join(fixes)}")
    if settings.smt_alignment == "Refuse" and profile.spec.mode == "Enforce":
        return Alignment(refused=[why])
    return Alignment(warnings=[why])


def _annotations(vmi: Mapping[str, Any]) -> Mapping[str, Any]:
    found = lookup(vmi, "metadata", "annotations")
    return found if isinstance(found, Mapping) else {}


def _with_parity(vmi: Mapping[str, Any]) -> dict[str, Any]:
    """The VMI as `_annotate`'s patch leaves it."""
    metadata = {**(vmi.get("metadata") or {}), "annotations": {**_annotations(vmi),
                                                               EVEN_PARITY: ""}}
    return {**vmi, "metadata": metadata}


def _annotate(vmi: Mapping[str, Any]) -> JsonPatch:
    if not _annotations(vmi):
        return [{"op": "add", "path": "/metadata/annotations", "value": {EVEN_PARITY: ""}}]
    return [{"op": "add", "path": "/metadata/annotations/" + EVEN_PARITY.replace("/", "~1"),
             "value": ""}]
