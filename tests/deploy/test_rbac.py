"""Least privilege of kvtune's ServiceAccounts, checked on the real API server.

Three layers, each catching what the others cannot:
1. The roles rendered from deploy/ grant exactly what tests/deploy/expected_rbac.yaml lists (no
   cluster needed): a widened role fails until the reviewed file is widened with it.
2. On the real API server, a SubjectAccessReview for every verb on every served resource (and
   every resource the roles name), cluster-wide and in the namespaces the roles touch: each
   account may do exactly the reviewed things beyond what an unbound ServiceAccount may do. This
   sees what RBAC really evaluates (aggregated roles, bindings to other subjects, defaults).
3. Real requests by impersonation for the dangerous cases: the agent deleting a node, reading a
   Secret or writing a profile; the operator reading a Secret or writing a webhook
   configuration; the webhook reading any Secret but its own or writing another webhook.
(Narrowing the agent to its own node is the admission policy's job: test_agent_policy.py.)
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException
from support.cluster import ClusterAccess, impersonating

NAMESPACE = "kvtune-system"
ACCOUNTS = ("kvtune-agent", "kvtune-operator", "kvtune-webhook")
#: A ServiceAccount name nothing binds: what any ServiceAccount may do anyway.
UNBOUND = "kvtune-rbac-baseline"
EXPECTED: dict[str, dict[str, list[dict[str, Any]]]] = yaml.safe_load(
    Path(__file__).with_name("expected_rbac.yaml").read_text()
)
VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
CLUSTER = "cluster"
#: Where namespaced permissions are probed besides cluster-wide: the Roles' namespaces.
NAMESPACES = ("default", NAMESPACE)

# (scope, apiGroup, resource incl. subresource, verb, resourceName or "")
Grant = tuple[str, str, str, str, str]
Resource = tuple[str, str, bool]  # (apiGroup, resource, namespaced)


def user(account: str) -> str:
    return f"system:serviceaccount:{NAMESPACE}:{account}"


def grants(rules_by_scope: Mapping[str, Iterable[Mapping[str, Any]]]) -> set[Grant]:
    return {
        (scope, group, resource, verb, name)
        for scope, rules in rules_by_scope.items()
        for rule in rules
        for group, resource, verb, name in itertools.product(
            rule["apiGroups"], rule["resources"], rule["verbs"], rule.get("resourceNames") or [""]
        )
    }


def granted(objects: Sequence[Mapping[str, Any]], account: str) -> dict[str, list[Any]]:
    """The rules bound to `account` in the rendered objects, per scope."""
    roles = {
        (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o
        for o in objects
        if o["kind"] in ("ClusterRole", "Role")
    }
    found: dict[str, list[Any]] = {}
    for binding in objects:
        if binding["kind"] not in ("ClusterRoleBinding", "RoleBinding"):
            continue
        subjects = binding.get("subjects") or []
        if {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE} not in subjects:
            continue
        namespace = binding["metadata"].get("namespace")
        ref = binding["roleRef"]
        role = roles[(ref["kind"], namespace if ref["kind"] == "Role" else None, ref["name"])]
        found.setdefault(namespace or CLUSTER, []).extend(role["rules"])
    return found


@pytest.mark.parametrize("account", ACCOUNTS)
def test_the_shipped_roles_grant_exactly_the_reviewed_permissions(
    installation: list[dict[str, Any]], account: str
) -> None:
    shipped, reviewed = grants(granted(installation, account)), grants(EXPECTED[account])
    assert shipped - reviewed == set(), (
        f"{account}: deploy/ grants more than tests/deploy/expected_rbac.yaml; review and "
        "add there (with the code that needs it)"
    )
    assert reviewed - shipped == set(), f"{account}: reviewed grants missing from deploy/"


# --- 2. What RBAC really allows, swept with SubjectAccessReviews --------------------------------


def served_resources(api: client.ApiClient) -> set[Resource]:
    """Every resource and subresource the apiserver serves (preferred version of each group)."""
    lists = [("", client.CoreV1Api(api).get_api_resources())]
    custom = client.CustomObjectsApi(api)
    for group in client.ApisApi(api).get_api_versions().groups:
        version = group.preferred_version.version
        lists.append((group.name, custom.get_api_resources(group.name, version)))
    found: set[Resource] = set()
    for group_name, listing in lists:
        for r in listing.resources:
            found.add((group_name, r.name, bool(r.namespaced)))
    return found


def review(api: client.ApiClient, account: str, probe: Grant) -> bool:
    scope, group, resource, verb, name = probe
    plural, _, subresource = resource.partition("/")
    body = client.V1SubjectAccessReview(spec=client.V1SubjectAccessReviewSpec(
        user=user(account),
        groups=["system:serviceaccounts", f"system:serviceaccounts:{NAMESPACE}",
                "system:authenticated"],
        resource_attributes=client.V1ResourceAttributes(
            group=group, resource=plural, subresource=subresource or None, verb=verb,
            name=name or None, namespace=None if scope == CLUSTER else scope,
        ),
    ))
    answer = client.AuthorizationV1Api(api).create_subject_access_review(body)
    return bool(answer.status.allowed)


def allowed(api: client.ApiClient, account: str, probes: Sequence[Grant]) -> set[Grant]:
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = pool.map(functools.partial(review, api, account), probes)
        return {probe for probe, yes in zip(probes, answers, strict=True) if yes}


def probes_for(resources: Iterable[Resource]) -> list[Grant]:
    """Every verb, cluster-wide and (namespaced resources) in each Role's namespace."""
    return [
        (scope, group, resource, verb, "")
        for group, resource, namespaced in sorted(resources)
        for scope in ((CLUSTER, *NAMESPACES) if namespaced else (CLUSTER,))
        for verb in VERBS
    ]


def expected_allowed(account: str, namespaced: Mapping[tuple[str, str], bool]) -> set[Grant]:
    """The reviewed grants as the sweep sees them: a cluster-wide grant of a namespaced resource
    also holds in every namespace; grants limited to names are checked apart."""
    found: set[Grant] = set()
    for scope, group, resource, verb, name in grants(EXPECTED[account]):
        if name:
            continue
        scopes = [scope]
        if scope == CLUSTER and namespaced[(group, resource)]:
            scopes += NAMESPACES
        found |= {(s, group, resource, verb, "") for s in scopes}
    return found


@pytest.fixture(scope="module")
def sweep(
    installed: list[dict[str, Any]], api_client: client.ApiClient
) -> tuple[list[Grant], dict[tuple[str, str], bool], set[Grant]]:
    """The probes, each probed resource's scope, and what an unbound ServiceAccount may do."""
    resources = served_resources(api_client)
    # Resources the roles name but this cluster may not serve (KubeVirt's, without KubeVirt).
    crds = {(c["spec"]["group"], c["spec"]["names"]["plural"]): c["spec"]["scope"] == "Namespaced"
            for c in installed if c["kind"] == "CustomResourceDefinition"}
    namespaced = {(g, r): n for g, r, n in resources} | crds
    for account in ACCOUNTS:
        for _, group, resource, _, _ in grants(EXPECTED[account]):
            namespaced.setdefault((group, resource), group == "kubevirt.io")
    probes = probes_for((g, r, n) for (g, r), n in namespaced.items())
    return probes, namespaced, allowed(api_client, UNBOUND, probes)


@pytest.mark.parametrize("account", ACCOUNTS)
def test_each_account_may_do_exactly_the_reviewed_things_and_no_more(
    sweep: tuple[list[Grant], dict[tuple[str, str], bool], set[Grant]],
    api_client: client.ApiClient,
    account: str,
) -> None:
    probes, namespaced, baseline = sweep
    extra = allowed(api_client, account, probes) - baseline
    want = expected_allowed(account, namespaced) - baseline
    assert sorted(extra - want) == [], f"{account} may do more than reviewed"
    assert sorted(want - extra) == [], f"{account} may not do what was reviewed"


@pytest.mark.parametrize("account", ACCOUNTS)
def test_grants_limited_to_names_hold_for_those_names_only(
    installed: list[dict[str, Any]], api_client: client.ApiClient, account: str
) -> None:
    named = [g for g in grants(EXPECTED[account]) if g[4]]
    for scope, group, resource, verb, name in named:
        assert review(api_client, account, (scope, group, resource, verb, name))
        other = (scope, group, resource, verb, f"not-{name}")
        assert not review(api_client, account, other), f"{account} {verb} {resource} not-{name}"


# --- 3. Real requests by impersonation ----------------------------------------------------------


def forbidden(call: Any) -> bool:
    try:
        call()
    except ApiException as e:
        if e.status == 403:
            return True
        raise
    return False


@pytest.fixture
def as_agent(installed: list[dict[str, Any]], cluster: ClusterAccess) -> Any:
    api = impersonating(cluster.kubeconfig, user("kvtune-agent"))
    yield api
    api.close()


@pytest.fixture
def as_operator(installed: list[dict[str, Any]], cluster: ClusterAccess) -> Any:
    api = impersonating(cluster.kubeconfig, user("kvtune-operator"))
    yield api
    api.close()


@pytest.fixture
def as_webhook(installed: list[dict[str, Any]], cluster: ClusterAccess) -> Any:
    api = impersonating(cluster.kubeconfig, user("kvtune-webhook"))
    yield api
    api.close()


def test_the_agent_cannot_delete_nodes_read_secrets_or_write_profiles(
    as_agent: client.ApiClient, kvtune_crds: list[str]
) -> None:
    core, custom = client.CoreV1Api(as_agent), client.CustomObjectsApi(as_agent)
    assert forbidden(lambda: core.delete_node("any-node"))
    assert forbidden(lambda: core.list_secret_for_all_namespaces())
    assert forbidden(lambda: core.read_namespaced_secret("any", NAMESPACE))
    profile = {"apiVersion": "kvtune.io/v1alpha1", "kind": "HypervisorProfile",
               "metadata": {"name": "agent-made"}, "spec": {}}
    assert forbidden(lambda: custom.create_cluster_custom_object(
        "kvtune.io", "v1alpha1", "hypervisorprofiles", profile))
    assert forbidden(lambda: custom.patch_cluster_custom_object(
        "kvtune.io", "v1alpha1", "hypervisornodestates", "any-node", {"spec": {}}))


def test_the_operator_cannot_read_secrets_or_delete_nodes(as_operator: client.ApiClient) -> None:
    core = client.CoreV1Api(as_operator)
    assert forbidden(lambda: core.list_secret_for_all_namespaces())
    assert forbidden(lambda: core.read_namespaced_secret("any", NAMESPACE))
    assert forbidden(lambda: core.delete_node("any-node"))


def _webhook_configuration(name: str) -> dict[str, Any]:
    return {"apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration", "metadata": {"name": name}, "webhooks": []}


def _apply(api: client.ApiClient, name: str) -> None:
    # Kube.apply_webhook_configurations creates by server-side apply: the apiserver checks
    # `create` on the object's name as well as `patch`. A dry run is authorized like the real
    # request and leaves a real installation's alone.
    client.AdmissionregistrationV1Api(api).patch_validating_webhook_configuration(
        name, _webhook_configuration(name), field_manager="kvtune-test", force=True,
        dry_run="All", _content_type="application/apply-patch+yaml")


def test_the_webhook_can_server_side_apply_its_own_configuration_only(
    as_webhook: client.ApiClient,
) -> None:
    _apply(as_webhook, "kvtune.io")
    assert forbidden(lambda: _apply(as_webhook, "someone-else.example.com"))


def test_the_operator_cannot_write_webhook_configurations(as_operator: client.ApiClient) -> None:
    assert forbidden(lambda: _apply(as_operator, "kvtune.io"))


def test_the_webhook_reads_its_own_secret_and_no_other(
    as_webhook: client.ApiClient, api_client: client.ApiClient
) -> None:
    core = client.CoreV1Api(as_webhook)
    assert forbidden(lambda: core.list_namespaced_secret(NAMESPACE))
    assert forbidden(lambda: core.read_namespaced_secret("someone-elses", NAMESPACE))
    assert forbidden(lambda: core.read_namespaced_secret("kvtune-webhook-tls", "default"))
    try:
        core.read_namespaced_secret("kvtune-webhook-tls", NAMESPACE)
    except ApiException as e:
        assert e.status == 404, "allowed, and not there yet"


@pytest.mark.parametrize("account", ["kvtune-operator", "kvtune-webhook"])
def test_each_kopf_process_may_follow_every_resource_its_handlers_name(account: str) -> None:
    # From kopf's registries, so a handler added without its RBAC fails here rather than as a
    # "cannot watch" warning in a cluster. kopf has no public listing of its handlers; these are
    # the registries its own resource observer reads.
    import kopf
    import kvtune_operator.controller.handlers  # noqa: F401  (registers the operator's handlers)
    from kvtune_operator.webhook.handlers import REGISTRY

    registry = kopf.get_default_registry() if account == "kvtune-operator" else REGISTRY

    def resources(*handlers: Any) -> set[tuple[str, str]]:
        return {(h.selector.group, h.selector.plural or h.selector.any_name) for h in handlers}

    followed = resources(*registry._indexing.get_all_handlers(),
                         *registry._watching.get_all_handlers(),
                         *registry._spawning.get_all_handlers(),
                         *registry._changing.get_all_handlers())
    # Daemons and change handlers store finalizers and progress on the object.
    patched = resources(*registry._spawning.get_all_handlers(),
                        *registry._changing.get_all_handlers())
    reviewed = grants(EXPECTED[account])
    for group, plural in sorted(followed):
        for verb in ("list", "watch"):
            assert (CLUSTER, group, plural, verb, "") in reviewed, f"{verb} {group}/{plural}"
    for group, plural in sorted(patched):
        assert (CLUSTER, group, plural, "patch", "") in reviewed, f"patch {group}/{plural}"
