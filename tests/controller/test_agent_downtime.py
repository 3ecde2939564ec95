"""A node whose agent is down when it leaves its profile is restored when the agent comes back.

The operator gives up waiting for such a node's revert after `revert_timeout`, deletes its state
and removes its profile label; the agent DaemonSet must still select the node (through the
journal label its agent set), so that an agent runs there again and restores the host. Real
operator (in a thread), real agent process, real API server. There is no kubelet or scheduler,
so the DaemonSet's node selection is asked of the API server: each of its node selector terms as
a label selector, the terms ORed as the scheduler does.
"""

from __future__ import annotations

import datetime
import uuid
from pathlib import Path

from kubernetes import client
from kvtune_agent.engine.journal import JOURNAL_PATH
from kvtune_api.labels import JOURNAL_LABEL, READY_LABEL
from kvtune_operator.common.profiles import PROFILE_LABEL
from kvtune_operator.controller.daemonset import NAME
from kvtune_operator.controller.settings import Settings
from support.agent import ENFORCE, KSM_RUN, Node
from support.cluster import ClusterAccess, is_gone, wait_for
from support.operator import running_operator

G, V, PROFILES = "kvtune.io", "v1alpha1", "hypervisorprofiles"


def _requirement(expression: client.V1NodeSelectorRequirement) -> str:
    """One node selector requirement as label selector syntax."""
    key: str = expression.key
    values = ",".join(expression.values or ())
    return {"Exists": key, "DoesNotExist": f"!{key}", "In": f"{key} in ({values})",
            "NotIn": f"{key} notin ({values})"}[expression.operator]


def selects(core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str, node: str) -> bool:
    """Whether the agent DaemonSet's required node affinity selects `node`."""
    spec = apps.read_namespaced_daemon_set(NAME, namespace).spec.template.spec
    terms = spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution
    for term in terms.node_selector_terms:
        selector = ",".join(_requirement(e) for e in term.match_expressions)
        if any(n.metadata.name == node for n in core.list_node(label_selector=selector).items):
            return True
    return False


def test_a_node_that_left_its_profile_while_its_agent_was_down_is_restored_when_it_returns(
    cluster: ClusterAccess, api_client: client.ApiClient, kvtune_crds: list[str],
    namespace: str, tmp_path: Path,
) -> None:
    core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
    custom = client.CustomObjectsApi(api_client)
    pool = f"downtime-{uuid.uuid4().hex[:6]}"
    node = Node(cluster, api_client, tmp_path / "host", pool=pool)
    settings = Settings(agent_image="registry.example/kvtune:test", namespace=namespace,
                        revert_timeout=datetime.timedelta(seconds=2))
    try:
        with running_operator(settings, cluster.kubeconfig):
            custom.create_cluster_custom_object(G, V, PROFILES, {
                "apiVersion": f"{G}/{V}", "kind": "HypervisorProfile", "metadata": {"name": pool},
                "spec": {"nodeSelector": {"matchLabels": {"pool": pool}}, "mode": "Enforce",
                         **ENFORCE}})
            node.start()
            wait_for(lambda: node.labels().get(READY_LABEL) == "true",
                     "the agent applied the profile", timeout=60)
            assert node.host_has(JOURNAL_PATH) and node.host_file(KSM_RUN) == "0"
            assert selects(core, apps, namespace, node.name)

            node.stop()  # the node goes down, and meanwhile it leaves its profile
            core.patch_node(node.name, {"metadata": {"labels": {"pool": None}}})
            wait_for(lambda: is_gone(node.state), "the operator gives up and deletes the state")
            wait_for(lambda: PROFILE_LABEL not in node.labels(), "the profile label removed")
            assert node.host_has(JOURNAL_PATH), "nobody restored the host while its agent was down"
            assert selects(core, apps, namespace, node.name), (
                "the DaemonSet must keep an agent on a node whose journal is not restored")

            node.start()  # the node is back
            wait_for(lambda: not node.host_has(JOURNAL_PATH), "the journal restored", timeout=60)
            assert node.host_file(KSM_RUN) == "1"
            wait_for(lambda: JOURNAL_LABEL not in node.labels(), "the journal label removed")
            assert READY_LABEL not in node.labels()
            assert not selects(core, apps, namespace, node.name), "a clean node runs no agent"

            node.stop()
            custom.delete_cluster_custom_object(G, V, PROFILES, pool)
            wait_for(lambda: is_gone(
                lambda: custom.get_cluster_custom_object(G, V, PROFILES, pool)), "profile deleted")
    finally:
        node.stop()
