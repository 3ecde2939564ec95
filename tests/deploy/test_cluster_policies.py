"""Each write the issue found RBAC lets an account make, and no code of kvtune makes, is refused
by the real API server: deploy/base/operator-policy.yaml, webhook-policy.yaml and the agent's
Events policy (agent-policy.yaml), in force, exercised by impersonating each ServiceAccount.

Every request is a server-side dry run: authorized and admitted like the real one, stored
nowhere. What kvtune's code does write is allowed, so the policies are no wall in its way.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from support.cluster import ClusterAccess, impersonating, wait_for

from deploy.test_agent_policy import NODE_NAME_EXTRA
from deploy.test_rbac import NAMESPACE, user

OPERATOR, WEBHOOK, AGENT = ("kvtune-operator-writes", "kvtune-webhook-writes",
                            "kvtune-agent-own-events")
DRY = "All"


def refused_by(policy: str, call: Callable[[], object]) -> bool:
    """True when `policy` refuses the request; False when it is let through (a refusal by
    anything else, say RBAC or a missing object, counts as let through by the policy)."""
    try:
        call()
    except ApiException as e:
        return e.status in (403, 422) and policy in str(e.body)
    return False


def allowed(call: Callable[[], object]) -> bool:
    """True when the request is not refused by RBAC or a policy (a 404 of an absent pod is)."""
    try:
        call()
    except ApiException as e:
        if e.status == 404:
            return True
        raise
    return True


@pytest.fixture(scope="module")
def node(installed: list[dict[str, Any]], api_client: client.ApiClient) -> Iterator[str]:
    name = f"kvtune-policy-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(api_client)
    core.create_node({"metadata": {"name": name, "labels": {"team": "vm"},
                                   "annotations": {"note": "kept"}}})
    yield name
    core.delete_node(name)


def _as(cluster: ClusterAccess, account: str, node: str | None = None) -> client.ApiClient:
    api = impersonating(cluster.kubeconfig, user(account))
    if node is not None:
        api.set_default_header(NODE_NAME_EXTRA, node)
    return api


def _in_force(policy: str, probe: Callable[[], object]) -> None:
    wait_for(lambda: refused_by(policy, probe), f"ValidatingAdmissionPolicy {policy} in force")


# --- the operator ------------------------------------------------------------------------------

def _volume(node: str, **spec: Any) -> dict[str, Any]:
    """A PersistentVolume as volumes.render_volume makes it, with `spec` over it (None removes)."""
    body: dict[str, Any] = {
        "capacity": {"storage": "10Gi"}, "volumeMode": "Block", "accessModes": ["ReadWriteOnce"],
        "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "local-luns",
        "local": {"path": "/dev/disk/by-id/wwn-0x600a0980"},
        "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}},
    }
    body.update(spec)
    return {"apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": f"kvtune-lun-{uuid.uuid4().hex[:6]}",
                         "labels": {"kvtune.io/profile": "p", "kvtune.io/node": node}},
            "spec": {k: v for k, v in body.items() if v is not None}}


@pytest.fixture(scope="module")
def as_operator(cluster: ClusterAccess, node: str) -> Iterator[client.CoreV1Api]:
    api = _as(cluster, "kvtune-operator")
    core = client.CoreV1Api(api)
    _in_force(OPERATOR, lambda: core.patch_node(
        node, {"spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}}, dry_run=DRY))
    yield core
    api.close()


#: A local volume without a node, or with ".." in its path, the apiserver's own validation
#: refuses before any policy.
BAD_VOLUMES: list[tuple[str, dict[str, Any]]] = [
    ("hostPath /", {"local": None, "hostPath": {"path": "/"}}),
    ("a Filesystem volume", {"volumeMode": "Filesystem"}),
    ("a path outside /dev", {"local": {"path": "/etc"}}),
    ("two nodes", {"nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
        {"key": "kubernetes.io/hostname", "operator": "In", "values": ["a", "b"]}]}]}}}),
    ("Delete reclaim", {"persistentVolumeReclaimPolicy": "Delete"}),
]


@pytest.mark.parametrize("spec", [s for _, s in BAD_VOLUMES], ids=[n for n, _ in BAD_VOLUMES])
def test_the_operator_may_not_create_any_other_volume(
    as_operator: client.CoreV1Api, node: str, spec: dict[str, Any]
) -> None:
    assert refused_by(OPERATOR, lambda: as_operator.create_persistent_volume(
        _volume(node, **spec), dry_run=DRY))


def test_the_operator_may_create_a_local_block_volume_pinned_to_a_node(
    as_operator: client.CoreV1Api, node: str
) -> None:
    assert allowed(lambda: as_operator.create_persistent_volume(_volume(node), dry_run=DRY))


BAD_NODE_PATCHES: list[tuple[str, dict[str, Any]]] = [
    ("taint", {"spec": {"taints": [{"key": "k", "value": "v", "effect": "NoExecute"}]}}),
    ("another label", {"metadata": {"labels": {"node-role.kubernetes.io/control-plane": ""}}}),
    ("change a label", {"metadata": {"labels": {"team": "other"}}}),
    ("another annotation", {"metadata": {"annotations": {"note": "changed"}}}),
    ("a finalizer", {"metadata": {"finalizers": ["example.com/hold"]}}),
    ("providerID", {"spec": {"providerID": "fake://x"}}),
]


@pytest.mark.parametrize("patch", [p for _, p in BAD_NODE_PATCHES],
                         ids=[n for n, _ in BAD_NODE_PATCHES])
def test_the_operator_may_change_nothing_else_on_a_node(
    as_operator: client.CoreV1Api, node: str, patch: dict[str, Any]
) -> None:
    assert refused_by(OPERATOR, lambda: as_operator.patch_node(node, patch, dry_run=DRY))


def test_the_operator_may_not_write_node_status(as_operator: client.CoreV1Api, node: str) -> None:
    patch = {"status": {"allocatable": {"cpu": "1000"}}}
    with pytest.raises(ApiException) as refused:
        as_operator.patch_node_status(node, patch, dry_run=DRY)
    assert refused.value.status == 403


@pytest.mark.parametrize("patch", [
    {"metadata": {"labels": {"kvtune.io/profile": "p"}}},
    {"spec": {"unschedulable": True},
     "metadata": {"annotations": {"kvtune.io/cordoned-by-kvtune": "true"}}},
], ids=["its profile label", "a cordon with its note"])
def test_the_operator_may_label_and_cordon_a_node(
    as_operator: client.CoreV1Api, node: str, patch: dict[str, Any]
) -> None:
    assert allowed(lambda: as_operator.patch_node(node, patch, dry_run=DRY))


def _evict(core: client.CoreV1Api, namespace: str, pod: str) -> object:
    body = client.V1Eviction(metadata=client.V1ObjectMeta(name=pod, namespace=namespace),
                             delete_options=client.V1DeleteOptions(dry_run=[DRY]))
    return core.create_namespaced_pod_eviction(pod, namespace, body, dry_run=DRY)


@pytest.mark.parametrize(("namespace", "pod"), [
    ("kube-system", "coredns-5d78c9869d-abcde"),
    ("kube-system", "virt-launcher-vm-abcde"),
    (NAMESPACE, "virt-launcher-vm-abcde"),
    ("default", "web-0"),
])
def test_the_operator_may_evict_no_pod_but_virt_launchers_outside_system_namespaces(
    as_operator: client.CoreV1Api, namespace: str, pod: str
) -> None:
    assert refused_by(OPERATOR, lambda: _evict(as_operator, namespace, pod))


def test_the_operator_may_evict_a_virt_launcher(as_operator: client.CoreV1Api) -> None:
    assert allowed(lambda: _evict(as_operator, "default", "virt-launcher-vm-abcde"))


# --- the webhook -------------------------------------------------------------------------------

#: Where the shipped webhook's configurations send reviews (--service in webhook.yaml).
OWN_SERVICE = {"service": {"namespace": NAMESPACE, "name": "kvtune-webhook", "port": 443,
                           "path": "/vmi-mutate"}}


def _configuration(
    rules: list[dict[str, Any]], where: dict[str, Any] = OWN_SERVICE
) -> dict[str, Any]:
    return {"apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration", "metadata": {"name": "kvtune.io"},
            "webhooks": [{"name": "vmi-mutate.kvtune.io", "rules": rules,
                          "clientConfig": where,
                          "sideEffects": "None", "admissionReviewVersions": ["v1"]}]}


def _rule(groups: list[str], resources: list[str], operations: list[str]) -> dict[str, Any]:
    return {"apiGroups": groups, "apiVersions": ["v1"], "resources": resources,
            "operations": operations, "scope": "Namespaced"}


def _apply(
    api: client.AdmissionregistrationV1Api, rules: list[dict[str, Any]],
    where: dict[str, Any] = OWN_SERVICE,
) -> object:
    return api.patch_mutating_webhook_configuration(
        "kvtune.io", _configuration(rules, where), field_manager="kvtune-test", force=True,
        dry_run=DRY, _content_type="application/apply-patch+yaml")


VMI_CREATE = _rule(["kubevirt.io"], ["virtualmachineinstances"], ["CREATE"])


@pytest.fixture(scope="module")
def as_webhook(
    installed: list[dict[str, Any]], cluster: ClusterAccess
) -> Iterator[client.ApiClient]:
    api = _as(cluster, "kvtune-webhook")
    admission = client.AdmissionregistrationV1Api(api)
    _in_force(WEBHOOK, lambda: _apply(admission, [_rule([""], ["pods"], ["CREATE"])]))
    yield api
    api.close()


@pytest.mark.parametrize("rules", [
    [_rule([""], ["pods"], ["CREATE"])],
    [VMI_CREATE, _rule([""], ["pods"], ["CREATE"])],
    [_rule(["*"], ["*"], ["*"])],
    [_rule(["kubevirt.io"], ["virtualmachineinstances"], ["CREATE", "UPDATE"])],
    [_rule(["kubevirt.io"], ["virtualmachines"], ["CREATE"])],
], ids=["pods", "VMIs and pods", "everything", "VMI updates", "VMs"])
def test_the_webhooks_configurations_may_name_nothing_but_vmi_creations(
    as_webhook: client.ApiClient, rules: list[dict[str, Any]]
) -> None:
    admission = client.AdmissionregistrationV1Api(as_webhook)
    assert refused_by(WEBHOOK, lambda: _apply(admission, rules))


@pytest.mark.parametrize("where", [
    {"url": "https://collector.example.com/vmi-mutate"},
    {"url": "https://127.0.0.1:9443/vmi-mutate"},
    {"service": {"namespace": "default", "name": "kvtune-webhook", "port": 443}},
    {"service": {"namespace": NAMESPACE, "name": "kvtune-operator", "port": 443}},
], ids=["an outside URL", "a host URL", "a Service elsewhere", "another Service"])
def test_the_webhooks_configurations_may_call_nothing_but_its_own_service(
    as_webhook: client.ApiClient, where: dict[str, Any]
) -> None:
    admission = client.AdmissionregistrationV1Api(as_webhook)
    assert refused_by(WEBHOOK, lambda: _apply(admission, [VMI_CREATE], where))


def test_the_webhooks_configuration_of_vmi_creations_is_allowed(
    as_webhook: client.ApiClient,
) -> None:
    assert allowed(lambda: _apply(client.AdmissionregistrationV1Api(as_webhook), [VMI_CREATE]))


def _secret(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "data": {"tls.crt": ""}}


@pytest.mark.parametrize("name", ["kvtune-operator-token", "admin", "kvtune-webhook-tls-2"])
def test_the_webhook_may_create_no_secret_but_its_own(
    as_webhook: client.ApiClient, name: str
) -> None:
    core = client.CoreV1Api(as_webhook)
    assert refused_by(WEBHOOK, lambda: core.create_namespaced_secret(
        NAMESPACE, _secret(name), dry_run=DRY))


def test_the_webhook_may_create_its_own_tls_secret(as_webhook: client.ApiClient) -> None:
    core = client.CoreV1Api(as_webhook)
    assert allowed(lambda: core.create_namespaced_secret(
        NAMESPACE, _secret("kvtune-webhook-tls"), dry_run=DRY))


# --- the agent's Events ------------------------------------------------------------------------

def _event(node: str, about: dict[str, str], name: str | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name or f"{node}.{uuid.uuid4().hex[:10]}"},
            "involvedObject": about, "reason": "Test", "message": "m", "type": "Normal",
            "source": {"component": "kvtune-agent", "host": node}}


def _state(node: str) -> dict[str, str]:
    return {"apiVersion": "kvtune.io/v1alpha1", "kind": "HypervisorNodeState", "name": node}


@pytest.fixture(scope="module")
def as_agent(cluster: ClusterAccess, node: str) -> Iterator[client.CoreV1Api]:
    api = _as(cluster, "kvtune-agent", node)
    core = client.CoreV1Api(api)
    _in_force(AGENT, lambda: core.create_namespaced_event(
        "default", _event(node, _state("elsewhere")), dry_run=DRY))
    yield core
    api.close()


@pytest.mark.parametrize("about", [
    _state("another-node"),
    {"apiVersion": "v1", "kind": "Node", "name": "{node}"},
    {"apiVersion": "v1", "kind": "Pod", "name": "{node}", "namespace": "default"},
    {"apiVersion": "kvtune.io/v1alpha1", "kind": "HypervisorProfile", "name": "{node}"},
], ids=["another node's state", "its Node", "a pod", "a profile"])
def test_the_agent_may_create_no_event_but_about_its_own_state(
    as_agent: client.CoreV1Api, node: str, about: dict[str, str]
) -> None:
    about = {k: v.replace("{node}", node) for k, v in about.items()}
    assert refused_by(AGENT, lambda: as_agent.create_namespaced_event(
        "default", _event(node, about), dry_run=DRY))


def test_the_agent_may_not_name_an_event_after_another_node(
    as_agent: client.CoreV1Api, node: str
) -> None:
    assert refused_by(AGENT, lambda: as_agent.create_namespaced_event(
        "default", _event(node, _state(node), name="other-node.abc"), dry_run=DRY))


def test_the_agent_may_report_about_its_own_state(as_agent: client.CoreV1Api, node: str) -> None:
    assert allowed(lambda: as_agent.create_namespaced_event(
        "default", _event(node, _state(node)), dry_run=DRY))


def test_an_agent_token_bound_to_no_node_may_create_no_event(
    as_agent: client.CoreV1Api, cluster: ClusterAccess, node: str
) -> None:
    api = _as(cluster, "kvtune-agent")
    try:
        core = client.CoreV1Api(api)
        assert refused_by(AGENT, lambda: core.create_namespaced_event(
            "default", _event(node, _state(node)), dry_run=DRY))
    finally:
        api.close()
