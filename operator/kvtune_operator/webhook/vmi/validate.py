"""Rejecting VMIs that contradict their profile, and warning when no node has room for one.

Why: the mutation fills in what a VMI leaves unset but never overrules what its author set
(`mutate.py` says why). A VMI that explicitly asks for something the profile's nodes cannot give,
or that would overcommit memory the profile forbids to overcommit, must be refused at admission
with a message that names the field and the fix, rather than run badly or sit in Pending. The
validating webhook sees the VMI after the mutating one, so these checks judge the shaped VMI.

In Audit mode nothing is refused: what would be refused is returned as warnings, which
`kubectl` prints, so a profile can be trialled without breaking anyone's VMs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kvtune_api.kubevirt_overhead import Gi, Mi
from kvtune_api.v1alpha1.profile import VmiSettings

from ...common.profiles import PROFILE_LABEL, Profile
from .kubevirt_config import (
    CPU_MANAGER_GATE,
    DEFAULT_KUBEVIRT,
    RESERVED_OVERHEAD_GATE,
    KubeVirtConfig,
)
from .overhead import memory_overhead
from .paths import CPU, MEMORY, RESOURCES
from .read import (
    VmiFieldError,
    check_given_quantities,
    effective_request,
    given,
    guest_bytes,
    guest_source,
    listed,
    lookup,
    memory_request_bytes,
    pod_memory_request_bytes,
    quantity,
    quantity_bytes,
    request_field,
    topology_vcpus,
    vcpu_count,
)
from .selection import SKIP_ANNOTATION, out_of_scope

OPT_OUT = f'or opt the VMI out with the annotation {SKIP_ANNOTATION}: "true"'

Findings = tuple[list[str], list[str]]
Check = Callable[[Profile, VmiSettings, Mapping[str, Any], KubeVirtConfig], Findings]


def validate_vmi(
    profile: Profile,
    vmi: Mapping[str, Any],
    *,
    namespace_labels: Mapping[str, str],
    kubevirt: KubeVirtConfig = DEFAULT_KUBEVIRT,
) -> Findings:
    """(errors, warnings) for a VMI `profile` selects; ([], []) for one it leaves alone.
    `kubevirt` is what the KubeVirt CR says (feature gates, overhead ratio, version)."""
    settings = profile.spec.vmi
    if settings is None or out_of_scope(profile, vmi, namespace_labels) is not None:
        return [], []
    errors: list[str] = []
    warnings: list[str] = []
    try:
        for check in CHECKS:
            found_errors, found_warnings = check(profile, settings, vmi, kubevirt)
            errors += found_errors
            warnings += found_warnings
    except VmiFieldError as unreadable:
        errors.append(str(unreadable))
    if profile.spec.mode == "Audit":
        return [], [f"Audit mode, would be refused: {e}" for e in errors] + warnings
    return errors, warnings


def explicit_conflicts(
    profile: Profile, settings: VmiSettings, vmi: Mapping[str, Any]
) -> list[str]:
    """What the mutating webhook refuses because KubeVirt's defaulting would hide it from the
    validating one: an explicit `false` against the profile (dropped when KubeVirt re-serialises
    the spec), and a VMI without a memory size (KubeVirt fills in one hugepage)."""
    check_given_quantities(vmi)
    name = profile.name
    errors = []
    if settings.dedicated_cpus and lookup(vmi, *CPU, "dedicatedCpuPlacement") is False:
        errors.append(
            f"spec.domain.cpu.dedicatedCpuPlacement is false, but HypervisorProfile {name} gives "
            f"its VMs dedicated CPUs (vmi.dedicatedCpus): remove the field or set it to true, "
            f"{OPT_OUT}"
        )
    if settings.isolate_emulator_thread and lookup(vmi, *CPU, "isolateEmulatorThread") is False:
        errors.append(
            f"spec.domain.cpu.isolateEmulatorThread is false, but HypervisorProfile {name} keeps "
            f"QEMU's own threads off the vCPUs (vmi.isolateEmulatorThread): remove the field or "
            f"set it to true, {OPT_OUT}"
        )
    if not (
        memory_request_bytes(vmi)
        or given(vmi, "limits", "memory") is not None
        or lookup(vmi, *MEMORY, "guest") is not None
    ):
        # KubeVirt refuses a VMI without a memory size, but not once hugepages are set: its guest
        # then gets one page. Refused while the author's VMI can still be seen as it was.
        errors.append(
            "the VMI gives its guest no memory size: set spec.domain.memory.guest or "
            "spec.domain.resources.requests.memory"
        )
    return errors + _guest_in_pages(settings, vmi)


def _guest_in_pages(settings: VmiSettings, vmi: Mapping[str, Any]) -> list[str]:
    """A guest that is not whole hugepages, said with the field and value its author wrote:
    the pod asks for the guest's RAM in pages, and kvtune pins memory.guest and raises the
    request from it, so later the author's figure could no longer be told from kvtune's."""
    size = lookup(vmi, *MEMORY, "hugepages", "pageSize") or settings.hugepage_size
    source = guest_source(vmi)
    if size is None or source is None:
        return []
    field, value = source
    page = quantity_bytes(size, "spec.domain.memory.hugepages.pageSize")
    if not page or quantity_bytes(value, field) % page == 0:
        return []
    return [
        f"{field} ({value}) sizes the guest, which is backed by {size} hugepages, but is not a "
        f"whole number of them: make it a multiple of {size}"
    ]


def _cpu(
    profile: Profile, settings: VmiSettings, vmi: Mapping[str, Any], kubevirt: KubeVirtConfig
) -> Findings:
    errors = explicit_conflicts(profile, settings, vmi)
    dedicated = lookup(vmi, *CPU, "dedicatedCpuPlacement") is True
    if lookup(vmi, *CPU, "isolateEmulatorThread") is True and not dedicated:
        errors.append(
            "spec.domain.cpu.isolateEmulatorThread: true needs spec.domain.cpu."
            "dedicatedCpuPlacement: true: set it, or remove isolateEmulatorThread"
        )
    warnings = []
    if dedicated:
        errors += _pinnable(profile.name, vmi)
        if kubevirt.installed and not kubevirt.cpu_manager:
            # virt-handler labels nodes kubevirt.io/cpumanager=true only with the gate, and the
            # pod of a VMI with dedicated CPUs asks for that label.
            warnings.append(
                f"the VMI gets dedicated CPUs, but KubeVirt's {CPU_MANAGER_GATE} feature gate is "
                "off, so no node is labelled kubevirt.io/cpumanager=true and the VMI would stay "
                f"Pending: add {CPU_MANAGER_GATE} to the KubeVirt CR's "
                "spec.configuration.developerConfiguration.featureGates"
            )
    return errors, warnings


def _pinnable(name: str, vmi: Mapping[str, Any]) -> list[str]:
    """What KubeVirt refuses of a VMI with dedicated CPUs, said with the fix before it does."""
    why = f"the VMI gets dedicated CPUs (HypervisorProfile {name}, vmi.dedicatedCpus)"
    errors = []
    arm64 = lookup(vmi, "spec", "architecture") == "arm64"
    threads = lookup(vmi, *CPU, "threads")
    most = 1 if arm64 else 2
    if isinstance(threads, int) and threads > most:
        errors.append(
            f"spec.domain.cpu.threads is {threads}, but {why} and KubeVirt pins at most {most} "
            f"thread(s) per core{' on arm64' if arm64 else ''}: use cores instead of threads"
        )
    vcpus = topology_vcpus(vmi)
    for kind in ("requests", "limits"):
        value = lookup(vmi, *RESOURCES, kind, "cpu")
        if value is None:
            continue
        cpus = quantity(value, f"spec.domain.resources.{kind}.cpu")
        if cpus != cpus.to_integral_value():
            errors.append(
                f"spec.domain.resources.{kind}.cpu is {value}, but {why}, which are whole CPUs: "
                "ask for a whole number of CPUs"
            )
        elif vcpus and cpus != vcpus:
            errors.append(
                f"spec.domain.resources.{kind}.cpu is {value}, but {why} and its topology "
                f"(sockets x cores x threads) has {vcpus} vCPUs: set it to {vcpus}, or remove "
                f"it and let the topology decide"
            )
        else:
            continue
        break  # the limit usually repeats the request: one message says it
    return errors


def _numa(
    profile: Profile, settings: VmiSettings, vmi: Mapping[str, Any], kubevirt: KubeVirtConfig
) -> Findings:
    if lookup(vmi, *CPU, "numa", "guestMappingPassthrough") is None:
        return [], []
    missing = []
    if lookup(vmi, *CPU, "dedicatedCpuPlacement") is not True:
        missing.append("spec.domain.cpu.dedicatedCpuPlacement: true")
    if lookup(vmi, *MEMORY, "hugepages", "pageSize") is None:
        missing.append("spec.domain.memory.hugepages.pageSize")
    if not missing:
        return [], []
    return [
        "spec.domain.cpu.numa.guestMappingPassthrough needs "
        + " and ".join(missing)
        + ": set them, or remove guestMappingPassthrough"
    ], []


def _memory(
    profile: Profile, settings: VmiSettings, vmi: Mapping[str, Any], kubevirt: KubeVirtConfig
) -> Findings:
    if profile.spec.memory.allow_overcommit:
        if lookup(vmi, *CPU, "dedicatedCpuPlacement") is not True:
            return [], []
        # KubeVirt itself wants the memory request equal to the limit with dedicated CPUs.
        return _unequal(vmi, "memory", "the VMI gets dedicated CPUs, for which KubeVirt "
                        "needs Guaranteed memory"), []
    forbids = (
        f"HypervisorProfile {profile.name} forbids memory overcommit "
        "(memory.allowOvercommit: false)"
    )
    errors = []
    if lookup(vmi, *RESOURCES, "overcommitGuestOverhead") is True:
        errors.append(
            f"spec.domain.resources.overcommitGuestOverhead is true, but {forbids}: remove the "
            "field or set it to false, so that the scheduler reserves KubeVirt's per-VM overhead"
        )
    guest = lookup(vmi, *MEMORY, "guest")
    request = request_field(vmi, "memory")
    if (
        guest is not None
        and request is not None
        and quantity(guest, "spec.domain.memory.guest") > quantity(request[1], request[0])
    ):
        # Quoted as written, so that the author finds the value in their own manifest.
        errors.append(
            f"spec.domain.memory.guest ({guest}) is above the memory request, "
            f"{request[0]} ({request[1]}), but {forbids}: give the guest at most "
            "spec.domain.resources.requests.memory, or raise the request"
        )
    return errors + _unequal(vmi, "memory", forbids), []


def _overhead(
    profile: Profile, settings: VmiSettings, vmi: Mapping[str, Any], kubevirt: KubeVirtConfig
) -> Findings:
    # Without a KubeVirt CR to read, the gates are unknown: KubeVirt's own admitter judges.
    if (lookup(vmi, *MEMORY, "reservedOverhead") is not None and kubevirt.installed
            and not kubevirt.reserved_overhead):
        return [
            "spec.domain.memory.reservedOverhead is set, but KubeVirt refuses it unless its "
            f"{RESERVED_OVERHEAD_GATE} feature gate is on: remove it (kvtune reserves the "
            "profile's memory.vmOverheadFloor through the memory request instead), or add "
            f"{RESERVED_OVERHEAD_GATE} to the KubeVirt CR's "
            "spec.configuration.developerConfiguration.featureGates"
        ], []
    if pod_memory_request_bytes(vmi, kubevirt.memory_overcommit) >= guest_bytes(vmi):
        return [], []  # the mutation reserves the floor (mutate._reserve_floor)
    floor = quantity_bytes(profile.spec.memory.vm_overhead_floor, "memory.vmOverheadFloor")
    held = memory_overhead(vmi, kubevirt).total
    if held >= floor:
        return [], []
    return [], [
        f"the VMI's pod reserves {_human(held)} for QEMU beside its guest, below the "
        f"{_human(floor)} of HypervisorProfile {profile.name} (memory.vmOverheadFloor), because "
        "its memory request is below its guest memory (overcommit): raise "
        "spec.domain.resources.requests.memory to the guest memory, or enable KubeVirt's "
        f"{RESERVED_OVERHEAD_GATE} feature gate so that kvtune can reserve it"
    ]


def _rollout(
    profile: Profile, settings: VmiSettings, vmi: Mapping[str, Any], kubevirt: KubeVirtConfig
) -> Findings:
    """A guest above the memory limit under vmRolloutStrategy: Stage, and a dedicated-CPU VMI
    whose pod can be OOM-killed with its guest not yet full."""
    errors, warnings = [], []
    guest = guest_bytes(vmi)
    limit = given(vmi, "limits", "memory")  # a zero limit is none, to KubeVirt's check too
    limit_field = "spec.domain.resources.limits.memory"
    if kubevirt.stage_rollout and limit is not None and guest > quantity_bytes(limit, limit_field):
        errors.append(
            f"spec.domain.memory.guest ({lookup(vmi, *MEMORY, 'guest')}) is above "
            f"{limit_field} ({limit}), which KubeVirt refuses while its KubeVirt CR sets "
            "spec.configuration.vmRolloutStrategy: Stage: raise the limit (and the request "
            "with it, with dedicated CPUs) to the guest memory, or remove the limit"
        )
    request = pod_memory_request_bytes(vmi, kubevirt.memory_overcommit)
    if lookup(vmi, *CPU, "dedicatedCpuPlacement") is True and request < guest:
        held = memory_overhead(vmi, kubevirt).total
        warnings.append(
            f"the VMI gets dedicated CPUs, for which KubeVirt sets its pod's memory limit to "
            f"its request: the pod is OOM-killed once it uses more than {_human(request)} "
            f"(spec.domain.resources.requests.memory) plus {_human(held)} of KubeVirt's "
            f"overhead, though its guest has {_human(guest)}; set the memory request to the "
            "guest memory"
        )
    if kubevirt.version_note:
        warnings.append(kubevirt.version_note)
    return errors, warnings


def _guaranteed_cpu(
    profile: Profile, settings: VmiSettings, vmi: Mapping[str, Any], kubevirt: KubeVirtConfig
) -> Findings:
    if not settings.dedicated_cpus and profile.spec.cpu.allow_overcommit:
        return [], []
    why = (
        f"HypervisorProfile {profile.name} gives VMs whole CPUs "
        "(vmi.dedicatedCpus, or cpu.allowOvercommit: false)"
    )
    return _unequal(vmi, "cpu", why), []


def _unequal(vmi: Mapping[str, Any], name: str, why: str) -> list[str]:
    # A zero side is none, as KubeVirt's admitter and pod renderer read it.
    request = given(vmi, "requests", name)
    limit = given(vmi, "limits", name)
    if request is None or limit is None:
        return []
    field = "spec.domain.resources.{}." + name
    if quantity(request, field.format("requests")) == quantity(limit, field.format("limits")):
        return []
    return [
        f"spec.domain.resources.requests.{name} ({request}) differs from limits.{name} "
        f"({limit}), but {why}: set both to the same value"
    ]


def _hugepages(
    profile: Profile, settings: VmiSettings, vmi: Mapping[str, Any], kubevirt: KubeVirtConfig
) -> Findings:
    size = lookup(vmi, *MEMORY, "hugepages", "pageSize")
    if size is None:
        return [], []
    name = profile.name
    allocated = sorted(p.size for p in profile.spec.memory.hugepages.pages)
    if not allocated:
        return [], [
            f"spec.domain.memory.hugepages.pageSize is {size}, but HypervisorProfile {name} "
            "allocates no hugepages on its nodes (memory.hugepages.pages is empty): the VMI can "
            "only start where someone else allocated them"
        ]
    errors = []
    if size not in allocated:
        errors.append(
            f"spec.domain.memory.hugepages.pageSize is {size}, but the nodes of HypervisorProfile "
            f"{name} allocate only {', '.join(allocated)} pages, so the VMI would never be "
            f"scheduled: use one of those sizes, {OPT_OUT}"
        )
    page = quantity_bytes(size, "spec.domain.memory.hugepages.pageSize")
    # KubeVirt checks the memory request, else the guest, else the limit; the guest is judged
    # with the explicit conflicts (`_guest_in_pages`). A request kvtune raised is whole pages,
    # so one that is not is the author's, quoted as written.
    request = lookup(vmi, *RESOURCES, "requests", "memory")
    if page and memory_request_bytes(vmi) % page and not _guest_in_pages(settings, vmi):
        errors.append(
            f"spec.domain.resources.requests.memory ({request}) is not a whole number of {size} "
            f"hugepages, which KubeVirt refuses: make it a multiple of {size}"
        )
    return errors, []


def _scheduling(
    profile: Profile, settings: VmiSettings, vmi: Mapping[str, Any], kubevirt: KubeVirtConfig
) -> Findings:
    name = profile.name
    wanted = lookup(vmi, "spec", "nodeSelector", PROFILE_LABEL)
    if wanted is None or wanted == name:
        return [], []
    return [
        f"spec.nodeSelector asks for {PROFILE_LABEL}={wanted}, but the VMI is selected by "
        f"HypervisorProfile {name}: remove that nodeSelector entry, or change the VMI's labels "
        f"or namespace so that {wanted}'s vmi selectors pick it instead"
    ], []


#: Interface bindings that give a VM a NIC of its own: an SR-IOV VF, or macvtap on a host NIC
#: (KubeVirt's deprecated core binding, or the macvtap network binding plugin).
DEDICATED_BINDINGS = ("sriov", "macvtap")
BINDINGS = ("bridge", "masquerade", "sriov", "macvtap", "passt", "slirp")


def _binding(interface: Mapping[str, Any]) -> str:
    plugin = lookup(interface, "binding", "name")
    if isinstance(plugin, str):
        return plugin
    return next((b for b in BINDINGS if lookup(interface, b) is not None), "bridge")


def _networking(
    profile: Profile, settings: VmiSettings, vmi: Mapping[str, Any], kubevirt: KubeVirtConfig
) -> Findings:
    """A VMI that reaches the network only through software switches shared with other pods."""
    if settings.dedicated_networking == "Off":
        return [], []
    devices = lookup(vmi, "spec", "domain", "devices") or {}
    interfaces = listed(vmi, "spec", "domain", "devices", "interfaces")
    networks = {n.get("name"): n for n in listed(vmi, "spec", "networks")
                if isinstance(n, Mapping) and isinstance(n.get("name"), str)}
    if not interfaces and lookup(devices, "autoattachPodInterface") is not False:
        # KubeVirt's defaulting gives such a VMI one bridge-bound interface on the pod network.
        interfaces, networks = [{"name": "default", "bridge": {}}], {"default": {"pod": {}}}
    shared, dedicated = [], False
    for index, interface in enumerate(interfaces):
        if not isinstance(interface, Mapping):
            continue
        name, binding = interface.get("name"), _binding(interface)
        network = (networks.get(name) if isinstance(name, str) else None) or {}
        where = f"spec.domain.devices.interfaces[{index}] ({name}, {binding} binding)"
        if binding in DEDICATED_BINDINGS:
            dedicated = True
        elif lookup(network, "multus") is not None:
            target = lookup(network, "multus", "networkName")
            shared.append(f"{where} on Multus network {target}, a software bridge or switch "
                          "other pods can share")
        elif settings.pod_network == "Shared":
            shared.append(f"{where} on the pod network, which every pod of the node shares")
    if dedicated and not shared:
        return [], []
    problems = shared + ([] if dedicated else ["no interface uses SR-IOV or macvtap"])
    message = (
        f"HypervisorProfile {profile.name} gives VMs NICs of their own "
        f"(vmi.dedicatedNetworking: {settings.dedicated_networking}), but "
        + "; ".join(problems)
        + ": attach the VMI's traffic through an SR-IOV interface (sriov: {}) or macvtap "
        "(binding: {name: macvtap}) on a Multus network"
        + ("; if the pod network carries only management traffic, set vmi.podNetwork: "
           "ManagementOnly" if settings.pod_network == "Shared" else "")
    )
    if settings.dedicated_networking == "Require":
        return [message], []
    return [], [message]


CHECKS: tuple[Check, ...] = (
    _cpu, _numa, _memory, _overhead, _rollout, _guaranteed_cpu, _hugepages, _scheduling,
    _networking,
)


@dataclasses.dataclass(frozen=True)
class NodeCapacity:
    """What one ready node of a profile has free for another VMI (allocatable minus requested)."""

    node: str
    cpu_millis: int
    """Free CPU in thousandths of a CPU."""
    memory_bytes: int
    """Free `memory`."""
    hugepages_bytes: Mapping[str, int] = dataclasses.field(default_factory=dict)
    """Free `hugepages-<size>` by page size ("2Mi", "1Gi")."""


@dataclasses.dataclass(frozen=True)
class VmiDemand:
    """What the VMI's virt-launcher pod requests from a node."""

    cpu_millis: int
    memory_bytes: int
    """`memory`: guest RAM plus KubeVirt's overhead, or only the overhead with hugepages."""
    hugepage_size: str | None
    hugepages_bytes: int

    def fits(self, node: NodeCapacity) -> bool:
        hugepages = node.hugepages_bytes.get(self.hugepage_size or "", 0)
        return (
            self.cpu_millis <= node.cpu_millis
            and self.memory_bytes <= node.memory_bytes
            and self.hugepages_bytes <= hugepages
        )


def vmi_demand(vmi: Mapping[str, Any], kubevirt: KubeVirtConfig = DEFAULT_KUBEVIRT) -> VmiDemand:
    """The requests KubeVirt's virt-controller renders into the VMI's pod (its resource renderer
    at the KubeVirt version the tests pin, for the VMI as KubeVirt's defaulting leaves it)."""
    return VmiDemand(_cpu_millis(vmi, kubevirt), *_memory_demand(vmi, kubevirt))


def _cpu_millis(vmi: Mapping[str, Any], kubevirt: KubeVirtConfig) -> int:
    vcpus = vcpu_count(vmi)
    if lookup(vmi, *CPU, "dedicatedCpuPlacement") is True:
        # Whole CPUs for the vCPUs, and one more for an isolated emulator thread.
        return 1000 * (vcpus + (lookup(vmi, *CPU, "isolateEmulatorThread") is True))
    request = effective_request(vmi, "cpu")  # KubeVirt's defaulting copies a limit to a request
    if request is not None:
        return math.ceil(request * 1000)
    return math.ceil(vcpus * 1000 / kubevirt.cpu_allocation_ratio)


def _memory_demand(vmi: Mapping[str, Any], kubevirt: KubeVirtConfig) -> tuple[int, str | None, int]:
    """(`memory`, hugepage size, `hugepages-<size>`) of the pod's requests."""
    overhead = memory_overhead(vmi, kubevirt).total
    request = pod_memory_request_bytes(vmi, kubevirt.memory_overcommit)
    size = lookup(vmi, *MEMORY, "hugepages", "pageSize")
    if size is None:
        if lookup(vmi, *RESOURCES, "overcommitGuestOverhead") is True:
            overhead = 0  # KubeVirt then puts the overhead in the limit only
        return request + overhead, None, 0
    # With hugepages the guest's RAM is requested as hugepages-<size>, and `memory` holds the
    # overhead plus what the request holds beyond the guest.
    guest = guest_bytes(vmi)
    hugepages = min(request, guest) if guest else request
    return overhead + max(0, request - guest) if guest else overhead, str(size), hugepages


def capacity_warning(
    vmi: Mapping[str, Any],
    nodes: Iterable[NodeCapacity],
    kubevirt: KubeVirtConfig = DEFAULT_KUBEVIRT,
) -> str | None:
    """A warning when none of `nodes` (the profile's ready nodes) has room for the VMI, counting
    KubeVirt's overhead; None when one has."""
    demand = vmi_demand(vmi, kubevirt)
    # Stops at the first node with room: a profile may have thousands, and most VMIs fit.
    checked: list[NodeCapacity] = []
    for node in nodes:
        if demand.fits(node):
            return None
        checked.append(node)
    needs = _describe(
        demand.cpu_millis, demand.memory_bytes, demand.hugepage_size, demand.hugepages_bytes
    )
    if not checked:
        return f"no ready node of the profile to run this VMI, which needs {needs}"
    roomiest = sorted(checked, key=lambda n: (-n.memory_bytes, n.node))[:3]
    free = "; ".join(
        f"{n.node} has "
        + _describe(
            n.cpu_millis,
            n.memory_bytes,
            demand.hugepage_size,
            n.hugepages_bytes.get(demand.hugepage_size or "", 0),
        )
        for n in roomiest
    )
    return (
        f"no ready node of the profile has room for this VMI, which needs {needs} including "
        f"KubeVirt's overhead; it would stay Pending. Most free: {free}"
    )


def _describe(cpu_millis: int, memory: int, size: str | None, hugepages: int) -> str:
    text = f"{cpu_millis / 1000:g} CPU, {_human(memory)} memory"
    return text + (f", {_human(hugepages)} of hugepages-{size}" if size else "")


def _human(n: int) -> str:
    return f"{n / Gi:.2f}Gi" if n >= Gi else f"{math.ceil(n / Mi)}Mi"
