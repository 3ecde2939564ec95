"""The generated CRDs on the real kube-apiserver: samples accepted, bad profiles refused."""

from __future__ import annotations

import json
import pathlib
import typing as t
import uuid

import pytest
import yaml
from deploy.kubectl import Kubectl
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from support.cluster import wait_for

REPO = pathlib.Path(__file__).resolve().parents[2]
SAMPLES = sorted((REPO / "deploy" / "samples").glob("*.yaml"))
GROUP, VERSION, PLURAL = "kvtune.io", "v1alpha1", "hypervisorprofiles"

pytestmark = pytest.mark.usefixtures("kvtune_crds")


def profile(spec: dict[str, t.Any]) -> dict[str, t.Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "HypervisorProfile",
        "metadata": {"name": f"t-{uuid.uuid4().hex[:8]}"},
        "spec": {"nodeSelector": {"matchLabels": {"pool": "vms"}}, **spec},
    }


def create(api: client.CustomObjectsApi, body: dict[str, t.Any]) -> dict[str, t.Any]:
    created: dict[str, t.Any] = api.create_cluster_custom_object(GROUP, VERSION, PLURAL, body)
    return created


@pytest.fixture
def objects(api_client: client.ApiClient) -> t.Iterator[client.CustomObjectsApi]:
    api = client.CustomObjectsApi(api_client)
    yield api
    for item in api.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]:
        if item["metadata"]["name"].startswith("t-"):
            api.delete_cluster_custom_object(GROUP, VERSION, PLURAL, item["metadata"]["name"])


@pytest.mark.parametrize("path", SAMPLES, ids=[p.name for p in SAMPLES])
def test_every_sample_is_accepted(objects: client.CustomObjectsApi, path: pathlib.Path) -> None:
    body = yaml.safe_load(path.read_text())
    body["metadata"]["name"] = f"t-{body['metadata']['name']}"
    created = create(objects, body)
    assert created["spec"]["nodeSelector"] == body["spec"]["nodeSelector"]


def test_the_server_fills_in_the_schema_defaults(objects: client.CustomObjectsApi) -> None:
    spec = create(objects, profile({}))["spec"]
    assert spec["mode"] == "Audit"
    assert spec["memory"]["ksm"] == "Disabled"
    assert spec["memory"]["vmOverheadFloor"] == "1Gi"
    assert spec["numa"]["numad"] == "Disabled"
    assert spec["rollout"] == {"maxUnavailable": 1, "allowDrain": False, "allowReboot": False,
                               "drainTimeoutSeconds": 600}
    assert spec["boot"] == {"settings": "Stage"}
    assert "vmi" not in spec, "absent optional sections must stay absent (no null defaults)"


HP = "memory"
INVALID: list[tuple[str, dict[str, t.Any], str]] = [
    ("no node selector", {"nodeSelector": None}, "spec.nodeSelector: Required value"),
    ("unknown mode", {"mode": "Sometimes"}, 'spec.mode: Unsupported value: "Sometimes"'),
    (
        "cpu overcommit without PLE",
        {"cpu": {"allowOvercommit": True}},
        "cpu.allowOvercommit: true needs cpu.ple: Required",
    ),
    (
        "hugepages with both count and perNode",
        {HP: {"hugepages": {"pages": [{"size": "1Gi", "count": 4,
                                        "perNode": [{"node": 0, "count": 4}]}]}}},
        "set exactly one of count",
    ),
    (
        "hugepages with neither count nor perNode",
        {HP: {"hugepages": {"pages": [{"size": "1Gi"}]}}},
        "set exactly one of count",
    ),
    (
        "a NUMA node listed twice",
        {HP: {"hugepages": {"pages": [{"size": "1Gi", "perNode": [
            {"node": 1, "count": 4}, {"node": 1, "count": 8}]}]}}},
        "perNode lists a NUMA node more than once",
    ),
    (
        "a negative hugepage count",
        {HP: {"hugepages": {"pages": [{"size": "2Mi", "count": -1}]}}},
        "count: Invalid value: -1: spec.memory.hugepages.pages[0].count in body should be "
        "greater than or equal to 0",
    ),
    (
        "an unsupported page size",
        {HP: {"hugepages": {"pages": [{"size": "4Mi", "count": 1}]}}},
        'size: Unsupported value: "4Mi"',
    ),
    (
        "a page size listed twice",
        {HP: {"hugepages": {"pages": [{"size": "2Mi", "count": 1}, {"size": "2Mi", "count": 2}]}}},
        "lists a page size more than once",
    ),
    (
        "NUMA passthrough without hugepages",
        {"vmi": {"namespaceSelector": {}, "numaPassthrough": True}},
        "vmi.numaPassthrough needs vmi.dedicatedCpus: true and a vmi.hugepageSize",
    ),
    (
        "emulator thread isolation without dedicated CPUs",
        {"vmi": {"namespaceSelector": {}, "dedicatedCpus": False}},
        "vmi.isolateEmulatorThread needs vmi.dedicatedCpus: true",
    ),
    (
        "VMIs on a hugepage size the nodes do not allocate",
        {"vmi": {"namespaceSelector": {}, "hugepageSize": "1Gi"}},
        "vmi.hugepageSize names a page size that memory.hugepages.pages does not allocate",
    ),
    (
        "an SR-IOV rule that selects no NIC",
        {"network": {"sriov": [{"pfSelector": {}, "numVfs": 4}]}},
        "a NIC selector (sriov's pfSelector, macvtap's nicSelector) needs at least one of names",
    ),
    (
        "a macvtap rule that selects no NIC",
        {"network": {"macvtap": [{"name": "dp", "nicSelector": {}}]}},
        "macvtap's nicSelector) needs at least one of names, pciAddresses or vendor",
    ),
    (
        "a malformed PCI address",
        {"network": {"sriov": [{"pfSelector": {"pciAddresses": ["3b:00.0"]}, "numVfs": 4}]}},
        "pciAddresses[0]: Invalid value",
    ),
    (
        "two macvtap rules for one resource",
        {"network": {"macvtap": [{"name": "dp", "nicSelector": {"names": [n]}}
                                 for n in ("ens2f0", "ens2f1")]}},
        "network.macvtap names a resource more than once",
    ),
    (
        "macvtap in passthru mode, which macvtap-cni refuses",
        {"network": {"macvtap": [{"name": "dp", "nicSelector": {"names": ["ens2f0"]},
                                  "mode": "passthru"}]}},
        'mode: Unsupported value: "passthru"',
    ),
    (
        "a macvtap resource name that is no resource name",
        {"network": {"macvtap": [{"name": "data plane", "nicSelector": {"names": ["ens2f0"]}}]}},
        "spec.network.macvtap[0].name: Invalid value",
    ),
    (
        "a LUN selector that would take any disk",
        {"storage": {"blockLuns": {"selector": {"minSize": "1Gi"}, "storageClassName": "x"}}},
        "needs at least one of wwns, byIdPatterns or models",
    ),
    (
        "an overhead floor that is not a quantity",
        {HP: {"vmOverheadFloor": "lots"}},
        "spec.memory.vmOverheadFloor: Invalid value",
    ),
    (
        "a drain timeout too short to drain anything",
        {"rollout": {"drainTimeoutSeconds": 5}},
        "drainTimeoutSeconds in body should be greater than or equal to 30",
    ),
]


@pytest.mark.parametrize(("spec", "expected"), [(s, e) for _, s, e in INVALID],
                         ids=[name for name, _, _ in INVALID])
def test_an_invalid_profile_is_refused_with_a_readable_message(
    objects: client.CustomObjectsApi, spec: dict[str, t.Any], expected: str
) -> None:
    body = profile({k: v for k, v in spec.items() if v is not None})
    if spec.get("nodeSelector", "") is None:
        del body["spec"]["nodeSelector"]
    with pytest.raises(ApiException) as refused:
        create(objects, body)
    assert refused.value.status == 422
    message = json.loads(refused.value.body)["message"]
    assert expected in message


def test_status_is_written_only_through_the_status_subresource(
    objects: client.CustomObjectsApi,
) -> None:
    body = profile({})
    body["status"] = {"matchedNodes": 7}
    name = body["metadata"]["name"]
    created = create(objects, body)
    assert created.get("status", {}).get("matchedNodes", 0) == 0, "status set on create"

    patch = {"status": {"matchedNodes": 5}}
    objects.patch_cluster_custom_object(GROUP, VERSION, PLURAL, name, patch)
    assert objects.get_cluster_custom_object(GROUP, VERSION, PLURAL, name).get(
        "status", {}).get("matchedNodes", 0) == 0, "status changed through the main resource"

    objects.patch_cluster_custom_object_status(GROUP, VERSION, PLURAL, name, patch)
    after = objects.get_cluster_custom_object(GROUP, VERSION, PLURAL, name)
    assert after["status"]["matchedNodes"] == 5
    assert after["metadata"]["generation"] == created["metadata"]["generation"]


def test_kubectl_explain_teaches_the_api(kubectl: Kubectl) -> None:
    # The apiserver publishes a CRD's OpenAPI, which explain reads, a moment after the CRD is
    # Established: when this test runs first, the first attempts cannot find the resource yet.
    found: list[str] = []

    def explained() -> bool:
        try:
            found.append(kubectl.run("explain", "hypervisorprofile.spec.memory"))
        except AssertionError as e:
            if "couldn't find resource" in str(e):
                return False
            raise
        return True

    wait_for(explained, "kubectl explain finding hypervisorprofiles")
    [out] = found
    assert "Kernel samepage merging" in out
    assert "vmOverheadFloor" in out
