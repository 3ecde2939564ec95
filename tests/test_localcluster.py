"""The session's cluster behaves like a real one in the ways API tests rely on: it answers,
namespaces finish deleting, ownerReference cascades are collected, RBAC is enforced, and the
project's generated CRDs install."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import kubernetes
import pytest
from cryptography import x509
from kubernetes import client
from kubernetes.client.rest import ApiException
from kvtune_cli.localcluster import LocalCluster, control_plane_bin_dir
from kvtune_cli.nodecluster import host_address
from support.cluster import ClusterAccess, impersonating, is_gone, wait_for


def test_the_api_server_answers_with_its_version(
    cluster: ClusterAccess, api_client: client.ApiClient
) -> None:
    version = client.VersionApi(api_client).get_code()
    assert version.git_version.startswith("v1.")
    assert api_client.configuration.host == cluster.server


def test_a_deleted_namespace_is_removed_with_its_content(api_client: client.ApiClient) -> None:
    core = client.CoreV1Api(api_client)
    name = core.create_namespace({"metadata": {"generateName": "kvtune-ns-"}}).metadata.name
    core.create_namespaced_config_map(name, {"metadata": {"name": "content"}})

    core.delete_namespace(name)

    # Only the namespace controller empties a namespace and removes its finalizer.
    wait_for(lambda: is_gone(lambda: core.read_namespace(name)), f"deletion of namespace {name}")


def test_dependents_are_garbage_collected_after_their_owner(
    api_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    reference = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "owner",
        "uid": owner.metadata.uid,
    }
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "dependent", "ownerReferences": [reference]}}
    )

    core.delete_namespaced_config_map("owner", namespace, propagation_policy="Background")

    wait_for(
        lambda: is_gone(lambda: core.read_namespaced_config_map("dependent", namespace)),
        "garbage collection of the dependent ConfigMap",
    )


def test_rbac_forbids_a_serviceaccount_without_roles_to_list_nodes(
    cluster: ClusterAccess, api_client: client.ApiClient
) -> None:
    client.CoreV1Api(api_client).list_node()  # the admin may: the 403 below is RBAC's doing
    nobody = impersonating(cluster.kubeconfig, "system:serviceaccount:default:nobody")
    try:
        with pytest.raises(ApiException) as denied:
            client.CoreV1Api(nobody).list_node()
    finally:
        nobody.close()
    assert denied.value.status == 403
    assert "system:serviceaccount:default:nobody" in str(denied.value.body)


def test_the_generated_kvtune_crds_install(kvtune_crds: list[str]) -> None:
    assert "hypervisorprofiles.kvtune.io" in kvtune_crds


def test_a_control_plane_for_nodes_serves_on_the_host_address_and_authorizes_nodes() -> None:
    # The node-capable mode kvtune_cli.nodecluster builds on, without a kubelet: the apiserver
    # at the host address (what the kubernetes Service points at), serving a certificate that
    # names the Service, and a kubelet's identity limited to its own Node by the Node authorizer
    # and NodeRestriction.
    address = host_address()
    repo = Path(__file__).resolve().parents[1]
    with LocalCluster.start(control_plane_bin_dir(repo), for_nodes=address) as local:
        assert local.server.startswith(f"https://{address}:")
        admin = kubernetes.config.new_client_from_config(config_file=str(local.kubeconfig))
        slices = client.DiscoveryV1Api(admin).list_namespaced_endpoint_slice(
            "default", label_selector="kubernetes.io/service-name=kubernetes")
        assert [e.addresses for s in slices.items for e in s.endpoints] == [[address]]
        kubelet = kubernetes.config.new_client_from_config(config_file=str(
            local.client_kubeconfig("system:node:node-a", ["system:nodes"], "node-a")))
        core = client.CoreV1Api(kubelet)
        core.create_node({"metadata": {"name": "node-a"}})
        with pytest.raises(ApiException) as refused:
            core.create_node({"metadata": {"name": "node-b"}})
        assert refused.value.status == 403
        with pytest.raises(ApiException) as refused:
            core.list_namespaced_secret("default")
        assert refused.value.status == 403
        cert = x509.load_pem_x509_certificate((local.workdir / "apiserver.crt").read_bytes())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert ipaddress.ip_address("10.0.0.1") in names.get_values_for_type(x509.IPAddress)
        assert "kubernetes.default.svc" in names.get_values_for_type(x509.DNSName)
        admin.close()
        kubelet.close()
