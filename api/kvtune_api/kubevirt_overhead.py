"""KubeVirt's estimate of the host memory a VM needs beside its guest RAM, as one pure formula.

Why here: virt-launcher pods are OOM-killed when the memory reserved for QEMU and its helpers is
too small, and a flat 1 GiB per VM is wrong both ways. Two sides need KubeVirt's figure exactly:
the operator's webhook, which reads the inputs from a VMI
(`kvtune_operator.webhook.vmi.overhead`), and the node agent's audit of running VMs, which reads
them from each libvirt domain. The two sides may not import each other, so the formula lives in
the API package they share, taking plain numbers and flags rather than a VMI, and each side reads
its inputs its own way.

The structure and constants follow GetMemoryOverhead in kubevirt/kubevirt
`pkg/hypervisor/kvm/hypervisorbackend.go`, including its rounding through kilobytes. One constant
depends on the KubeVirt version: QemuOverhead is 30Mi up to v1.9.x and 50Mi after (raised on main
by kubevirt/kubevirt#18388), so `qemu_overhead` picks it from the version the cluster runs, read
as KubeVirt reads versions, and takes the larger where the version cannot be placed. The
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
#: The newest KubeVirt release, assumed where no KubeVirt is installed to ask.
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


#: The parts of a version as github.com/coreos/go-semver takes them, which KubeVirt's
#: virt-operator parses versions with (after trimming one "v"): three dotted integers (Go's
#: ParseInt: an optional "+", digits), a -prerelease and +metadata of dotted identifiers.
_NUMBER = re.compile(r"\+?[0-9]+")
_IDENTIFIERS = re.compile(r"[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*")


def parse_version(version: str) -> tuple[int, int, list[str]] | None:
    """(major, minor, prerelease identifiers) as go-semver's Version.Set reads `version`, or
    None where it refuses it. Builds carry `git describe` turned semver by KubeVirt's
    hack/version.sh: v1.9.0-beta.0.12+<sha> is 12 commits past v1.9.0-beta.0."""
    rest, _, metadata = version.removeprefix("v").partition("+")
    rest, _, pre = rest.partition("-")
    parts = rest.split(".", 2)
    if len(parts) != 3 or not all(_NUMBER.fullmatch(p) for p in parts):
        return None
    if any(ids and not _IDENTIFIERS.fullmatch(ids) for ids in (pre, metadata)):
        return None
    return int(parts[0]), int(parts[1]), pre.split(".") if pre else []


#: The last minor release with the 30Mi constant.
LAST_30MI = (1, 9)


def qemu_overhead_for(version: str | None) -> tuple[int, str | None]:
    """KubeVirt's QemuOverhead for `version` (the KubeVirt CR's status.observedKubeVirtVersion),
    and why it is a guess when it is one. None is a default installation of the newest release.

    The beta.0 tag of a minor release is where its release branch leaves main, so a build
    described as commits past it (v1.9.0-beta.0.N+sha) is either main, which has 50Mi, or the
    release branch before its next tag, which has 30Mi; a version that is not semver at all
    (a nightly tag such as 20260301_1a2b3c4) cannot be placed either, and KubeVirt's own
    operator takes such a version for a newer one. Both get the larger, safe figure."""
    if version is None:
        return QEMU_UNTIL_V1_9, None
    found = parse_version(version)
    if found is None:
        return QEMU_AFTER_V1_9, (
            f"KubeVirt's version {version!r} is not a release version (a nightly or custom "
            f"build), so whether its QEMU overhead is {QEMU_UNTIL_V1_9 // Mi}Mi (up to "
            f"v1.9) or {QEMU_AFTER_V1_9 // Mi}Mi (after) is unknown: kvtune counts the larger")
    major, minor, pre = found
    release = (major, minor)
    if release == LAST_30MI and pre[:2] == ["beta", "0"] and len(pre) > 2:
        return QEMU_AFTER_V1_9, (
            f"KubeVirt's version {version!r} is a build past the v{release[0]}.{release[1]}.0-"
            "beta.0 tag, which both main (QEMU overhead "
            f"{QEMU_AFTER_V1_9 // Mi}Mi) and the release branch ({QEMU_UNTIL_V1_9 // Mi}Mi) "
            "carry: kvtune counts the larger")
    return (QEMU_UNTIL_V1_9 if release <= LAST_30MI else QEMU_AFTER_V1_9), None


def qemu_overhead(version: str | None) -> int:
    """KubeVirt's QemuOverhead for `version` (see `qemu_overhead_for`)."""
    return qemu_overhead_for(version)[0]


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
