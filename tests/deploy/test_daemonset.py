"""The node agent's DaemonSet (kvtune_operator/controller/daemonset.py): its decisions, that the
`kvtune` command accepts its arguments, and that the real API server accepts the object."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client
from kvtune_api.labels import JOURNAL_LABEL
from kvtune_cli.main import build_parser
from kvtune_operator.common.profiles import PROFILE_LABEL
from kvtune_operator.controller.daemonset import AgentResources, render_agent_daemonset

NAMESPACE = "kvtune-system"
IMAGE = "registry.example.com/kvtune:1.2.3"


def pod_spec(**kwargs: Any) -> dict[str, Any]:
    spec: dict[str, Any] = render_agent_daemonset(NAMESPACE, IMAGE, **kwargs)["spec"]
    template: dict[str, Any] = spec["template"]["spec"]
    return template


def container(**kwargs: Any) -> dict[str, Any]:
    containers: list[dict[str, Any]] = pod_spec(**kwargs)["containers"]
    [agent] = containers
    return agent


def test_it_runs_only_on_nodes_a_profile_took_or_whose_agent_has_something_to_undo() -> None:
    terms = pod_spec()["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    # Separate terms are ORed; expressions within one term would be ANDed.
    assert terms == [{"matchExpressions": [{"key": PROFILE_LABEL, "operator": "Exists"}]},
                     {"matchExpressions": [{"key": JOURNAL_LABEL, "operator": "Exists"}]}]


def test_it_tolerates_every_taint_by_default() -> None:
    assert pod_spec()["tolerations"] == [{"operator": "Exists"}]


def test_given_tolerations_replace_the_default() -> None:
    only = {"key": "dedicated", "operator": "Equal", "value": "kubevirt", "effect": "NoSchedule"}
    assert pod_spec(tolerations=[only])["tolerations"] == [only]


def test_it_sees_the_host_as_a_privileged_root_process_in_the_hosts_pid_namespace() -> None:
    assert pod_spec()["hostPID"] is True
    security = container()["securityContext"]
    assert security["privileged"] is True
    assert security["runAsUser"] == 0  # the image's default user is not root
    assert security["readOnlyRootFilesystem"] is True


def test_the_kvtune_command_accepts_its_arguments_with_the_node_from_the_downward_api() -> None:
    agent = container()
    assert agent["image"] == IMAGE
    args = build_parser().parse_args(agent["args"])
    assert args.command == "agent"
    assert args.node == "$(NODE_NAME)"  # the kubelet expands it from the env below
    assert str(args.root) == "/proc/1/root"
    [node_name] = [e for e in agent["env"] if e["name"] == "NODE_NAME"]
    assert node_name["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}


def test_it_runs_as_the_agent_service_account_the_admission_policy_names() -> None:
    assert pod_spec()["serviceAccountName"] == "kvtune-agent"


def test_resources_have_requests_and_a_memory_limit_but_no_cpu_limit() -> None:
    assert container()["resources"] == {
        "requests": {"cpu": "50m", "memory": "96Mi"}, "limits": {"memory": "256Mi"}}
    custom = AgentResources(cpu_request="10m", memory_request="64Mi", memory_limit="128Mi")
    assert container(resources=custom)["resources"]["limits"] == {"memory": "128Mi"}


@pytest.mark.parametrize("priority_class", [None, "system-node-critical"])
def test_a_priority_class_is_set_only_when_given(priority_class: str | None) -> None:
    assert pod_spec(priority_class_name=priority_class).get("priorityClassName") == priority_class


def test_it_rolls_out_a_tenth_of_the_nodes_at_a_time() -> None:
    strategy = render_agent_daemonset(NAMESPACE, IMAGE)["spec"]["updateStrategy"]
    assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%"}}


def test_the_selector_matches_the_pod_labels() -> None:
    daemonset = render_agent_daemonset(NAMESPACE, IMAGE)
    selector = daemonset["spec"]["selector"]["matchLabels"]
    assert selector.items() <= daemonset["spec"]["template"]["metadata"]["labels"].items()


def test_the_api_server_accepts_it_in_the_privileged_namespace(
    installed: list[dict[str, Any]], api_client: client.ApiClient
) -> None:
    apps = client.AppsV1Api(api_client)
    daemonset = render_agent_daemonset(NAMESPACE, IMAGE, priority_class_name="system-node-critical")
    created = apps.create_namespaced_daemon_set(NAMESPACE, daemonset, dry_run="All")
    assert created.spec.template.spec.host_pid is True
