"""The agent may write only its own node's objects: deploy/base/agent-policy.yaml, in force on the
real API server, exercised by impersonating the agent's ServiceAccount with the node name that a
pod-bound token carries (`authentication.kubernetes.io/node-name`).

RBAC lets the agent patch every Node and every state's status (one ServiceAccount serves all
nodes); these tests show the policy narrows that to the agent's own node and its two labels.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from support.cluster import ClusterAccess, impersonating, wait_for

from deploy.test_rbac import NAMESPACE, user

POLICY = "kvtune-agent-own-node"
READY = "kvtune.io/ready"
JOURNAL = "kvtune.io/journal"
NODE_NAME_EXTRA = "Impersonate-Extra-authentication.kubernetes.io%2fnode-name"
GROUP, VERSION, STATES = "kvtune.io", "v1alpha1", "hypervisornodestates"


def denied_by_policy(call: Callable[[], object]) -> bool:
    """True when the request is refused by the agent policy (and not by anything else)."""
    try:
        call()
    except ApiException as e:
        if e.status in (403, 422) and POLICY in str(e.body):
            return True
        raise
    return False


@pytest.fixture(scope="module")
def nodes(
    installed: list[dict[str, Any]], kvtune_crds: list[str], api_client: client.ApiClient
) -> Iterator[tuple[str, str]]:
    """Two nodes with a HypervisorNodeState each, named uniquely (the cluster may be shared)."""
    suffix = uuid.uuid4().hex[:6]
    names = (f"kvtune-vap-a-{suffix}", f"kvtune-vap-b-{suffix}")
    core, custom = client.CoreV1Api(api_client), client.CustomObjectsApi(api_client)
    for name in names:
        core.create_node({"metadata": {"name": name, "labels": {"team": "vm"},
                                       "annotations": {"note": "kept"}}})
        custom.create_cluster_custom_object(GROUP, VERSION, STATES, {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "HypervisorNodeState",
            "metadata": {"name": name},
            "spec": {"nodeName": name, "profile": {"name": "p", "generation": 1}},
        })
    yield names
    for name in names:
        custom.delete_cluster_custom_object(GROUP, VERSION, STATES, name)
        core.delete_node(name)


def agent_client(cluster: ClusterAccess, node: str | None) -> client.ApiClient:
    api = impersonating(cluster.kubeconfig, user("kvtune-agent"))
    if node is not None:
        api.set_default_header(NODE_NAME_EXTRA, node)
    return api


@pytest.fixture(scope="module")
def agent_a(cluster: ClusterAccess, nodes: tuple[str, str]) -> Iterator[client.ApiClient]:
    """The agent of the first node. Waits until the policy is in force (it is loaded by an
    informer, a moment after it is created)."""
    api = agent_client(cluster, nodes[0])
    other = client.CoreV1Api(api)

    def in_force() -> bool:
        try:
            return denied_by_policy(lambda: other.patch_node(
                nodes[1], {"metadata": {"labels": {READY: "true"}}}, dry_run="All"))
        except ApiException:
            return False

    wait_for(in_force, f"ValidatingAdmissionPolicy {POLICY} taking effect")
    yield api
    api.close()


@pytest.mark.parametrize(("label", "values"), [
    (READY, ("true", "false", None)),
    (JOURNAL, ("pending", None)),
])
def test_an_agent_may_set_and_remove_its_own_nodes_labels(
    agent_a: client.ApiClient, nodes: tuple[str, str], api_client: client.ApiClient,
    label: str, values: tuple[str | None, ...],
) -> None:
    core = client.CoreV1Api(agent_a)
    for value in values:
        core.patch_node(nodes[0], {"metadata": {"labels": {label: value}}})
        labels = client.CoreV1Api(api_client).read_node(nodes[0]).metadata.labels
        assert labels.get(label) == value
        assert labels["team"] == "vm"


def test_an_agent_may_write_its_own_node_states_status(
    agent_a: client.ApiClient, nodes: tuple[str, str]
) -> None:
    custom = client.CustomObjectsApi(agent_a)
    done = custom.patch_cluster_custom_object_status(
        GROUP, VERSION, STATES, nodes[0], {"status": {"syncStatus": "Succeeded"}})
    assert done["status"]["syncStatus"] == "Succeeded"


def test_an_agent_may_not_write_another_nodes_state(
    agent_a: client.ApiClient, nodes: tuple[str, str]
) -> None:
    custom = client.CustomObjectsApi(agent_a)
    assert denied_by_policy(lambda: custom.patch_cluster_custom_object_status(
        GROUP, VERSION, STATES, nodes[1], {"status": {"syncStatus": "Succeeded"}}))


def test_an_agent_may_not_label_another_node(
    agent_a: client.ApiClient, nodes: tuple[str, str]
) -> None:
    core = client.CoreV1Api(agent_a)
    assert denied_by_policy(lambda: core.patch_node(
        nodes[1], {"metadata": {"labels": {READY: "true"}}}))
    assert denied_by_policy(lambda: core.patch_node(
        nodes[1], {"metadata": {"labels": {JOURNAL: "pending"}}}))


@pytest.mark.parametrize(
    "patch",
    [
        {"metadata": {"labels": {"team": "other"}}},
        {"metadata": {"labels": {"team": None}}},
        {"metadata": {"labels": {"kubevirt.io/schedulable": "false"}}},
        {"metadata": {"labels": {READY: "maybe"}}},
        {"metadata": {"labels": {JOURNAL: "done"}}},
        {"metadata": {"annotations": {"note": "changed"}}},
        {"metadata": {"finalizers": ["example.com/hold"]}},
        {"spec": {"unschedulable": True}},
        {"spec": {"taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}]}},
    ],
    ids=["change-label", "remove-label", "add-label", "ready-not-a-boolean", "journal-not-pending",
         "annotation", "finalizer", "cordon", "taint"],
)
def test_an_agent_may_change_nothing_else_on_its_own_node(
    agent_a: client.ApiClient, nodes: tuple[str, str], patch: dict[str, Any]
) -> None:
    core = client.CoreV1Api(agent_a)
    assert denied_by_policy(lambda: core.patch_node(nodes[0], patch))


def test_an_agent_token_bound_to_no_node_may_write_nothing(
    agent_a: client.ApiClient, cluster: ClusterAccess, nodes: tuple[str, str]
) -> None:
    unbound = agent_client(cluster, None)
    try:
        core = client.CoreV1Api(unbound)
        assert denied_by_policy(lambda: core.patch_node(
            nodes[0], {"metadata": {"labels": {READY: "true"}}}))
    finally:
        unbound.close()


def test_the_policy_leaves_other_accounts_alone(
    agent_a: client.ApiClient, cluster: ClusterAccess, nodes: tuple[str, str]
) -> None:
    # The operator labels any node with its profile: the agent's policy must not apply to it.
    operator = impersonating(cluster.kubeconfig, f"system:serviceaccount:{NAMESPACE}:"
                             "kvtune-operator")
    try:
        client.CoreV1Api(operator).patch_node(
            nodes[1], {"metadata": {"labels": {"kvtune.io/profile": "p"}}})
    finally:
        operator.close()
