"""KubeVirt's overhead estimate, checked against sums worked by hand from its formula.

Constants (kubevirt/kubevirt pkg/hypervisor/kvm/hypervisorbackend.go): page tables = the memory
request / 512 (through whole kilobytes), processes 25 + 100 + 25 + 40 + 50 = 240Mi after v1.9 (the
sums below; `AFTER_V1_9`), 25 + 100 + 25 + 40 + 30 = 220Mi up to v1.9, 8Mi per vCPU, 8Mi IOThread,
32Mi video, 100Mi with dedicated CPUs or Guaranteed QoS, 1Gi with a VFIO device. KubeVirt v1.9.0's
own code checks the same function in test_kubevirt_acceptance.py.
"""

from __future__ import annotations

import pytest
from kvtune_operator.webhook.vmi import KubeVirtConfig
from kvtune_operator.webhook.vmi.overhead import memory_overhead
from kvtune_operator.webhook.vmi.read import VmiFieldError, vcpu_count

from webhook import Obj, make_vmi

Mi = 1024**2
Gi = 1024**3

SRIOV_INTERFACE = {"name": "vf", "sriov": {}}
AFTER_V1_9 = KubeVirtConfig(version="v1.10.0-alpha.0.123+5c1a0f3")


def ratio(value: str | None) -> KubeVirtConfig:
    return KubeVirtConfig(overhead_ratio=value, version=AFTER_V1_9.version)


def dedicated_4x8(**devices: object) -> Obj:
    """4 vCPUs, 8Gi, dedicated CPUs, requests equal to limits."""
    both = {"cpu": "4", "memory": "8Gi"}
    return make_vmi(
        {
            "cpu": {"cores": 4, "dedicatedCpuPlacement": True},
            "devices": dict(devices),
            "resources": {"requests": dict(both), "limits": dict(both)},
        }
    )


@pytest.mark.parametrize(
    ("vmi", "expected"),
    [
        pytest.param(
            dedicated_4x8(),
            # page tables 8Gi/512 = 16Mi; processes 240; vCPUs 4*8 = 32; IOThread 8; video 32;
            # dedicated 100
            (16 + 240 + 4 * 8 + 8 + 32 + 100) * Mi,  # = 428Mi
            id="4 vCPU / 8Gi with dedicated CPUs",
        ),
        pytest.param(
            dedicated_4x8(interfaces=[SRIOV_INTERFACE]),
            (16 + 240 + 4 * 8 + 8 + 32 + 100 + 1024) * Mi,  # = 1452Mi: plus 1Gi for VFIO
            id="the same with an SR-IOV interface",
        ),
        pytest.param(
            dedicated_4x8(autoattachGraphicsDevice=False),
            (16 + 240 + 4 * 8 + 8 + 100) * Mi,  # = 396Mi: no 32Mi of video RAM
            id="the same with graphics off",
        ),
        pytest.param(
            dedicated_4x8(hostDevices=[{"name": "nvme", "deviceName": "x/nvme"}]),
            (16 + 240 + 4 * 8 + 8 + 32 + 100 + 1024) * Mi,
            id="the same with a host device",
        ),
        pytest.param(
            make_vmi({"resources": {"requests": {"memory": "1Gi"}}}),
            # KubeVirt's own base case: 1Gi/512 = 2Mi; 240 + 8 IOThread + 32 video; 1 vCPU = 8
            (2 + 240 + 8 + 32 + 8) * Mi,  # = 290Mi
            id="KubeVirt's minimal VMI with 1Gi",
        ),
    ],
)
def test_the_estimate_matches_the_hand_worked_sum(vmi: Obj, expected: int) -> None:
    assert memory_overhead(vmi, AFTER_V1_9).total == expected


def test_a_ratio_of_two_doubles_the_total_through_whole_kilobytes() -> None:
    base = (16 + 240 + 4 * 8 + 8 + 32 + 100) * Mi  # 428Mi = 448790528 bytes
    assert base == 448_790_528
    # KubeVirt: extra = int(ceil(448790528 / 1000) * (2.0 - 1)) kilobytes = 448791 * 1000 bytes
    expected = 448_790_528 + 448_791 * 1000
    assert memory_overhead(dedicated_4x8(), ratio("2.0")).total == expected == 897_581_528


def test_a_fractional_ratio_truncates_to_whole_kilobytes() -> None:
    # 428Mi: ceil(448790528 / 1000) = 448791 kB; 448791 * 0.5 = 224395.5 -> 224395 kB
    assert memory_overhead(dedicated_4x8(), ratio("1.5")).ratio == 224_395_000


@pytest.mark.parametrize("value", ["abc", "0.5", "nan", "inf"])
def test_a_ratio_kubevirt_would_refuse_is_an_error(value: str) -> None:
    with pytest.raises(ValueError, match="additionalGuestMemoryOverheadRatio"):
        memory_overhead(dedicated_4x8(), ratio(value))


@pytest.mark.parametrize("value", [None, ""])
def test_no_ratio_adds_nothing(value: str | None) -> None:
    assert memory_overhead(dedicated_4x8(), ratio(value)).ratio == 0


BASE_1GI = (2 + 240 + 8 + 32 + 8) * Mi  # the minimal VMI with 1Gi, as above


@pytest.mark.parametrize(
    ("spec", "extra"),
    [
        pytest.param({"livenessProbe": {"exec": {"command": ["true"]}}}, 10 + 100, id="one probe"),
        pytest.param(
            {
                "livenessProbe": {"exec": {"command": ["true"]}},
                "readinessProbe": {"exec": {"command": ["true"]}},
            },
            10 + 10 + 100,
            id="two exec probes",
        ),
        pytest.param({"readinessProbe": {"tcpSocket": {"port": 22}}}, 0, id="non-exec probe"),
        pytest.param({"volumes": [{"name": "m", "downwardMetrics": {}}]}, 1, id="downward metrics"),
        pytest.param({"architecture": "arm64"}, 128, id="arm64 pflash"),
    ],
)
def test_spec_level_extras_add_their_constants(spec: Obj, extra: int) -> None:
    vmi = make_vmi({"resources": {"requests": {"memory": "1Gi"}}}, **spec)
    assert memory_overhead(vmi, AFTER_V1_9).total == BASE_1GI + extra * Mi


@pytest.mark.parametrize(
    ("domain", "extra"),
    [
        pytest.param({"devices": {"tpm": {}}}, 53, id="a TPM"),
        pytest.param({"devices": {"tpm": {"enabled": False}}}, 0, id="a disabled TPM"),
        pytest.param({"devices": {"gpus": [{"name": "g", "deviceName": "x/g"}]}}, 1024, id="GPU"),
        pytest.param({"launchSecurity": {"sev": {}}}, 256, id="SEV"),
        pytest.param({"launchSecurity": {"snp": {}}}, 256, id="SEV-SNP"),
        pytest.param({"memory": {"reservedOverhead": {"addedOverhead": "100Mi"}}}, 100, id="added"),
        pytest.param({"cpu": {"cores": 2, "sockets": 2, "threads": 2}}, 7 * 8, id="8 vCPUs"),
    ],
)
def test_domain_extras_add_their_constants(domain: Obj, extra: int) -> None:
    vmi = make_vmi({"resources": {"requests": {"memory": "1Gi"}}, **domain})
    assert memory_overhead(vmi, AFTER_V1_9).total == BASE_1GI + extra * Mi


def test_guaranteed_qos_without_dedicated_cpus_also_adds_100mi() -> None:
    both = {"cpu": "4", "memory": "1Gi"}
    vmi = make_vmi({"resources": {"requests": dict(both), "limits": dict(both)}})
    # 4 vCPUs from the CPU limit: 3 more than the base case's one, and 100Mi for Guaranteed
    assert memory_overhead(vmi, AFTER_V1_9).total == BASE_1GI + (3 * 8 + 100) * Mi


@pytest.mark.parametrize(
    ("domain", "vcpus"),
    [
        pytest.param({}, 1, id="nothing set gives one"),
        pytest.param({"cpu": {"cores": 4}}, 4, id="cores alone"),
        pytest.param({"cpu": {"sockets": 2, "threads": 2}}, 4, id="unset cores count as one"),
        pytest.param({"resources": {"requests": {"cpu": "3"}}}, 3, id="the request"),
        pytest.param(
            {"resources": {"requests": {"cpu": "3"}, "limits": {"cpu": "5"}}}, 5, id="lim"
        ),
        pytest.param({"resources": {"limits": {"cpu": "1500m"}}}, 2, id="a fraction rounds up"),
        pytest.param(
            {"cpu": {"cores": 2}, "resources": {"limits": {"cpu": "6"}}}, 2, id="topology wins"
        ),
    ],
)
def test_the_vcpu_count_follows_kubevirts_defaulting(domain: Obj, vcpus: int) -> None:
    assert vcpu_count(make_vmi(domain)) == vcpus


@pytest.mark.parametrize(
    ("domain", "page_tables"),
    [
        pytest.param({"resources": {"requests": {"memory": "8Gi"}}}, 16 * Mi, id="request"),
        # KubeVirt's defaulting leaves the memory request unset, and sizes page tables from it.
        pytest.param({"resources": {"limits": {"memory": "8Gi"}}}, 0, id="limit alone"),
        pytest.param({"memory": {"guest": "8Gi"}}, 0, id="guest alone"),
        # 1G = 10^9 bytes = 1000000 kB exactly; 10^9 // 512 = 1953125
        pytest.param({"resources": {"requests": {"memory": "1G"}}}, 1_953_125, id="decimal"),
        pytest.param({}, 0, id="no memory at all"),
    ],
)
def test_page_tables_are_sized_from_the_memory_request(domain: Obj, page_tables: int) -> None:
    assert memory_overhead(make_vmi(domain)).page_tables == page_tables


@pytest.mark.parametrize(
    ("version", "processes"),
    [
        pytest.param(None, 220 * Mi, id="unknown: the newest release, v1.9"),
        pytest.param("v1.9.0", 220 * Mi, id="v1.9.0"),
        pytest.param("v1.8.2", 220 * Mi, id="v1.8.2"),
        pytest.param("v1.10.0", 240 * Mi, id="v1.10.0"),
        pytest.param("v1.10.0-alpha.0.12+abc", 240 * Mi, id="a v1.10 pre-release"),
        pytest.param("v1.9.0-rc.1", 220 * Mi, id="a v1.9 release candidate"),
        pytest.param("v1.9.0-beta.0", 220 * Mi, id="the v1.9 beta.0 tag itself"),
        pytest.param("v1.9.2-4+0123456789abcd", 220 * Mi, id="release branch past v1.9.2"),
        pytest.param("v1.9.0-rc.0.7+0123456789abcd", 220 * Mi, id="release branch past rc.0"),
        pytest.param("v1.8.0-beta.0.40+0123456789abcd", 220 * Mi, id="main while v1.9 grew"),
        pytest.param("v2.0.0", 240 * Mi, id="a later major release"),
        pytest.param("1.10.0", 240 * Mi, id="without the v"),
        pytest.param("v1.09.0", 220 * Mi, id="a leading zero, which Go's ParseInt takes"),
        pytest.param("v1.10.0-rc.1", 240 * Mi, id="a v1.10 release candidate"),
        pytest.param("v1.9.0+dirty", 220 * Mi, id="v1.9.0 built from a dirty tree"),
        pytest.param("1.9.0", 220 * Mi, id="v1.9.0 without the v"),
        pytest.param("v1.9.1-dirty", 220 * Mi, id="a dirty tree at a tag (hack/version.sh)"),
    ],
)
def test_qemus_share_follows_the_kubevirt_version(version: str | None, processes: int) -> None:
    config = KubeVirtConfig(version=version)
    assert memory_overhead(dedicated_4x8(), config).processes == processes
    assert config.version_note is None


@pytest.mark.parametrize(
    ("version", "why"),
    [
        pytest.param("v1.9.0-beta.0.123+5c1a0f3e2d1b4a", "past the v1.9.0-beta.0 tag",
                     id="main after the release branch was cut, or that branch: the larger"),
        pytest.param("v1.9.0-beta.0.123+5c1a0f3e2d1b4a-dirty", "past the v1.9.0-beta.0 tag",
                     id="the same built from a dirty tree (hack/version.sh appends -dirty)"),
        pytest.param("20260301_1a2b3c4", "not a release version", id="a nightly tag"),
        pytest.param("devel", "not a release version", id="a custom image tag"),
        pytest.param("v1.9", "not a release version", id="not semver: no patch"),
        pytest.param("latest", "not a release version", id="latest"),
        pytest.param("v1.10.0-beta_1", "not a release version", id="a bad prerelease"),
        pytest.param("v 1.10.0", "not a release version", id="a space"),
    ],
)
def test_a_version_that_cannot_be_placed_takes_the_larger_figure_and_says_so(
    version: str, why: str
) -> None:
    config = KubeVirtConfig(installed=True, version=version)

    assert memory_overhead(dedicated_4x8(), config).processes == 240 * Mi
    assert config.version_note is not None and why in config.version_note
    assert "counts the larger" in config.version_note


def test_an_installed_kubevirt_without_a_version_yet_takes_the_larger_figure() -> None:
    config = KubeVirtConfig.from_kubevirt({}, {})

    assert memory_overhead(dedicated_4x8(), config).processes == 240 * Mi
    assert "observedKubeVirtVersion" in (config.version_note or "")


def test_the_breakdown_names_only_the_non_zero_components_in_camel_case() -> None:
    components = memory_overhead(dedicated_4x8(), AFTER_V1_9).components()
    assert components == {
        "pageTables": 16 * Mi,
        "processes": 240 * Mi,
        "vcpus": 32 * Mi,
        "iothread": 8 * Mi,
        "video": 32 * Mi,
        "dedicatedOrGuaranteed": 100 * Mi,
    }


@pytest.mark.parametrize(
    ("domain", "field"),
    [
        ({"resources": {"requests": {"memory": "lots"}}}, "spec.domain.resources.requests.memory"),
        ({"cpu": {"cores": "4"}}, "spec.domain.cpu.cores"),
        ({"memory": {"reservedOverhead": {"addedOverhead": "x"}}}, "addedOverhead"),
    ],
)
def test_an_unreadable_field_is_named_in_the_error(domain: Obj, field: str) -> None:
    with pytest.raises(VmiFieldError, match=field.replace(".", r"\.")):
        memory_overhead(make_vmi(domain))
