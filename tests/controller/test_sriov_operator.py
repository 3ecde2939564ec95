"""The SR-IOV Network Operator's policies reach the node states they select, so that the agents
leave those PFs alone (the agents' side: tests/agent/test_sriov_driver.py)."""

from __future__ import annotations

import contextlib
import time
import typing as t
import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client
from kvtune_api.v1alpha1.nodestate import SriovOperatorPolicy
from kvtune_operator.controller.settings import Settings
from kvtune_operator.controller.sriov_operator import (
    GROUP,
    PLURAL,
    VERSION,
    PolicyView,
    selecting,
)
from support.cluster import ClusterAccess, apply_crds, wait_for
from support.operator import running_operator

#: A minimal copy of the SR-IOV Network Operator's CRD: the fields kvtune reads, the rest kept.
POLICY_CRD: dict[str, t.Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{PLURAL}.{GROUP}"},
    "spec": {
        "group": GROUP,
        "names": {"kind": "SriovNetworkNodePolicy", "listKind": "SriovNetworkNodePolicyList",
                  "plural": PLURAL, "singular": "sriovnetworknodepolicy"},
        "scope": "Namespaced",
        "versions": [{"name": VERSION, "served": True, "storage": True, "schema": {
            "openAPIV3Schema": {"type": "object", "properties": {"spec": {
                "type": "object", "x-kubernetes-preserve-unknown-fields": True,
                "properties": {
                    "nodeSelector": {"type": "object",
                                     "additionalProperties": {"type": "string"}},
                    "numVfs": {"type": "integer"},
                    "resourceName": {"type": "string"},
                    "nicSelector": {"type": "object", "properties": {
                        "pfNames": {"type": "array", "items": {"type": "string"}},
                        "rootDevices": {"type": "array", "items": {"type": "string"}},
                        "vendor": {"type": "string"},
                        "deviceID": {"type": "string"},
                    }},
                }}}}}}],
    },
}


def policy(name: str, node_selector: dict[str, str], **nic: t.Any) -> dict[str, t.Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SriovNetworkNodePolicy",
            "metadata": {"name": name, "namespace": "sriov-network-operator"},
            "spec": {"nodeSelector": node_selector, "numVfs": 8, "resourceName": "intelnics",
                     "nicSelector": nic}}


def test_a_policy_names_its_pfs_without_their_vf_ranges_and_ids_in_lower_case() -> None:
    view = PolicyView.from_body(policy("p", {}, pfNames=["ens1f0#0-3", "ens2f0"],
                                       vendor="8086", deviceID="159B"))

    assert view.policy == SriovOperatorPolicy(
        name="sriov-network-operator/p", pf_names=["ens1f0", "ens2f0"], vendor="8086",
        device_id="159b")


@pytest.mark.parametrize(("selector", "selected"), [
    ({}, True), ({"pool": "vms"}, True), ({"pool": "vms", "zone": "a"}, False),
    ({"pool": "db"}, False)])
def test_a_policy_selects_the_nodes_its_node_selector_matches(
    selector: dict[str, str], selected: bool
) -> None:
    found = selecting({"pool": "vms"}, [PolicyView.from_body(policy("p", selector))])

    assert bool(found) == selected


@pytest.fixture(scope="module")
def operator(cluster: ClusterAccess, api_client: client.ApiClient,
             kvtune_crds: list[str]) -> Iterator[None]:
    apply_crds(api_client, [POLICY_CRD])
    with running_operator(Settings(), cluster.kubeconfig):
        time.sleep(1)  # let the watches and indexes start
        yield


@pytest.mark.apiserver
def test_the_policies_selecting_a_node_are_copied_into_its_state(
    operator: None, api_client: client.ApiClient
) -> None:
    core, custom = client.CoreV1Api(api_client), client.CustomObjectsApi(api_client)
    tag = uuid.uuid4().hex[:6]
    with contextlib.suppress(client.ApiException):  # 409: an earlier test made it
        core.create_namespace({"metadata": {"name": "sriov-network-operator"}})
    node, other = f"{tag}-a", f"{tag}-b"
    core.create_node({"metadata": {"name": node, "labels": {"pool": tag, "nic": "intel"}}})
    core.create_node({"metadata": {"name": other, "labels": {"pool": tag}}})
    custom.create_namespaced_custom_object(
        GROUP, VERSION, "sriov-network-operator", PLURAL,
        policy(f"{tag}-intel", {"nic": "intel"}, pfNames=["ens1f0#0-3"]))
    custom.create_cluster_custom_object("kvtune.io", "v1alpha1", "hypervisorprofiles", {
        "apiVersion": "kvtune.io/v1alpha1", "kind": "HypervisorProfile",
        "metadata": {"name": tag}, "spec": {"nodeSelector": {"matchLabels": {"pool": tag}}}})

    def policies(name: str) -> list[dict[str, t.Any]] | None:
        try:
            state = custom.get_cluster_custom_object(
                "kvtune.io", "v1alpha1", "hypervisornodestates", name)
        except client.ApiException:
            return None
        found: list[dict[str, t.Any]] = state["spec"].get("sriovOperatorPolicies", [])
        return found

    wait_for(lambda: bool(policies(node)), "the policy in the selected node's state")
    assert policies(node) == [{"name": f"sriov-network-operator/{tag}-intel",
                               "pfNames": ["ens1f0"], "rootDevices": []}]
    wait_for(lambda: policies(other) is not None, "the other node's state")
    assert policies(other) == []

    core.patch_node(other, {"metadata": {"labels": {"nic": "intel"}}})
    wait_for(lambda: bool(policies(other)), "the policy follows the node's new label")
    custom.delete_cluster_custom_object("kvtune.io", "v1alpha1", "hypervisorprofiles", tag)
