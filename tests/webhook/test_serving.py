"""The VMI admission webhook served for real: `kvtune webhook` runs (and the operator beside it,
labelling nodes and releasing profiles), the apiserver calls it over TLS.

Why: the pure tests prove what the webhook decides; only a real apiserver proves that the
configurations the webhook writes reach it (CA bundle, URL, selectors, failurePolicy), that the
answers are applied (the patch, the refusal, the warnings a client sees), what happens to a VMI
while the webhook is down, and that replicas share one CA through their Secret. VMIs go through
KubeVirt's real schema (fixture `kubevirt_crds`).

The webhook runs with failurePolicy Fail unless a test says otherwise, so that a webhook that
cannot be reached fails the test instead of passing it silently. It listens on 127.0.0.1, where
the local control plane reaches it; against an existing cluster, set
`KVTUNE_TEST_WEBHOOK_HOST` to an address of this machine that its apiserver can reach (for
kind, the docker network's gateway, e.g. 172.18.0.1).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime
import json
import os
import socket
import ssl
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kvtune_api.labels import READY_LABEL
from kvtune_operator.controller.settings import Settings
from kvtune_operator.webhook import configuration as webhook
from kvtune_operator.webhook.kube import Kube
from kvtune_operator.webhook.settings import WebhookSettings
from kvtune_operator.webhook.vmi.mutate import MUTATED_BY_ANNOTATION, OVERHEAD_ANNOTATION
from kvtune_operator.webhook.vmi.read import quantity_bytes
from support.cluster import ClusterAccess, apply_crds, is_gone, wait_for
from support.kubevirt import GROUP, VERSION
from support.operator import running_operator
from support.webhook import running_webhook

from webhook import Obj, make_vmi

VMIS = "virtualmachineinstances"
G, V = "kvtune.io", "v1alpha1"
PROFILES = "hypervisorprofiles"
SELECTED_LABEL = "kvtune-webhook-test"
SERVING_TIMEOUT = 60.0
IDLE_TIMEOUT = 2.0
WEBHOOK_HOST_ENV = "KVTUNE_TEST_WEBHOOK_HOST"
#: A webhook configuration's failurePolicy (WebhookSettings.failure_policy).
Policy = Literal["Fail", "Ignore"]


class Served:
    """The cluster side of this module: namespaces, a profile, the operator, and the webhook
    serving the profile."""

    def __init__(self, cluster: ClusterAccess, api: client.ApiClient) -> None:
        self.cluster = cluster
        self.api = api
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.admission = client.AdmissionregistrationV1Api(api)
        self.tag = uuid.uuid4().hex[:6]
        # Port 0: a free port, so that parallel test sessions never share one.
        # A short idle timeout, so that the tests of slow clients take seconds.
        self.settings = WebhookSettings(port=0, idle_timeout_seconds=IDLE_TIMEOUT,
                                        host=os.environ.get(WEBHOOK_HOST_ENV, "127.0.0.1"))
        self.policy: Policy | None = None
        self.url = ""
        self._running = contextlib.ExitStack()
        self._operator = contextlib.ExitStack()
        self._operator.enter_context(running_operator(Settings(), cluster.kubeconfig))
        self.selected = self._namespace("selected", {SELECTED_LABEL: self.tag})
        self.unselected = self._namespace("unselected", {})
        self.profile = self.make_profile("fast")

    def _namespace(self, role: str, labels: dict[str, str]) -> str:
        name = f"kvtune-webhook-{role}-{self.tag}"
        self.core.create_namespace({"metadata": {"name": name, "labels": labels}})
        return name

    def make_profile(self, name: str, **vmi: Any) -> str:
        """An Enforce profile for the nodes of pool <tag> and the VMIs of the selected namespace."""
        full = f"{self.tag}-{name}"
        self.custom.create_cluster_custom_object(G, V, PROFILES, {
            "apiVersion": f"{G}/{V}", "kind": "HypervisorProfile", "metadata": {"name": full},
            "spec": {
                "mode": "Enforce",
                "nodeSelector": {"matchLabels": {"pool": self.tag}},
                # Networking is judged in test_networking.py; here it would warn about every VMI.
                "vmi": {"namespaceSelector": {"matchLabels": {SELECTED_LABEL: self.tag}},
                        "dedicatedNetworking": "Off", **vmi},
            },
        })
        return full

    def delete_profile(self, name: str) -> None:
        self.custom.delete_cluster_custom_object(G, V, PROFILES, name)
        wait_for(lambda: is_gone(lambda: self.custom.get_cluster_custom_object(
            G, V, PROFILES, name)), f"profile {name} deleted")

    # --- the webhook ---

    def serve(self, policy: Policy = "Fail") -> None:
        """The webhook runs with `policy`, and answers for the module's profile."""
        if self.policy == policy:
            return
        self.stop()
        settings = dataclasses.replace(self.settings, failure_policy=policy)
        self.url = self._running.enter_context(
            running_webhook(settings, self.cluster.kubeconfig))
        self.policy = policy
        wait_for(lambda: self.failure_policies() == {policy}, f"configurations with {policy}",
                 SERVING_TIMEOUT)
        wait_for(lambda: self.probe() == self.profile, "the webhook shaping a VMI",
                 SERVING_TIMEOUT)

    def probe(self) -> str | None:
        """The profile that shapes a VMI of the selected namespace (a dry run); None while the
        webhook does not answer (under Fail the creation is refused then)."""
        try:
            return self.shaped_by(self.create("probe", dry_run=True))
        except ApiException:
            return None

    def stop(self) -> None:
        """Stops the webhook; its configurations stay, as in a real restart."""
        self._running.close()
        self.policy = None

    def failure_policies(self) -> set[str]:
        found = set()
        for read in (self.admission.read_mutating_webhook_configuration,
                     self.admission.read_validating_webhook_configuration):
            with contextlib.suppress(ApiException):
                found |= {w.failure_policy for w in read(webhook.CONFIGURATION_NAME).webhooks}
        return found

    # --- VMIs ---

    def create(self, name: str, domain: Obj | None = None, *, namespace: str | None = None,
               dry_run: bool = False, **kwargs: Any) -> Obj:
        vmi = self.vmi(name, domain, namespace=namespace, **kwargs)
        created: Obj = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, vmi["metadata"]["namespace"], VMIS, vmi,
            dry_run="All" if dry_run else None, field_validation="Strict")
        return created

    def create_with_warnings(self, name: str, domain: Obj) -> tuple[Obj, list[str]]:
        """The stored VMI and the `Warning:` headers of the response (AdmissionReview warnings)."""
        vmi = self.vmi(name, domain)
        response = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.selected, VMIS, vmi, _preload_content=False)
        return json.loads(response.data), list(response.headers.getlist("Warning"))

    def vmi(self, name: str, domain: Obj | None = None, *, namespace: str | None = None,
            **kwargs: Any) -> Obj:
        vmi = make_vmi(domain or {"cpu": {"cores": 2}, "memory": {"guest": "2Gi"}}, **kwargs)
        vmi["metadata"].update(name=f"{name}-{uuid.uuid4().hex[:6]}",
                               namespace=namespace or self.selected)
        return vmi

    @staticmethod
    def shaped_by(vmi: Obj) -> str | None:
        return (vmi["metadata"].get("annotations") or {}).get(MUTATED_BY_ANNOTATION)

    def close(self) -> None:
        self.delete_profile(self.profile)  # the operator releases its finalizer
        self.stop()
        self._operator.close()
        # A configuration left behind would send later tests' VMIs to a webhook nobody serves.
        with contextlib.suppress(ApiException):
            self.admission.delete_mutating_webhook_configuration(webhook.CONFIGURATION_NAME)
        with contextlib.suppress(ApiException):
            self.admission.delete_validating_webhook_configuration(webhook.CONFIGURATION_NAME)
        for namespace in (self.selected, self.unselected):
            self.core.delete_namespace(namespace)


@pytest.fixture(scope="module")
def served(
    cluster: ClusterAccess,
    api_client: client.ApiClient,
    kubevirt_crds: list[str],
    kvtune_crds: list[str],
) -> Iterator[Served]:
    cluster_side = Served(cluster, api_client)
    try:
        yield cluster_side
    finally:
        cluster_side.close()


@pytest.fixture
def webhook_up(served: Served) -> Served:
    served.serve("Fail")
    return served


def test_a_vmi_in_a_selected_namespace_is_stored_shaped(webhook_up: Served) -> None:
    stored = webhook_up.create("shaped")
    cpu = stored["spec"]["domain"]["cpu"]
    assert cpu["dedicatedCpuPlacement"] is True and cpu["isolateEmulatorThread"] is True
    assert stored["spec"]["nodeSelector"] == {
        "kvtune.io/profile": webhook_up.profile, READY_LABEL: "true"}
    assert webhook_up.shaped_by(stored) == webhook_up.profile
    resources = stored["spec"]["domain"]["resources"]
    assert resources["requests"] == resources["limits"]
    # No KubeVirt CR here, so a default install is assumed: without its ReservedOverheadMemlock
    # gate the overhead floor is reserved as memory requested above the guest's 2Gi.
    assert stored["spec"]["domain"]["memory"]["guest"] == "2Gi"
    assert resources["requests"]["cpu"] == "2"
    assert quantity_bytes(resources["requests"]["memory"], "request") > 2 * 1024**3
    assert "reservedOverhead" not in stored["spec"]["domain"]["memory"]


def test_a_vmi_in_a_namespace_no_profile_selects_is_stored_as_sent(webhook_up: Served) -> None:
    sent = webhook_up.vmi("outside", namespace=webhook_up.unselected)
    stored = webhook_up.create("outside", namespace=webhook_up.unselected)
    assert stored["spec"] == sent["spec"]
    assert "annotations" not in stored["metadata"]


def test_a_vmi_labelled_skip_never_reaches_the_webhook(webhook_up: Served) -> None:
    stored = webhook_up.create("skipped", labels={webhook.SKIP_LABEL: "true"})
    assert webhook_up.shaped_by(stored) is None
    assert "dedicatedCpuPlacement" not in stored["spec"]["domain"]["cpu"]


def test_a_vmi_contradicting_its_profile_is_refused_naming_the_field_and_the_fix(
    webhook_up: Served,
) -> None:
    with pytest.raises(ApiException) as refused:
        webhook_up.create("pinned-off", {"cpu": {"cores": 2, "dedicatedCpuPlacement": False},
                                         "memory": {"guest": "2Gi"}})
    assert refused.value.status == 422
    message = json.loads(refused.value.body)["message"]
    # The mutating webhook refuses it: KubeVirt's defaulting, next, would drop the false.
    assert "vmi-mutate.kvtune.io" in message
    assert "no memory size" not in message
    assert "spec.domain.cpu.dedicatedCpuPlacement is false" in message
    assert f"HypervisorProfile {webhook_up.profile}" in message
    assert "remove the field or set it to true" in message


def test_a_vmi_two_profiles_select_is_refused_naming_both(webhook_up: Served) -> None:
    other = webhook_up.make_profile("other", selector={"matchLabels": {"tier": "both"}})
    try:
        def refused() -> str | None:
            try:
                webhook_up.create("both", labels={"tier": "both"}, dry_run=True)
            except ApiException as e:
                return str(json.loads(e.body)["message"]) if e.status == 403 else None
            return None

        wait_for(lambda: refused() is not None, "the second profile claiming the VMI")
        message = refused() or ""
        assert webhook_up.profile in message and other in message
        assert "narrow their vmi.namespaceSelector / vmi.selector" in message
        # A VMI only the first profile selects is still shaped by it.
        assert webhook_up.shaped_by(webhook_up.create("one", dry_run=True)) == webhook_up.profile
    finally:
        webhook_up.delete_profile(other)


def test_a_vmi_larger_than_every_ready_node_is_admitted_with_a_warning(
    webhook_up: Served,
) -> None:
    node = f"{webhook_up.tag}-small"
    webhook_up.core.create_node({"metadata": {"name": node, "labels": {
        "pool": webhook_up.tag, READY_LABEL: "true"}}})
    try:
        webhook_up.core.patch_node_status(node, {"status": {
            "capacity": {"cpu": "8", "memory": "16Gi", "pods": "110"},
            "allocatable": {"cpu": "8", "memory": "16Gi", "pods": "110"}}})
        wait_for(lambda: (webhook_up.core.read_node(node).metadata.labels or {}).get(
            "kvtune.io/profile") == webhook_up.profile, "the operator labelling the node")

        def warnings(domain: Obj) -> list[str]:
            stored, found = webhook_up.create_with_warnings("sized", domain)
            assert webhook_up.shaped_by(stored) == webhook_up.profile
            return found

        wait_for(lambda: not warnings({"cpu": {"cores": 2}, "memory": {"guest": "4Gi"}}),
                 "a VMI that fits the node admitted without a warning")
        found = warnings({"cpu": {"cores": 2}, "memory": {"guest": "32Gi"}})
        assert len(found) == 1, found
        assert "no ready node of the profile has room for this VMI" in found[0]
        assert f"{node} has 8 CPU, 16.00Gi memory" in found[0]
    finally:
        webhook_up.core.delete_node(node)


def test_the_overhead_ratio_comes_from_the_kubevirt_cr_once_its_crd_appears(
    webhook_up: Served, api_client: client.ApiClient
) -> None:
    if not webhook_up.cluster.local:
        pytest.skip("installs a stand-in KubeVirt CRD, which only a throwaway cluster may get")
    assert "ratio" not in _overhead(webhook_up.create("before", dry_run=True))["components"]
    crd = apply_crds(api_client, [KUBEVIRT_CRD])[0]
    extensions = client.ApiextensionsV1Api(api_client)
    try:
        # kopf rescans the API group on each event of a CRD; the apiserver's discovery may serve
        # the new resource only after the CRD's last event, and then kopf would not notice it
        # until the next one. KubeVirt's own installer updates its CRDs many times; one update
        # once discovery serves the resource stands in for that here.
        wait_for(lambda: any(r.name == "kubevirts" for r in client.CustomObjectsApi(
            api_client).get_api_resources("kubevirt.io", "v1").resources),
            "discovery serving kubevirts")
        extensions.patch_custom_resource_definition(crd, {"metadata": {"labels": {
            "kvtune-test/touched": "true"}}})
        webhook_up.custom.create_namespaced_custom_object(
            "kubevirt.io", "v1", webhook_up.unselected, "kubevirts", {
                "apiVersion": "kubevirt.io/v1", "kind": "KubeVirt", "metadata": {"name": "kv"},
                "spec": {"configuration": {"additionalGuestMemoryOverheadRatio": "2.0"}}})
        wait_for(lambda: "ratio" in _overhead(webhook_up.create("after", dry_run=True))[
            "components"], "the ratio counted in the overhead", SERVING_TIMEOUT)
        components = _overhead(webhook_up.create("after", dry_run=True))["components"]
        assert components["ratio"] >= sum(v for k, v in components.items() if k != "ratio") - 1000
    finally:
        extensions.delete_custom_resource_definition(crd)


@pytest.mark.parametrize(("policy", "admitted"), [("Fail", False), ("Ignore", True)])
def test_with_the_webhook_down_the_failure_policy_decides(
    served: Served, policy: Policy, admitted: bool
) -> None:
    served.serve(policy)
    served.stop()
    assert served.failure_policies() == {policy}, "the configurations outlive the webhook"
    try:
        stored = served.create("while-down")
    except ApiException as e:
        assert not admitted, f"refused under {policy}: {e.body}"
        assert e.status == 500 and "failed calling webhook" in e.body
    else:
        assert admitted, "admitted under Fail"
        assert served.shaped_by(stored) is None


def test_replicas_sharing_a_secret_serve_one_ca_and_each_answers(served: Served) -> None:
    served.stop()
    secret = f"{served.unselected}/kvtune-webhook-tls"
    settings = dataclasses.replace(served.settings, failure_policy="Fail", tls_secret=secret)
    with running_webhook(settings, served.cluster.kubeconfig) as first, \
            running_webhook(settings, served.cluster.kubeconfig) as second:
        assert first != second
        mutating = served.admission.read_mutating_webhook_configuration(
            webhook.CONFIGURATION_NAME)
        ca = base64.b64decode(mutating.webhooks[0].client_config.ca_bundle)
        # Whichever published last, the apiserver's caBundle verifies both replicas.
        assert _served_certificate(first, ca) == _served_certificate(second, ca)
        assert served.shaped_by(served.create("replicated", dry_run=True)) == served.profile
    stored = served.core.read_namespaced_secret("kvtune-webhook-tls", served.unselected)
    assert base64.b64decode(stored.data["ca.crt"]) == ca
    assert stored.type == "kubernetes.io/tls"


def test_deleting_kvtunes_namespace_takes_the_configurations_with_it(served: Served) -> None:
    # Uninstalling (`kubectl delete -k`) deletes the namespace; configurations left behind
    # would, under Fail, block every VMI creation. The garbage collector removes them instead.
    served.stop()
    home = f"kvtune-home-{served.tag}"
    served.core.create_namespace({"metadata": {"name": home}})
    settings = dataclasses.replace(served.settings, failure_policy="Fail", namespace=home)
    with running_webhook(settings, served.cluster.kubeconfig):
        pass
    owners = served.admission.read_validating_webhook_configuration(
        webhook.CONFIGURATION_NAME).metadata.owner_references
    assert [(o.kind, o.name) for o in owners] == [("Namespace", home)]
    served.core.delete_namespace(home)
    wait_for(lambda: not served.failure_policies(), "the configurations collected", 120)
    stored = served.create("after-uninstall")
    assert served.shaped_by(stored) is None


def test_the_shared_secret_is_renewed_under_the_same_ca_and_kept_otherwise(
    served: Served,
) -> None:
    kube, name = Kube(served.api), f"renewed-{served.tag}"
    source = webhook.SecretTls(kube, served.unselected, name, ["127.0.0.1"])
    made = source.load()
    assert source.load() == made, "a valid Secret is served as it is"
    data, version = kube.read_secret(served.unselected, name) or ({}, "")
    nearly_over = _certificate_until(data, datetime.timedelta(days=10))
    assert kube.replace_secret(served.unselected, name, {**data, "tls.crt": nearly_over}, version)
    renewed = source.load()
    assert renewed.ca_pem == made.ca_pem and renewed.cert_pem not in (made.cert_pem, nearly_over)
    moved = webhook.SecretTls(kube, served.unselected, name, ["127.0.0.1", "kvtune.example"])
    assert x509.load_pem_x509_certificate(moved.load().cert_pem).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName) == ["kvtune.example"]
    served.core.delete_namespaced_secret(name, served.unselected)


def _served_certificate(url: str, ca: bytes) -> bytes:
    """The certificate the webhook at `url` presents, verified against `ca` (raises if not)."""
    where = urlsplit(url)
    context = ssl.create_default_context(cadata=ca.decode())
    with socket.create_connection((where.hostname, where.port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=where.hostname) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def _certificate_until(data: dict[str, bytes], left: datetime.timedelta) -> bytes:
    """A serving certificate from the Secret's own CA that ends `left` from now."""
    from kvtune_operator.webhook.pki import CertificateAuthority

    ca = CertificateAuthority.from_pem(data["ca.crt"], data["ca.key"])
    return ca.issue_serving("127.0.0.1", ["127.0.0.1"], left).cert_pem


# --- the configurations and TLS material, without a cluster ---

URL, CA = "https://127.0.0.1:9443", b"CA"


def test_the_configurations_send_vmi_creations_to_each_handler() -> None:
    mutating, validating = webhook.configurations(URL, CA, WebhookSettings())
    assert [mutating["kind"], validating["kind"]] == [
        "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"]
    (mutate,), (validate,) = mutating["webhooks"], validating["webhooks"]
    assert mutate["clientConfig"] == {
        "url": "https://127.0.0.1:9443/vmi-mutate", "caBundle": "Q0E="}
    assert validate["clientConfig"]["url"] == "https://127.0.0.1:9443/vmi-validate"
    assert mutate["rules"] == validate["rules"] == [{
        "apiGroups": ["kubevirt.io"], "apiVersions": ["v1"],
        "resources": ["virtualmachineinstances"], "operations": ["CREATE"], "scope": "Namespaced"}]
    assert mutate["reinvocationPolicy"] == "IfNeeded" and "reinvocationPolicy" not in validate
    assert (mutate["failurePolicy"], mutate["timeoutSeconds"]) == ("Ignore", 10)


def test_the_configurations_leave_out_system_namespaces_kvtunes_and_skipped_ones() -> None:
    settings = WebhookSettings(namespace="kvtune")
    (mutate,) = webhook.configurations(URL, CA, settings)[0]["webhooks"]
    skip = {"key": "kvtune.io/skip", "operator": "NotIn", "values": ["true"]}
    assert mutate["namespaceSelector"]["matchExpressions"] == [
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn",
         "values": ["kube-node-lease", "kube-public", "kube-system", "kvtune"]}, skip]
    assert mutate["objectSelector"] == {"matchExpressions": [skip]}


def test_behind_a_service_the_configurations_name_it_and_the_certificate_does_too() -> None:
    settings = WebhookSettings(service="kvtune/kvtune-webhook", failure_policy="Fail")
    (validate,) = webhook.configurations(URL, CA, settings)[1]["webhooks"]
    assert validate["clientConfig"] == {"caBundle": "Q0E=", "service": {
        "namespace": "kvtune", "name": "kvtune-webhook", "port": 443, "path": "/vmi-validate"}}
    assert validate["failurePolicy"] == "Fail"
    assert webhook.serving_hosts(settings)[:2] == [
        "kvtune-webhook.kvtune.svc", "kvtune-webhook.kvtune.svc.cluster.local"]


@pytest.mark.parametrize("reference", ["kvtune-webhook", "/name", "ns/", "a/b/c"])
def test_a_service_that_is_not_namespace_slash_name_is_refused(reference: str) -> None:
    with pytest.raises(webhook.WebhookSetupError, match="is not namespace/name"):
        webhook.serving_hosts(WebhookSettings(service=reference))


def test_a_timeout_the_apiserver_would_refuse_stops_the_webhook_at_startup() -> None:
    with pytest.raises(webhook.WebhookSetupError, match="outside the 1 to 30 s"):
        webhook.check(WebhookSettings(timeout_seconds=31))


def test_a_generated_certificate_names_every_host() -> None:
    material = webhook.GeneratedTls(["127.0.0.1", "localhost"]).load()
    cert = x509.load_pem_x509_certificate(material.cert_pem)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert webhook.covers(cert, ["localhost", "127.0.0.1"])
    assert not webhook.covers(cert, ["elsewhere"])


def test_mounted_files_are_read_as_they_are(tmp_path: Path) -> None:
    for name, text in zip(webhook.TLS_FILES, ("cert", "key", "ca"), strict=True):
        (tmp_path / name).write_text(text)
    assert webhook.MountedTls(tmp_path).load() == webhook.TlsMaterial(b"cert", b"key", b"ca")


def test_a_partly_mounted_secret_is_refused_naming_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "tls.crt").write_text("cert")
    (tmp_path / "tls.key").write_text("key")
    with pytest.raises(webhook.WebhookSetupError, match=r"lacks ca\.crt: mount a"):
        webhook.MountedTls(tmp_path).load()


def _overhead(vmi: Obj) -> dict[str, Any]:
    figures: dict[str, Any] = json.loads(vmi["metadata"]["annotations"][OVERHEAD_ANNOTATION])
    return figures


# Just enough of KubeVirt's CRD for a KubeVirt CR to be stored.
KUBEVIRT_CRD: Obj = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "kubevirts.kubevirt.io"},
    "spec": {
        "group": "kubevirt.io",
        "names": {"kind": "KubeVirt", "plural": "kubevirts", "singular": "kubevirt",
                  "listKind": "KubeVirtList"},
        "scope": "Namespaced",
        "versions": [{
            "name": "v1", "served": True, "storage": True,
            "schema": {"openAPIV3Schema": {"type": "object",
                                           "x-kubernetes-preserve-unknown-fields": True}},
        }],
    },
}


# --- the webhook under bad clients: every answer JSON, no connection held for ever ---

def _tls(url: str) -> ssl.SSLSocket:
    parts = urlsplit(url)
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    raw = socket.create_connection((parts.hostname, parts.port), timeout=30)
    return context.wrap_socket(raw)


def _post(url: str, body: bytes, path: str = f"/{webhook.MUTATE_ID}") -> tuple[int, Any]:
    """(status, decoded JSON body) of one POST; the body must be JSON, whatever the status."""
    with _tls(url) as conn:
        conn.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: webhook\r\n"
                     b"Content-Type: application/json\r\nConnection: close\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    head, _, payload = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload)


def _review(request: Any) -> bytes:
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                       "request": request}).encode()


MALFORMED: list[tuple[str, bytes, str]] = [
    ("not JSON", b"{nope", "the body is not JSON"),
    ("empty", b"", "the body is not JSON"),
    ("null", b"null", "its request is NoneType"),
    ("an array", b"[1]", "its request is NoneType"),
    ("a null request", _review(None), "its request is NoneType"),
    ("an array request", _review([1, 2]), "its request is list"),
    ("a string request", _review("CREATE"), "its request is str"),
    ("a number namespace", _review({"uid": "u", "namespace": 5}), "request.namespace is int"),
    ("a list namespace", _review({"uid": "u", "namespace": ["a"]}), "request.namespace is list"),
    ("an object uid", _review({"uid": {}}), "request.uid is dict"),
    ("a string object", _review({"uid": "u", "operation": "CREATE", "object": "vm"}),
     "request.object is str"),
    ("100,000-deep JSON", b"[" * 100_000 + b"]" * 100_000, "the body is not JSON"),
    ("NaN in the object", b'{"request": {"uid": "u", "operation": "CREATE", "object": '
     b'{"spec": {"x": NaN}}}}', "the body is not JSON"),
    ("Infinity as the request", b'{"request": Infinity}', "the body is not JSON"),
]


@pytest.mark.parametrize(("body", "expected"), [m[1:] for m in MALFORMED],
                         ids=[m[0] for m in MALFORMED])
def test_a_body_that_is_no_admission_review_gets_a_400_in_json(
    webhook_up: Served, body: bytes, expected: str
) -> None:
    status, answer = _post(webhook_up.url, body)
    assert status == 400
    assert answer["kind"] == "Status" and expected in answer["message"]


def test_an_oversized_review_gets_a_413_in_json_before_its_body_is_read(
    webhook_up: Served,
) -> None:
    with _tls(webhook_up.url) as conn:
        conn.sendall(b"POST /" + webhook.MUTATE_ID.encode() + b" HTTP/1.1\r\nHost: w\r\n"
                     b"Content-Length: " + str(5 * 1024 * 1024).encode() + b"\r\n\r\n")
        said = _closed_within(conn, 3 * IDLE_TIMEOUT)
    assert said is not None
    head, _, payload = said.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413") and json.loads(payload)["code"] == 413


def test_an_unknown_path_gets_a_404_in_json(webhook_up: Served) -> None:
    status, answer = _post(webhook_up.url, _review({"uid": "u"}), path="/elsewhere")
    assert (status, answer["kind"]) == (404, "Status")


def test_a_review_after_the_bad_ones_is_answered_as_ever(webhook_up: Served) -> None:
    status, answer = _post(webhook_up.url, _review({"uid": "u", "operation": "DELETE"}))
    assert status == 200
    assert answer["response"] == {"uid": "u", "allowed": True}


def _closed_within(conn: socket.socket, seconds: float) -> bytes | None:
    """What the server sent before it closed the connection; None if it did not close it in
    time."""
    got, deadline = b"", time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        conn.settimeout(left)
        try:
            chunk = conn.recv(65536)
        except TimeoutError:
            return None
        except OSError:  # reset: closed too
            return got
        if not chunk:
            return got
        got += chunk
    return None


def test_a_client_that_never_finishes_its_headers_is_cut_off(webhook_up: Served) -> None:
    with _tls(webhook_up.url) as conn:
        conn.sendall(b"POST /" + webhook.MUTATE_ID.encode() + b" HTTP/1.1\r\nHost: w")
        assert _closed_within(conn, 3 * IDLE_TIMEOUT) == b""


def test_a_kept_alive_client_that_never_finishes_its_next_headers_is_cut_off(
    webhook_up: Served,
) -> None:
    # One request answered makes a connection a kept-alive one, which may idle for minutes
    # between requests; a request begun on it must still come whole within the timeout.
    body = _review({"uid": "u", "operation": "DELETE"})
    with _tls(webhook_up.url) as conn:
        conn.sendall(b"POST /" + webhook.MUTATE_ID.encode() + b" HTTP/1.1\r\nHost: w\r\n"
                     b"Content-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        reply = b""
        while not reply.endswith(b"}"):
            reply += conn.recv(65536)
        assert reply.startswith(b"HTTP/1.1 200")
        conn.sendall(b"POST /" + webhook.MUTATE_ID.encode() + b" HTTP/1.1\r\nHost: w")
        assert _closed_within(conn, 3 * IDLE_TIMEOUT) == b""


def test_a_client_that_never_sends_its_body_is_cut_off(webhook_up: Served) -> None:
    with _tls(webhook_up.url) as conn:
        conn.sendall(b"POST /" + webhook.MUTATE_ID.encode() + b" HTTP/1.1\r\nHost: w\r\n"
                     b"Content-Length: 1000\r\n\r\n{")
        said = _closed_within(conn, 3 * IDLE_TIMEOUT)
        assert said is not None and said.startswith(b"HTTP/1.1 408")


def test_a_connection_that_never_finishes_its_tls_handshake_is_cut_off(
    webhook_up: Served,
) -> None:
    parts = urlsplit(webhook_up.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as raw:
        raw.sendall(b"\x16\x03\x01")  # the first bytes of a ClientHello, and no more
        assert _closed_within(raw, 3 * IDLE_TIMEOUT) is not None
