"""deploy/ as kubectl and the real API server see it: the kustomizations render, the pieces that
must agree do agree, the operator's and the webhook's pods meet the `restricted` Pod Security
Standard, and every manifest of both installations passes a server-side dry run."""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kvtune_cli.main import build_parser
from kvtune_operator.controller.daemonset import render_agent_daemonset
from support.cluster import wait_for

from deploy.kubectl import DEPLOY, REPO, Kubectl, of_kind, one

OVERLAYS = ("default", "overlays/kind", "overlays/node-e2e")
NAMESPACE = "kvtune-system"


def operator_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return container_of(objects, "kvtune-operator")


def container_of(objects: list[dict[str, Any]], deployment: str) -> dict[str, Any]:
    containers: list[dict[str, Any]] = one(objects, "Deployment", deployment)["spec"]["template"][
        "spec"]["containers"]
    [container] = containers
    return container


def agent_image(container: dict[str, Any]) -> str:
    values: list[str] = [e["value"] for e in container["env"] if e["name"] == "KVTUNE_AGENT_IMAGE"]
    [value] = values
    return value


def test_the_crds_kustomization_lists_every_generated_crd() -> None:
    listed = yaml.safe_load((REPO / "crds" / "kustomization.yml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in (REPO / "crds").glob("*.yaml"))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_agent_runs_the_operators_image(kubectl_binary: Kubectl, overlay: str) -> None:
    container = operator_container(kubectl_binary.render(DEPLOY / overlay))
    assert agent_image(container) == container["image"]


def test_setting_the_image_in_a_further_overlay_moves_the_agent_too(
    kubectl_binary: Kubectl, tmp_path: Path
) -> None:
    # What `kustomize edit set image kvtune=...` writes in a user's own overlay.
    base = os.path.relpath(DEPLOY / "default", tmp_path)
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": [base],
        "images": [{"name": "kvtune", "newName": "registry.example.com/kvtune", "newTag": "9.9"}],
    }))
    container = operator_container(kubectl_binary.render(tmp_path))
    assert container["image"] == agent_image(container) == "registry.example.com/kvtune:9.9"


def test_the_kind_overlay_never_pulls(kubectl_binary: Kubectl) -> None:
    rendered = kubectl_binary.render(DEPLOY / "overlays/kind")
    for deployment in ("kvtune-operator", "kvtune-webhook"):
        container = container_of(rendered, deployment)
        assert (container["image"], container["imagePullPolicy"]) == ("kvtune:dev",
                                                                      "IfNotPresent")


def test_the_webhook_runs_the_operators_image(kubectl_binary: Kubectl) -> None:
    rendered = kubectl_binary.render(DEPLOY / "default")
    assert container_of(rendered, "kvtune-webhook")["image"] == operator_container(
        rendered)["image"]


def test_the_operator_runs_two_peering_replicas_with_its_probe_and_environment(
    installation: list[dict[str, Any]],
) -> None:
    deployment = one(installation, "Deployment", "kvtune-operator")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    container = operator_container(installation)
    args = build_parser().parse_args(container["args"])
    assert args.command == "operator" and not args.standalone  # peering on
    _check_liveness(container, args.liveness)
    # What the operator needs to keep the agent DaemonSet (see `kvtune operator --help`).
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["KVTUNE_AGENT_IMAGE"]["value"] == container["image"]


def test_the_webhook_command_line_matches_its_service_secret_and_probes(
    installation: list[dict[str, Any]],
) -> None:
    deployment = one(installation, "Deployment", "kvtune-webhook")
    assert deployment["spec"]["replicas"] == 2
    budget = one(installation, "PodDisruptionBudget", "kvtune-webhook")
    assert budget["spec"]["selector"] == deployment["spec"]["selector"]
    container = container_of(installation, "kvtune-webhook")
    args = build_parser().parse_args(container["args"])
    assert args.command == "webhook"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    service = one(installation, "Service", "kvtune-webhook")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert args.service == f"{NAMESPACE}/{service['metadata']['name']}"
    [service_port] = service["spec"]["ports"]
    assert service_port["port"] == 443
    assert ports[service_port["targetPort"]] == args.port
    assert container["readinessProbe"]["tcpSocket"]["port"] == "webhook"
    _check_liveness(container, args.liveness)
    # The Secret the replicas share is the one, in the one namespace, its Role grants.
    secret_namespace, secret = args.tls_secret.split("/")
    role = one(installation, "Role", "kvtune-webhook-tls")
    assert role["metadata"]["namespace"] == secret_namespace == NAMESPACE
    assert [secret] == [n for r in role["rules"] for n in r.get("resourceNames", [])]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}  # key loading


def _check_liveness(container: dict[str, Any], url: str) -> None:
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    liveness = urllib.parse.urlsplit(url)
    assert ports[container["livenessProbe"]["httpGet"]["port"]] == liveness.port
    assert container["livenessProbe"]["httpGet"]["path"] == liveness.path


def _pod(template: dict[str, Any], name: str) -> dict[str, Any]:
    # The test namespace has only the `default` ServiceAccount; Pod Security ignores which.
    spec = {**template["spec"], "serviceAccountName": "default"}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def test_the_operator_and_webhook_pods_meet_the_restricted_pod_security_standard(
    installation: list[dict[str, Any]], api_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    core.patch_namespace(namespace, {"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest"}}})
    for name in ("kvtune-operator", "kvtune-webhook"):
        template = one(installation, "Deployment", name)["spec"]["template"]
        core.create_namespaced_pod(namespace, _pod(template, name), dry_run="All")
    # And the check bites: the agent could not run there.
    agent = render_agent_daemonset(namespace, "kvtune")["spec"]["template"]
    with pytest.raises(client.ApiException) as refused:
        core.create_namespaced_pod(namespace, _pod(agent, "agent"), dry_run="All")
    assert refused.value.status == 403 and "violates PodSecurity" in str(refused.value.body)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_manifest_passes_a_server_side_dry_run(
    installed: list[dict[str, Any]], kubectl: Kubectl, overlay: str
) -> None:
    # The CRDs and the namespace are in place (`installed`): a dry run cannot create them for
    # the objects that need them.
    out = kubectl.run("apply", "--dry-run=server", "-k", str(DEPLOY / overlay))
    assert "deployment.apps/kvtune-operator" in out
    assert "deployment.apps/kvtune-webhook" in out
    assert "poddisruptionbudget.policy/kvtune-webhook" in out


def test_the_node_e2e_overlay_is_the_kind_overlay_plus_the_agents_host_root_policy(
    kubectl_binary: Kubectl,
) -> None:
    kind = kubectl_binary.render(DEPLOY / "overlays/kind")
    node = kubectl_binary.render(DEPLOY / "overlays/node-e2e")
    assert [o for o in kind if o not in node] == []
    assert sorted(o["kind"] for o in node if o not in kind) == [
        "MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding"]


def test_the_node_e2e_policy_gives_the_operators_agent_the_hosts_root_and_changes_nothing_else(
    installed: list[dict[str, Any]], kubectl_binary: Kubectl, kubectl: Kubectl,
    api_client: client.ApiClient,
) -> None:
    policy = of_kind(kubectl_binary.render(DEPLOY / "overlays/node-e2e"),
                     "MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding")
    apps = client.AppsV1Api(api_client)
    wanted = render_agent_daemonset(NAMESPACE, "kvtune:dev")
    kubectl.apply(policy, "--server-side")
    try:
        def create() -> dict[str, Any]:
            response = apps.create_namespaced_daemon_set(
                NAMESPACE, wanted, dry_run="All", _preload_content=False)
            created: dict[str, Any] = yaml.safe_load(response.data)
            return created

        # The apiserver loads a new policy within a second or so.
        wait_for(lambda: "host" in str(create()["spec"]["template"]["spec"]["volumes"]),
                 "the policy rewriting the agent's DaemonSet", 30, interval=0.5)
        got = create()["spec"]["template"]["spec"]
        want = wanted["spec"]["template"]["spec"]
        [container], [wanted_container] = got["containers"], want["containers"]
        assert container["args"] == [
            "/host" if a == "/proc/1/root" else a for a in wanted_container["args"]]
        assert "/proc/1/root" in wanted_container["args"]
        assert [v["name"] for v in got["volumes"]] == [v["name"] for v in want["volumes"]] + [
            "host"]
        assert got["volumes"][-1]["hostPath"] == {"path": "/", "type": "Directory"}
        assert [(m["name"], m["mountPath"]) for m in container["volumeMounts"]] == [
            (m["name"], m["mountPath"]) for m in wanted_container["volumeMounts"]] + [
            ("host", "/host")]
        for key in ("hostPID", "serviceAccountName", "tolerations", "affinity"):
            assert got[key] == want[key], key
        assert container["securityContext"] == wanted_container["securityContext"]
        # Any other DaemonSet passes untouched.
        other = {**wanted, "metadata": {**wanted["metadata"], "name": "not-the-agent"}}
        response = apps.create_namespaced_daemon_set(
            NAMESPACE, other, dry_run="All", _preload_content=False)
        untouched = yaml.safe_load(response.data)["spec"]["template"]["spec"]
        assert [v["name"] for v in untouched["volumes"]] == [v["name"] for v in want["volumes"]]
    finally:
        for obj in policy:
            kubectl.run("delete", obj["kind"].lower(), obj["metadata"]["name"],
                        "--ignore-not-found")
