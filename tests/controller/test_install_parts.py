"""At startup the operator creates the peering object and keeps the agent DaemonSet."""

from __future__ import annotations

import asyncio
import pathlib

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kvtune_operator.controller.kube import Kube
from kvtune_operator.controller.passes import install_parts
from kvtune_operator.controller.settings import PEERING_NAME, Settings
from support.cluster import apply_crds

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_startup_creates_the_peering_object_and_the_agent_daemonset_once(
    api_client: client.ApiClient, namespace: str
) -> None:
    crds = [d for d in yaml.safe_load_all((REPO / "deploy/base/kopf-peering.yaml").read_text())
            if d["kind"] == "CustomResourceDefinition"]
    apply_crds(api_client, crds)
    kube = Kube(api_client)
    settings = Settings(agent_image="registry.example/kvtune:1.0", namespace=namespace)
    asyncio.run(install_parts(kube, settings, standalone=False))

    custom, apps = client.CustomObjectsApi(api_client), client.AppsV1Api(api_client)
    assert custom.get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", PEERING_NAME)
    ds = apps.read_namespaced_daemon_set("kvtune-agent", namespace)
    assert ds.spec.template.spec.containers[0].image == "registry.example/kvtune:1.0"
    version = ds.metadata.resource_version

    asyncio.run(install_parts(kube, settings, standalone=False))  # a restart
    assert apps.read_namespaced_daemon_set("kvtune-agent", namespace).metadata.resource_version \
        == version, "an unchanged DaemonSet must not be rewritten"

    upgraded = Settings(agent_image="registry.example/kvtune:1.1", namespace=namespace)
    asyncio.run(install_parts(kube, upgraded, standalone=True))
    ds = apps.read_namespaced_daemon_set("kvtune-agent", namespace)
    assert ds.spec.template.spec.containers[0].image == "registry.example/kvtune:1.1"


def test_without_an_image_no_daemonset_is_managed(
    api_client: client.ApiClient, namespace: str
) -> None:
    asyncio.run(install_parts(Kube(api_client), Settings(namespace=namespace), standalone=True))
    with pytest.raises(ApiException) as missing:
        client.AppsV1Api(api_client).read_namespaced_daemon_set("kvtune-agent", namespace)
    assert missing.value.status == 404
