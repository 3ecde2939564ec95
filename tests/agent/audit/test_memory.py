"""The memory account, against sums worked by hand.

Overhead per VM (KubeVirt's formula, kvtune_api.kubevirt_overhead): page tables guest/512 (through
whole kilobytes) + 220Mi processes (KubeVirt v1.9's, the newest release, assumed when the
agent does not know the cluster's version) + 8Mi per vCPU + 8Mi IOThread + 32Mi video + 100Mi with
dedicated (pinned) CPUs + 1Gi with a VFIO device; at least the profile's vmOverheadFloor.

Budgets: ordinary memory = MemTotal - every hugepage pool - what the kubelet keeps from pods (its
default hard eviction threshold, 100Mi, where it sets nothing); a VM without hugepages takes guest +
overhead from it, a VM with hugepages takes only its overhead from it and its guest memory (in
whole pages) from its size's pool.
"""

from __future__ import annotations

from typing import Any

import pytest
from kvtune_agent.audit.checks import AuditPolicy, account, overhead_kib
from kvtune_agent.audit.domains import Domain, parse_domain_xml
from kvtune_api.v1alpha1.host import HostReport, KubeletReport, MemoryReport, ReservedMemory

from .builders import domain_xml, two_node_host

MiB = 1024  # in KiB
GiB = 1024 * MiB
#: The kubelet's default evictionHard memory.available, kept from pods on every host.
EVICTION = 100 * MiB
PINNED_4: dict[str, Any] = {"vcpus": 4, "pins": ["0", "1", "2", "3"]}


def dom(name: str = "vm", **kwargs: Any) -> Domain:
    return parse_domain_xml(domain_xml(name, **kwargs))


@pytest.mark.parametrize(
    ("domain", "floor", "expected"),
    [
        pytest.param(
            dom(memory_mib=8192, **PINNED_4), 0,
            (16 + 220 + 4 * 8 + 8 + 100) * MiB,  # = 376 MiB
            id="4 pinned vCPUs, 8 GiB, no video",
        ),
        pytest.param(
            dom(memory_mib=8192, video=True, **PINNED_4), 0,
            (16 + 220 + 4 * 8 + 8 + 32 + 100) * MiB,  # = 408 MiB, as the webhook's own test
            id="the same with video",
        ),
        pytest.param(
            dom(memory_mib=8192, nics=[("hostdev", "0000:3b:02.0")], **PINNED_4), 0,
            (16 + 220 + 4 * 8 + 8 + 100 + 1024) * MiB,  # = 1400 MiB
            id="the same with an SR-IOV VF",
        ),
        pytest.param(
            dom(memory_mib=1024, vcpus=1), 0,
            (2 + 220 + 8 + 8) * MiB,  # = 238 MiB: floating, so no 100Mi for dedicated CPUs
            id="1 floating vCPU, 1 GiB",
        ),
        pytest.param(
            dom(memory_mib=8192, **PINNED_4), 1 << 30, GiB, id="raised to a 1 GiB floor",
        ),
    ],
)  # fmt: skip
def test_overhead_is_kubevirts_estimate_at_least_the_floor(
    domain: Domain, floor: int, expected: int
) -> None:
    assert overhead_kib(domain, floor) == expected


def test_hugepage_vms_take_guest_memory_from_their_pool_and_overhead_from_ordinary() -> None:
    # 64 GiB host with a 16 x 1Gi pool: ordinary capacity 64 - 16 = 48 GiB, less the eviction.
    host = two_node_host(total_gib=64, pools=[(1 << 20, 16)])
    plain = dom("plain", memory_mib=8192, **PINNED_4)  # 8 GiB + 376 MiB
    huge = dom("huge", memory_mib=8192, hugepage_kib=1 << 20, **PINNED_4)  # 376 MiB; 8 GiB pages

    memory, findings = account([plain, huge], host, AuditPolicy())

    assert (memory.guest_kib, memory.overhead_kib) == (8 * GiB, 2 * 376 * MiB)
    assert memory.demand_kib == 8944 * MiB  # 8192 + 752
    assert memory.capacity_kib == 48 * GiB - EVICTION
    assert memory.headroom_kib == (49152 - 8944) * MiB - EVICTION  # = 40108 MiB
    assert [(h.size, h.capacity_kib, h.demand_kib, h.headroom_kib) for h in memory.hugepages] == [
        ("1Gi", 16 * GiB, 8 * GiB, 8 * GiB)
    ]
    assert (memory.overcommitted, findings) == (False, [])


def test_the_profile_floor_counts_per_vm() -> None:
    host = two_node_host(total_gib=64, pools=[(1 << 20, 16)])
    vms = [dom("plain", memory_mib=8192, **PINNED_4),
           dom("huge", memory_mib=8192, hugepage_kib=1 << 20, **PINNED_4)]  # fmt: skip

    memory, _ = account(vms, host, AuditPolicy(overhead_floor_bytes=1 << 30))

    assert memory.demand_kib == (8192 + 1024 + 1024) * MiB
    assert memory.headroom_kib == (49152 - 10240) * MiB - EVICTION


def test_hugepage_demand_is_counted_in_whole_pages() -> None:
    host = two_node_host(total_gib=64, pools=[(1 << 20, 16)])
    odd = dom("odd", memory_mib=1536, hugepage_kib=1 << 20)  # 1.5 GiB takes two 1Gi pages

    memory, _ = account([odd], host, AuditPolicy())

    assert memory.hugepages[0].demand_kib == 2 * GiB


def overcommitted_node() -> tuple[HostReport, list[Domain]]:
    # 16 GiB host, 2048 x 2Mi pool = 4 GiB: ordinary capacity 12 GiB, the kubelet keeping 1 GiB
    # of it (0.5 + 0.25 + 0.25): 11 GiB.
    host = two_node_host(total_gib=16, pools=[(2048, 2048)])
    host.kubelet = KubeletReport(system_reserved_memory="512Mi", kube_reserved_memory="256Mi",
                                 eviction_hard_memory="256Mi")
    # Three 4 GiB VMs with a 1 GiB floor need 3 x (4 + 1) = 15 GiB: 3 GiB over.
    plain = [dom(f"vm{i}", memory_mib=4096, vcpus=1) for i in range(3)]
    # A 6 GiB VM on 2Mi pages needs 6 GiB of a 4 GiB pool: 2 GiB over (its overhead: +1 GiB).
    return host, [*plain, dom("huge", memory_mib=6144, vcpus=1, hugepage_kib=2048)]


def test_memory_beyond_either_budget_is_overcommit_and_a_violation() -> None:
    host, vms = overcommitted_node()

    memory, findings = account(vms, host, AuditPolicy(overhead_floor_bytes=1 << 30))

    assert (memory.capacity_kib, memory.kubelet_reserved_kib) == (11 * GiB, 1 * GiB)
    assert memory.demand_kib == (3 * 4 + 4 * 1) * GiB  # three guests, four overheads
    assert memory.headroom_kib == -5 * GiB
    assert [(h.size, h.headroom_kib) for h in memory.hugepages] == [("2Mi", -2 * GiB)]
    assert memory.overcommitted
    assert [(f.severity, f.rule) for f in findings] == [("Violation", "Memory")] * 2
    assert "1.0 GiB the kubelet keeps from pods): overcommitted by 5.0 GiB" in (
        findings[0].message)
    assert "VMs backed by 2Mi pages need 6.0 GiB but the pool holds 4.0 GiB" in findings[1].message


def test_overcommit_the_profile_allows_is_reported_as_info() -> None:
    host, vms = overcommitted_node()

    _, findings = account(vms, host, AuditPolicy(allow_memory_overcommit=True))

    assert {f.severity for f in findings} == {"Info"}


def test_a_pool_of_unknown_size_leaves_capacity_unknown_with_a_warning() -> None:
    host = two_node_host(pools=[(2048, 512)])
    host.memory.hugepages[0].total = None

    memory, findings = account([dom()], host, AuditPolicy())

    assert (memory.capacity_kib, memory.headroom_kib, memory.overcommitted) == (None, None, False)
    [warning] = findings
    assert "the size of the 2Mi hugepage pool(s) is unknown" in warning.message


def test_an_unknown_memtotal_leaves_capacity_unknown_with_a_warning() -> None:
    memory, findings = account([dom()], HostReport(memory=MemoryReport()), AuditPolicy())

    assert (memory.capacity_kib, memory.headroom_kib, memory.overcommitted) == (None, None, False)
    assert [(f.severity, f.rule) for f in findings] == [("Warning", "Memory")]


def test_reserved_memory_larger_than_the_host_wide_reserves_is_what_the_kubelet_keeps() -> None:
    host = two_node_host(total_gib=16)
    host.kubelet = KubeletReport(system_reserved_memory="1Gi", reserved_memory=[
        ReservedMemory(numa_node=n, limits={"memory": "2Gi"}) for n in (0, 1)])

    memory, _ = account([], host, AuditPolicy())

    assert (memory.capacity_kib, memory.kubelet_reserved_kib) == (12 * GiB, 4 * GiB)


def test_a_kubelet_config_that_cannot_be_used_leaves_capacity_unknown_with_a_warning() -> None:
    host = two_node_host()
    host.kubelet = KubeletReport(config_path="/var/lib/kubelet/config.yaml",
                                 error="/var/lib/kubelet/config.yaml is invalid YAML")

    memory, findings = account([dom()], host, AuditPolicy())

    assert (memory.capacity_kib, memory.kubelet_reserved_kib) == (None, None)
    [warning] = findings
    assert "what the kubelet reserves is unknown" in warning.message
