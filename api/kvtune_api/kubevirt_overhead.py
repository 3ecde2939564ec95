"""KubeVirt's estimate of the host memory a VM needs beside its guest RAM, as one pure formula.

Why here: virt-launcher pods are OOM-killed when the memory reserved for QEMU and its helpers is
too small, and a flat 1 GiB per VM is wrong both ways. Two sides need KubeVirt's figure exactly:
the operator's webhook, which reads the inputs from a VMI (`kvtune_operator.vmi.overhead`), and
the node agent's audit of running VMs, which reads them from each libvirt domain. The two sides
may not import each other, so the formula lives in the API package they share, taking plain
numbers and flags rather than a VMI, and each side reads its inputs its own way.

The structure and constants follow GetMemoryOverhead in kubevirt/kubevirt
`pkg/hypervisor/kvm/hypervisorbackend.go`, including its rounding through kilobytes. One constant
depends on the KubeVirt version: QemuOverhead is 30Mi up to v1.9.x and 50Mi after (raised on main
by kubevirt/kubevirt#18388), so `qemu_overhead` picks it from the version the cluster runs. The
tests check the formula against KubeVirt v1.9.0's own code (hack/kubevirt-oracle). The figures are
kept apart in a typed breakdown so that they can be recorded on the VMI and read by a person.
"""

from __future__ import annotations

import dataclasses
import math
import re

Mi = 1024**2
Gi = 1024**3

# The `ps` RSS KubeVirt measured for each process of a virt-launcher pod. Shared libraries are
# counted once per process, which KubeVirt keeps as a safety margin.
VIRT_LAUNCHER_MONITOR = 25 * Mi
VIRT_LAUNCHER = 100 * Mi
VIRTLOGD = 25 * Mi
VIRTQEMUD = 40 * Mi
# QEMU itself, without its guest's RAM and page tables: 30Mi in KubeVirt up to v1.9.x, 50Mi after.
QEMU_UNTIL_V1_9 = 30 * Mi
QEMU_AFTER_V1_9 = 50 * Mi
HELPERS = VIRT_LAUNCHER_MONITOR + VIRT_LAUNCHER + VIRTLOGD + VIRTQEMUD
#: The newest KubeVirt release, assumed when the cluster's version is unknown.
NEWEST_RELEASE = (1, 9)

PAGE_TABLE_DIVISOR = 512  # one bit of page table per 512 bytes of guest RAM
PER_VCPU = 8 * Mi
IOTHREAD = 8 * Mi
VIDEO = 32 * Mi  # unless spec.domain.devices.autoattachGraphicsDevice is false
ARM64_PFLASH = 128 * Mi  # two 64Mi UEFI pflash devices on arm64
VFIO = 1 * Gi  # VFIO locks guest RAM plus MMIO space, commonly 1Gi on x86
DOWNWARD_METRICS = 1 * Mi  # a memory-backed emptyDir for the metrics disk
PROBE_BINARY = 100 * Mi  # virt-probe, once when any exec probe is set
PER_EXEC_PROBE = 10 * Mi
SEV = 256 * Mi
TPM = 53 * Mi  # the swtpm process
DEDICATED_OR_GUARANTEED = 100 * Mi


def qemu_overhead(version: str | None) -> int:
    """KubeVirt's QemuOverhead for `version` (the KubeVirt CR's status.observedKubeVirtVersion,
    e.g. "v1.9.0" or "v1.10.0-alpha.0.12+abc"); the newest release's when unknown or unreadable.
    A pre-release of v1.10 already carries the 50Mi of main."""
    found = re.match(r"v?(\d+)\.(\d+)", version or "")
    release = (int(found[1]), int(found[2])) if found else NEWEST_RELEASE
    return QEMU_UNTIL_V1_9 if release <= (1, 9) else QEMU_AFTER_V1_9


def _ceil_kilo(n: int) -> int:
    """n in units of 1000, rounded up (Quantity.ScaledValue(resource.Kilo))."""
    return -(-n // 1000)


def _ratio_extra(total: int, ratio: str | None) -> int:
    """What additionalGuestMemoryOverheadRatio adds: KubeVirt multiplies the total in kilobytes
    by (ratio - 1) as a float and truncates, so the result is whole kilobytes."""
    if not ratio:
        return 0
    try:
        factor = float(ratio)
    except ValueError:
        factor = math.nan
    if not (math.isfinite(factor) and factor >= 1.0):
        # KubeVirt's own webhook refuses such a ratio; below 1 the estimate would shrink.
        raise ValueError(
            f"KubeVirt spec.configuration.additionalGuestMemoryOverheadRatio: {ratio!r} is not "
            "a number of at least 1.0"
        )
    return int(_ceil_kilo(total) * (factor - 1.0)) * 1000


@dataclasses.dataclass(frozen=True)
class OverheadBreakdown:
    """KubeVirt's overhead estimate for one VMI, each component in bytes."""

    page_tables: int
    processes: int
    vcpus: int
    iothread: int
    video: int
    arm64_firmware: int
    vfio: int
    downward_metrics: int
    probes: int
    sev: int
    tpm: int
    dedicated_or_guaranteed: int
    added_overhead: int
    ratio: int

    @property
    def total(self) -> int:
        """The memory KubeVirt adds to the virt-launcher pod beside the guest RAM."""
        # Not dataclasses.astuple: it deep-copies every field, and the webhook asks for this
        # twice per admission.
        return sum(vars(self).values())

    def components(self) -> dict[str, int]:
        """The non-zero components by camelCase name, for an annotation a person reads."""
        return {
            _camel(f.name): value
            for f in dataclasses.fields(self)
            if (value := getattr(self, f.name))
        }


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.capitalize() for word in rest)


def estimate(
    *,
    guest_bytes: int,
    vcpus: int,
    video: bool = True,
    arm64: bool = False,
    vfio: bool = False,
    downward_metrics: bool = False,
    exec_probes: int = 0,
    sev: bool = False,
    tpm: bool = False,
    dedicated_or_guaranteed: bool = False,
    added_overhead: int = 0,
    ratio: str | None = None,
    qemu: int | None = None,
) -> OverheadBreakdown:
    """KubeVirt's overhead for a VM of this shape.

    `guest_bytes` is the memory request KubeVirt sizes page tables from, `exec_probes` the number
    of exec liveness/readiness probes, `added_overhead` reservedOverhead.addedOverhead in bytes,
    `ratio` the KubeVirt CR's spec.configuration.additionalGuestMemoryOverheadRatio (a string
    there too), and `qemu` the version's QemuOverhead (`qemu_overhead`; the newest release's when
    None).
    """
    base = OverheadBreakdown(
        page_tables=_ceil_kilo(guest_bytes) * 1000 // PAGE_TABLE_DIVISOR,
        processes=HELPERS + (qemu_overhead(None) if qemu is None else qemu),
        vcpus=PER_VCPU * vcpus,
        iothread=IOTHREAD,
        video=VIDEO if video else 0,
        arm64_firmware=ARM64_PFLASH if arm64 else 0,
        vfio=VFIO if vfio else 0,
        downward_metrics=DOWNWARD_METRICS if downward_metrics else 0,
        probes=exec_probes * PER_EXEC_PROBE + (PROBE_BINARY if exec_probes else 0),
        sev=SEV if sev else 0,
        tpm=TPM if tpm else 0,
        dedicated_or_guaranteed=DEDICATED_OR_GUARANTEED if dedicated_or_guaranteed else 0,
        added_overhead=added_overhead,
        ratio=0,
    )
    # The ratio is applied last, to everything above, as in KubeVirt.
    return dataclasses.replace(base, ratio=_ratio_extra(base.total, ratio))
