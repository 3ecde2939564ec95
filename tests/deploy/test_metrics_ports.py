"""Prometheus finds every part: the port each command serves /metrics on is the container port
named `metrics` and the port in the pod's prometheus.io annotations (docs/metrics.md)."""

from __future__ import annotations

from typing import Any

from kvtune_cli.main import build_parser
from kvtune_operator.controller.daemonset import render_agent_daemonset

from deploy.kubectl import one


def served_port(template: dict[str, Any]) -> int:
    """The metrics port of a pod template, after checking that its three mentions agree."""
    [container] = template["spec"]["containers"]
    args = build_parser().parse_args(container["args"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == ports["metrics"] == args.metrics_port
    assert args.metrics_address == "0.0.0.0"  # reachable from outside the pod
    port: int = args.metrics_port
    return port


def test_the_operator_serves_metrics_where_its_pod_says(
    installation: list[dict[str, Any]],
) -> None:
    template = one(installation, "Deployment", "kvtune-operator")["spec"]["template"]
    assert served_port(template) == 8081


def test_the_webhook_serves_metrics_where_its_pod_says(
    installation: list[dict[str, Any]],
) -> None:
    template = one(installation, "Deployment", "kvtune-webhook")["spec"]["template"]
    assert served_port(template) == 8082


def test_the_agent_serves_metrics_where_its_pod_says() -> None:
    template = render_agent_daemonset("kvtune-system", "kvtune")["spec"]["template"]
    assert served_port(template) == 9101
