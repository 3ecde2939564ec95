"""A VMI whose `sriov` interface asks (through its NetworkAttachmentDefinition) for a VF pool no
ready node of its profile offers is admitted with a warning that names the pool and the fix."""

from __future__ import annotations

import dataclasses

import pytest
from kvtune_api.labels import READY_LABEL
from kvtune_operator.common.profiles import PROFILE_LABEL
from kvtune_operator.webhook.admission import ClusterView, check
from kvtune_operator.webhook.vmi import NodeCapacity
from kvtune_operator.webhook.vmi.sriov_resources import extended_resources, unoffered

from webhook import Obj, make_profile, make_vmi

Gi = 1024**3
POOL = "sriov.kvtune.io/e810_vf"
NETWORKS = {"vms/e810-data": POOL, "infra/intel": "intel.com/sriov_netdevice"}


def vmi(network: str = "e810-data", binding: str = "sriov") -> Obj:
    return make_vmi({"cpu": {"cores": 2}, "memory": {"guest": "2Gi"},
                     "devices": {"interfaces": [{"name": "data", binding: {}}]}},
                    networks=[{"name": "data", "multus": {"networkName": network}}])


def test_an_sriov_interface_on_a_pool_no_node_offers_is_named_with_the_fix() -> None:
    [warning] = unoffered("san", vmi(), NETWORKS, {"intel.com/sriov_netdevice"})

    assert warning.startswith("spec.domain.devices.interfaces[0] (data) asks for a VF of "
                              f"{POOL} through NetworkAttachmentDefinition vms/e810-data")
    assert "give a network.sriov rule of the profile resourceName e810_vf" in warning
    assert "ConfigMap kvtune-sriov-san" in warning


@pytest.mark.parametrize(("case", "offered"), [
    (vmi(), {POOL}),                                   # a node offers it
    (vmi("vf-elsewhere"), set()),                      # a network kvtune does not know
    (vmi(binding="bridge"), set()),                    # not an sriov interface
])
def test_nothing_is_said_when_the_pool_is_offered_or_not_kvtunes_to_judge(
    case: Obj, offered: set[str]
) -> None:
    assert unoffered("san", case, NETWORKS, offered) == []


def test_a_network_in_another_namespace_is_found_by_its_full_name() -> None:
    [warning] = unoffered("san", vmi("infra/intel"), NETWORKS, {POOL})

    assert "intel.com/sriov_netdevice through NetworkAttachmentDefinition infra/intel" in warning
    assert "run the device plugin that offers intel.com/sriov_netdevice" in warning


def test_the_extended_resources_of_a_node_are_those_it_has_at_least_one_of() -> None:
    assert extended_resources({"cpu": "8", "memory": "16Gi", "hugepages-1Gi": "8Gi",
                               POOL: "16", "intel.com/sriov_netdevice": "0"}) == {POOL}


def test_the_webhook_warns_only_when_no_ready_node_of_the_profile_offers_the_pool() -> None:
    nodes = {"ready": {PROFILE_LABEL: "san", READY_LABEL: "true"}, "other": {}}
    room = NodeCapacity("ready", cpu_millis=64000, memory_bytes=256 * Gi)
    cluster = ClusterView(profiles={"san": make_profile("san")}, node_labels=nodes,
                          node_states={}, allocatable={"ready": room, "other": room},
                          networks=NETWORKS,
                          resources={"ready": frozenset(), "other": frozenset({POOL})})
    warnings: list[str] = []

    check(cluster, vmi(), {}, warnings)

    assert len(warnings) == 1 and f"asks for a VF of {POOL}" in warnings[0]
    warnings.clear()
    check(dataclasses.replace(cluster, resources={"ready": frozenset({POOL})}), vmi(), {},
          warnings)
    assert warnings == []
