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
    kubelet = spec["cpu"].pop("kubelet")
    assert spec["cpu"] == {"ple": "Preferred", "allowOvercommit": False, "irqs": "Enforce",
                           "irqbalance": "BanIsolated", "kernelNoise": "Enforce",
                           "bootIsolation": "Enforce"}, "no partition: the measures are inert"
    # Unmanaged: a profile written before spec.cpu.kubelet leaves the kubelet as it was.
    assert kubelet == {"management": "Unmanaged", "fullPcpusOnly": True,
                                      "memoryManagerPolicy": "Static",
                                      "topologyManagerScope": "pod"}
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


def _refusal(objects: client.CustomObjectsApi, spec: dict[str, t.Any]) -> str:
    body = profile({k: v for k, v in spec.items() if v is not None})
    if spec.get("nodeSelector", "") is None:
        del body["spec"]["nodeSelector"]
    with pytest.raises(ApiException) as refused:
        create(objects, body)
    assert refused.value.status == 422
    return str(json.loads(refused.value.body)["message"])


@pytest.mark.parametrize(("spec", "expected"), [(s, e) for _, s, e in INVALID],
                         ids=[name for name, _, _ in INVALID])
def test_an_invalid_profile_is_refused_with_a_readable_message(
    objects: client.CustomObjectsApi, spec: dict[str, t.Any], expected: str
) -> None:
    assert expected in _refusal(objects, spec)


def _floor(value: object) -> dict[str, t.Any]:
    return {HP: {"vmOverheadFloor": value}}


def _headroom(**headroom: object) -> dict[str, t.Any]:
    return {HP: {"hugepages": {"hostHeadroom": headroom}}}


def _luns(**selector: object) -> dict[str, t.Any]:
    return {"storage": {"blockLuns": {"selector": {"wwns": ["naa.600a"], **selector},
                                      "storageClassName": "local-luns"}}}


def _sriov(*selectors: dict[str, t.Any]) -> list[dict[str, t.Any]]:
    return [{"pfSelector": s, "numVfs": 4} for s in selectors]


def _macvtap(*selectors: dict[str, t.Any]) -> list[dict[str, t.Any]]:
    return [{"name": f"dp{i}", "nicSelector": s} for i, s in enumerate(selectors)]


def _nodes(*expressions: dict[str, t.Any], **labels: str) -> dict[str, t.Any]:
    return {"nodeSelector": {"matchLabels": labels, "matchExpressions": list(expressions)}}


NOT_QUANTITY = "must be a Kubernetes quantity: ASCII digits with an optional fraction"
NEGATIVE = "a size must not be negative: write e.g. 4Gi, or 0"
ROLLOUT = "rollout.maxUnavailable must be a whole number of nodes, at least 1"
NO_VALUES = "operator Exists and DoesNotExist take no values: remove values"
NEEDS_VALUES = "operator In and NotIn need at least one value in values"
TWO_RULES = "a NIC is listed in pfSelector.{} of more than one rule: give each NIC one rule"
BOTH = "a NIC is listed in both an sriov rule's pfSelector.{}"
BLOCKING = "some validation rules were not checked"

#: (name, spec, message expected, whether the error is one that makes the apiserver skip the CEL
#: rules, which it then says in a noisy `<nil>` line: too long, too many, a wrong type or enum).
BAD_PROFILES: list[tuple[str, dict[str, t.Any], str, bool]] = [
    # Quantities: the apiserver's grammar, then bounds.
    *[(f"floor {v!r}", _floor(v), NOT_QUANTITY, False)
      for v in ("1.2.3", "5Ki5", "2 Gi", " 2Gi", "1_000", "1e3Mi", "٢Gi", "Gi", "1GB")],
    ("floor negative", _floor("-5Gi"),
     f'spec.memory.vmOverheadFloor: Invalid value: "-5Gi": {NEGATIVE}', False),
    ("floor absurd", _floor("1e9999"),
     "spec.memory.vmOverheadFloor: Invalid value: may be at most 64Gi", False),
    ("floor 65Gi", _floor("65Gi"), "may be at most 64Gi", False),
    ("headroom negative", _headroom(minimum="-1Gi"), NEGATIVE, False),
    ("headroom not a quantity", _headroom(minimum="4 Gi"), NOT_QUANTITY, False),
    ("headroom none at all", _headroom(percent=0, minimum="0"),
     "percent 0 with minimum 0 leaves the host no memory", False),
    ("headroom absurd", _headroom(minimum="2Ti"), "may be at most 1Ti", False),
    ("LUN minSize above maxSize", _luns(minSize="10Gi", maxSize="1Gi"),
     "minSize is larger than maxSize, so no LUN can match", False),
    ("LUN maxSize not a quantity", _luns(maxSize="lots"), NOT_QUANTITY, False),
    ("LUN minSize negative", _luns(minSize="-1"), NEGATIVE, False),
    # rollout.maxUnavailable: what rollout.py can read.
    *[(f"maxUnavailable {v!r}", {"rollout": {"maxUnavailable": v}}, ROLLOUT, False)
      for v in ("abc", "50.5%", -1, 0, "0%", "101%", "1", "10 %")],
    # Bounds.
    ("drain timeout past a week", {"rollout": {"drainTimeoutSeconds": 10**15}},
     "drainTimeoutSeconds in body should be less than or equal to 604800", False),
    ("hugepage count 10^12", {HP: {"hugepages": {"pages": [{"size": "2Mi", "count": 10**12}]}}},
     "count in body should be less than or equal to 16777216", False),
    ("hugepage count per node 10^12", {HP: {"hugepages": {"pages": [
        {"size": "2Mi", "perNode": [{"node": 0, "count": 10**12}]}]}}},
     "count in body should be less than or equal to 16777216", False),
    ("hugepages perNode empty", {HP: {"hugepages": {"pages": [{"size": "2Mi", "perNode": []}]}}},
     "perNode is empty, which allocates nothing", False),
    ("NUMA node 100000", {HP: {"hugepages": {"pages": [
        {"size": "2Mi", "perNode": [{"node": 100000, "count": 1}]}]}}},
     "node in body should be less than or equal to 1023", False),
    # Node selectors, as Kubernetes validates its own.
    ("empty node selector", {"nodeSelector": {}}, "spec.nodeSelector is empty", False),
    ("Exists with values", _nodes({"key": "pool", "operator": "Exists", "values": ["a"]}),
     NO_VALUES, False),
    ("DoesNotExist with values",
     _nodes({"key": "pool", "operator": "DoesNotExist", "values": ["a"]}), NO_VALUES, False),
    ("In without values", _nodes({"key": "pool", "operator": "In"}), NEEDS_VALUES, False),
    ("NotIn with empty values", _nodes({"key": "pool", "operator": "NotIn", "values": []}),
     NEEDS_VALUES, False),
    ("expression key with a blank", _nodes({"key": "my pool", "operator": "Exists"}),
     "a label key is an optional DNS subdomain prefix", False),
    ("expression key with two slashes", _nodes({"key": "a/b/c", "operator": "Exists"}),
     "a label key is an optional DNS subdomain prefix", False),
    ("expression value too long to be a label value",
     _nodes({"key": "pool", "operator": "In", "values": ["v" * 64]}),
     "Too long: may not be more than 63 bytes", True),
    ("expression value with a slash",
     _nodes({"key": "pool", "operator": "In", "values": ["a/b"]}),
     "a label value is empty or at most 63 letters", False),
    ("matchLabels key starting with a dash", _nodes(**{"-pool": "vms"}),
     "matchLabels: a key is not a label key", False),
    ("matchLabels key with an upper-case prefix", _nodes(**{"Example.com/pool": "vms"}),
     "matchLabels: a key is not a label key", False),
    ("matchLabels value with a blank", _nodes(pool="my vms"),
     "a label value is empty or at most 63 letters", False),
    ("VMI namespace selector with Exists and values", {"vmi": {"namespaceSelector": {
        "matchExpressions": [{"key": "team", "operator": "Exists", "values": ["a"]}]}}},
     NO_VALUES, False),
    # Contradictions.
    ("two SR-IOV rules for one NIC name",
     {"network": {"sriov": _sriov({"names": ["ens1f0"]}, {"names": ["ens1f0", "ens1f1"]})}},
     TWO_RULES.format("names"), False),
    ("two SR-IOV rules for one PCI address",
     {"network": {"sriov": _sriov(*[{"pciAddresses": ["0000:3b:00.0"]}] * 2)}},
     TWO_RULES.format("pciAddresses"), False),
    ("SR-IOV and macvtap on one NIC name",
     {"network": {"sriov": _sriov({"names": ["ens1f0"]}),
                  "macvtap": _macvtap({"names": ["ens1f0"]})}}, BOTH.format("names"), False),
    ("SR-IOV and macvtap on one PCI address",
     {"network": {"sriov": _sriov({"pciAddresses": ["0000:3b:00.0"]}),
                  "macvtap": _macvtap({"pciAddresses": ["0000:3b:00.0"]})}},
     BOTH.format("pciAddresses"), False),
    *[(f"NIC name {n!r}", {"network": {"sriov": _sriov({"names": [n]})}},
       "an interface name is 1 to 15 bytes", False)
      for n in ("", ".", "..", "eth/0", "eth 0", "eth:0")],
    ("NIC name of 16 bytes", {"network": {"sriov": _sriov({"names": ["e" * 16]})}},
     "Too long: may not be more than 15 bytes", True),
    ("storageClassName with capitals", {"storage": {"blockLuns": {
        "selector": {"models": ["X"]}, "storageClassName": "Fast_SSD"}}},
     "storageClassName must be a DNS subdomain", False),
    ("byIdPatterns with a path", _luns(byIdPatterns=["../sda"]),
     "byIdPatterns[0]: Invalid value: \"../sda\": a by-id pattern is a file name", False),
    *[(f"byIdPatterns {p!r}", _luns(byIdPatterns=[p]),
       "that begins with a literal part of the name, not a wildcard or [...]", False)
      for p in ("*", "**", "?*", "*-*", "[a-z]*", "*wwn*", "?wn-0x5000c5*", "[!x]*")],
    ("two macvtap rules for one NIC name",
     {"network": {"macvtap": _macvtap({"names": ["ens2f0"]}, {"names": ["ens2f0"]})}},
     "network.macvtap: a NIC is listed in nicSelector.names of more than one rule", False),
    ("two macvtap rules for one PCI address",
     {"network": {"macvtap": _macvtap(*[{"pciAddresses": ["0000:3b:00.0"]}] * 2)}},
     "network.macvtap: a NIC is listed in nicSelector.pciAddresses of more than one rule", False),
    ("label key with a 254-byte prefix", _nodes({"key": "a" * 254 + "/pool", "operator": "Exists"}),
     "a label key is an optional DNS subdomain prefix", False),
    ("matchLabels key with a 254-byte prefix", _nodes(**{"a" * 254 + "/pool": "vms"}),
     "matchLabels: a key is not a label key", False),
    ("hugepages with every byte kept as headroom", {HP: {"hugepages": {
        "pages": [{"size": "2Mi", "count": 1}], "hostHeadroom": {"percent": 100}}}},
     "hostHeadroom.percent 100 keeps all memory from hugepages", False),
    # CPU partition: one form, CPU lists as the kernel writes them, bounded counts.
    ("partition with both forms", {"cpu": {"partition": {
        "housekeepingCpus": "0-1", "housekeepingCoresPerNumaNode": 1}}},
     "cpu.partition: set exactly one of housekeepingCpus", False),
    ("partition with neither form", {"cpu": {"partition": {}}},
     "cpu.partition: set exactly one of housekeepingCpus", False),
    *[(f"housekeepingCpus {v!r}", {"cpu": {"partition": {"housekeepingCpus": v}}},
       "a CPU list is CPU ids and ranges separated by commas", False)
      for v in ("0-", "0,,1", "a-b", "0 1", "0-1,", "-1", "12345")],
    ("housekeeping cores 0", {"cpu": {"partition": {"housekeepingCoresPerNumaNode": 0}}},
     "housekeepingCoresPerNumaNode in body should be greater than or equal to 1", False),
    ("housekeeping cores 65", {"cpu": {"partition": {"housekeepingCoresPerNumaNode": 65}}},
     "housekeepingCoresPerNumaNode in body should be less than or equal to 64", False),
    *[(f"governor {v!r}", {"cpu": {"governor": v}}, "a governor is a name from "
       "scaling_available_governors", False) for v in ("Performance", "", "on demand", "x" * 17)],
    ("idle latency negative", {"cpu": {"maxIdleLatencyMicroseconds": -1}},
     "maxIdleLatencyMicroseconds in body should be greater than or equal to 0", False),
    *[(f"{field} {v!r}", {"cpu": {field: v}}, f'spec.cpu.{field}: Unsupported value: "{v}"',
       True) for field, v in (("irqs", "Off"), ("irqbalance", "Enforce"),
                              ("kernelNoise", "On"), ("bootIsolation", "Stage"))],
    # Pattern errors name the form, not only a regular expression.
    ("PCI address in capitals", {"network": {"sriov": _sriov({"pciAddresses": ["0000:3B:00.0"]})}},
     "a PCI address is", False),
    ("vendor id with 0x", {"network": {"sriov": _sriov({"vendor": "0x86"})}},
     "a PCI vendor or device id is", False),
    ("device id in capitals", {"network": {"sriov": _sriov({"vendor": "8086", "device": "159B"})}},
     "a PCI vendor or device id is", False),
    ("macvtap resource name with a blank", {"network": {"macvtap": [
        {"name": "data plane", "nicSelector": {"names": ["ens2f0"]}}]}},
     "a macvtap resource name is", False),
    # SR-IOV drivers and device plugin resources (docs/sriov.md).
    ("an SR-IOV resource without a driver", {"network": {"sriov": [
        {"pfSelector": {"names": ["ens1f0"]}, "numVfs": 4, "resourceName": "vf"}]}},
     "sriov: resourceName needs driver vfio-pci (VMs) or netdevice (pods)", False),
    ("an SR-IOV resource of Unmanaged VFs", {"network": {"sriov": [
        {"pfSelector": {"names": ["ens1f0"]}, "numVfs": 4, "resourceName": "vf",
         "driver": "Unmanaged"}]}},
     "sriov: resourceName needs driver vfio-pci (VMs) or netdevice (pods)", False),
    ("two SR-IOV rules for one resource", {"network": {"sriov": [
        {"pfSelector": {"names": [n]}, "numVfs": 4, "resourceName": "vf", "driver": "vfio-pci"}
        for n in ("ens1f0", "ens2f0")]}},
     "network.sriov names a resourceName more than once", False),
    *[(f"SR-IOV resource name {n!r}", {"network": {"sriov": [
        {"pfSelector": {"names": ["ens1f0"]}, "numVfs": 4, "resourceName": n,
         "driver": "vfio-pci"}]}}, "an SR-IOV resource name is at most 63 letters", False)
      for n in ("data-plane", "data.plane", "_vf", "vf_", "vf plane")],
    ("an SR-IOV driver kvtune does not bind", {"network": {"sriov": [
        {"pfSelector": {"names": ["ens1f0"]}, "numVfs": 4, "driver": "igb_uio"}]}},
     'spec.network.sriov[0].driver: Unsupported value: "igb_uio"', True),
    # Lengths and counts that kept kopf's annotation and PATCH past what etcd takes.
    ("a 1 MiB NIC name", {"network": {"sriov": _sriov({"names": ["e" * 2**20]})}},
     "Too long: may not be more than 15 bytes", True),
    ("32 WWNs of 40 KiB", _luns(wwns=["6" * 40 * 1024] * 32),
     "Too long: may not be more than 256 bytes", True),
    ("65 WWNs", _luns(wwns=[f"naa.600a{i:04x}" for i in range(65)]),
     "Too many: 65: must have at most 64 items", True),
    ("17 NIC names", {"network": {"sriov": _sriov({"names": [f"e{i}" for i in range(17)]})}},
     "Too many: 17: must have at most 16 items", True),
    ("33 node selector labels", _nodes(**{f"k{i}": "v" for i in range(33)}),
     "Too many: 33: must have at most 32 items", True),
    ("a 300-byte storageClassName", {"storage": {"blockLuns": {
        "selector": {"models": ["X"]}, "storageClassName": "a" * 300}}},
     "Too long: may not be more than 253 bytes", True),
    # The kubelet's settings: only what the kubelet itself takes, spelled as it spells it.
    ("kubelet management 'Yes'", {"cpu": {"kubelet": {"management": "Yes"}}},
     'spec.cpu.kubelet.management: Unsupported value: "Yes"', True),
    ("memory manager policy in the CPU manager's spelling",
     {"cpu": {"kubelet": {"memoryManagerPolicy": "static"}}},
     'spec.cpu.kubelet.memoryManagerPolicy: Unsupported value: "static"', True),
    ("topology manager scope 'node'", {"cpu": {"kubelet": {"topologyManagerScope": "node"}}},
     'spec.cpu.kubelet.topologyManagerScope: Unsupported value: "node"', True),
    ("SMT alignment 'Ignore'", {"vmi": {"namespaceSelector": {}, "smtAlignment": "Ignore"}},
     'spec.vmi.smtAlignment: Unsupported value: "Ignore"', True),
    ("full-pcpus-only as the kubelet's string", {"cpu": {"kubelet": {"fullPcpusOnly": "true"}}},
     "spec.cpu.kubelet.fullPcpusOnly: Invalid value: \"string\": "
     "spec.cpu.kubelet.fullPcpusOnly in body must be of type boolean", True),
]


@pytest.mark.parametrize(("spec", "expected", "blocking"), [r[1:] for r in BAD_PROFILES],
                         ids=[r[0] for r in BAD_PROFILES])
def test_a_bad_profile_is_refused_at_the_door_naming_the_field_and_the_fix(
    objects: client.CustomObjectsApi, spec: dict[str, t.Any], expected: str, blocking: bool
) -> None:
    message = _refusal(objects, spec)
    assert expected in message
    # The `<nil>: ... some validation rules were not checked` line is the apiserver's, added only
    # when an error of a blocking kind stops its CEL rules; every other refusal must come without.
    assert (BLOCKING in message) == blocking, message


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
