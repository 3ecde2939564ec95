"""The kopf login of the operator and the webhook inside a pod: the API server at the Service
address the kubelet gives every pod, not at a DNS name only cluster DNS resolves (the real-node
tier, which has no cluster DNS, found the operator and the webhook retrying
`kubernetes.default.svc` forever)."""

from __future__ import annotations

import typing as t

import kopf
import pytest
from kvtune_operator.common import handlers as common_handlers

IN_POD = kopf.ConnectionInfo(server="https://kubernetes.default.svc", token="pod-token",
                             ca_path="/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
                             default_namespace="kvtune-system")


@pytest.fixture
def in_a_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    # What kopf's service-account login returns where the pod's token is mounted.
    monkeypatch.setattr(kopf, "login_with_service_account", lambda **_: IN_POD)


@pytest.mark.parametrize(("host", "port", "server"), [
    ("10.96.0.1", "443", "https://10.96.0.1:443"),
    ("fd00:10:96::1", "6443", "https://[fd00:10:96::1]:6443"),
])
def test_in_a_pod_the_api_server_is_reached_at_the_service_address_from_the_environment(
    in_a_pod: None, monkeypatch: pytest.MonkeyPatch, host: str, port: str, server: str
) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
    info = common_handlers.login(settings=kopf.OperatorSettings())
    assert info is not None
    assert info.server == server
    # Everything else is the service account's: token, CA (whose certificate names the
    # Service's IP), namespace.
    assert (info.token, info.ca_path, info.default_namespace) == (
        IN_POD.token, IN_POD.ca_path, IN_POD.default_namespace)


def test_without_the_service_environment_the_dns_name_stays(
    in_a_pod: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    info = common_handlers.login(settings=kopf.OperatorSettings())
    assert info == IN_POD


def test_outside_a_pod_the_kubeconfig_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    kubeconfig = kopf.ConnectionInfo(server="https://127.0.0.1:6443")
    monkeypatch.setattr(kopf, "login_with_service_account", lambda **_: None)
    monkeypatch.setattr(kopf, "login_with_kubeconfig", lambda **_: kubeconfig)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    assert common_handlers.login(settings=t.cast(t.Any, None)) == kubeconfig
