"""The VMI/VM CRDs built from KubeVirt's swagger install, and the real API server and the local
validator (`support.kubevirt.validate_vmi`) judge VirtualMachineInstances alike."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from support.cluster import apply_crds
from support.kubevirt import (
    GROUP,
    MANAGED_BY_LABEL,
    VERSION,
    VMISchemaError,
    minimal_vmi,
    validate_vmi,
)
from support.kubevirt import kubevirt_crds as build_kubevirt_crds

Obj = dict[str, Any]


def _domain(vmi: Obj) -> Obj:
    domain: Obj = vmi["spec"]["domain"]
    return domain


def _set(path: str, value: Any) -> Callable[[Obj], None]:
    """A change that sets the dotted `path` under spec.domain, creating objects on the way."""

    def change(vmi: Obj) -> None:
        *parents, leaf = path.split(".")
        node = _domain(vmi)
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value

    return change


def _both(*changes: Callable[[Obj], None]) -> Callable[[Obj], None]:
    def change(vmi: Obj) -> None:
        for c in changes:
            c(vmi)

    return change


# (change to a minimal VMI, the field the server and the validator must blame or None if valid)
CASES: dict[str, tuple[Callable[[Obj], None], str | None]] = {
    "minimal": (lambda vmi: None, None),
    "cpu cores as a number": (_set("cpu.cores", 4), None),
    "cpu cores as a word": (_set("cpu.cores", "many"), "spec.domain.cpu.cores"),
    "dedicated placement as a string": (
        _set("cpu.dedicatedCpuPlacement", "yes"),
        "spec.domain.cpu.dedicatedCpuPlacement",
    ),
    "a misspelt field": (_set("cpu.dedicatedCPUPlacement", True), "dedicatedCPUPlacement"),
    "hugepages and guest NUMA passthrough": (
        _both(
            _set("memory.hugepages.pageSize", "2Mi"), _set("cpu.numa.guestMappingPassthrough", {})
        ),
        None,
    ),
    "memory as an integer quantity": (_set("resources.requests.memory", 1073741824), None),
    "memory as a fraction": (
        _set("resources.requests.memory", 1.5),
        "spec.domain.resources.requests.memory",
    ),
    "cpu set to null (dropped)": (_set("cpu", None), None),
    "devices set to null (dropped)": (_set("devices", None), "spec.domain.devices"),
    "a null volume": (lambda vmi: vmi["spec"].update(volumes=[None]), "spec.volumes[0]"),
    "devices missing": (lambda vmi: _domain(vmi).pop("devices"), "spec.domain.devices"),
    "an unknown DNS policy": (
        lambda vmi: vmi["spec"].update(dnsPolicy="Sometimes"),
        "spec.dnsPolicy",
    ),
}


def _vmi(case: str) -> Obj:
    change, _ = CASES[case]
    vmi = minimal_vmi(re.sub("[^a-z0-9]+", "-", case.lower()).strip("-"))
    change(vmi)
    return vmi


def _create(api: client.ApiClient, namespace: str, obj: Obj, plural: str, **kw: Any) -> Obj:
    obj = copy.deepcopy(obj)
    obj["metadata"]["namespace"] = namespace
    created: Obj = client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, obj, field_validation="Strict", **kw
    )
    return created


def test_the_kubevirt_crds_are_established(kubevirt_crds: list[str]) -> None:
    assert kubevirt_crds == ["virtualmachineinstances.kubevirt.io", "virtualmachines.kubevirt.io"]


@pytest.mark.parametrize("case", CASES)
def test_the_local_validator_judges_like_kubevirts_schema(case: str) -> None:
    _, blamed = CASES[case]
    if blamed is None:
        validate_vmi(_vmi(case))
    else:
        with pytest.raises(VMISchemaError, match=re.escape(blamed)):
            validate_vmi(_vmi(case))


@pytest.mark.parametrize("case", CASES)
def test_the_api_server_judges_like_the_local_validator(
    case: str, api_client: client.ApiClient, kubevirt_crds: list[str], namespace: str
) -> None:
    _, blamed = CASES[case]
    if blamed is None:
        _create(api_client, namespace, _vmi(case), "virtualmachineinstances", dry_run="All")
    else:
        with pytest.raises(ApiException) as rejected:
            _create(api_client, namespace, _vmi(case), "virtualmachineinstances", dry_run="All")
        assert rejected.value.status in (400, 422)  # 400: strict decoding, 422: schema
        assert blamed in str(rejected.value.body)


def test_a_stored_vmi_reads_back_exactly_as_written(
    api_client: client.ApiClient, kubevirt_crds: list[str], namespace: str
) -> None:
    vmi = _vmi("hugepages and guest NUMA passthrough")
    created = _create(api_client, namespace, vmi, "virtualmachineinstances")
    # Nothing pruned and nothing defaulted: the server keeps what our code would write.
    assert created["spec"] == vmi["spec"]


def test_a_vm_template_keeps_its_metadata(
    api_client: client.ApiClient, kubevirt_crds: list[str], namespace: str
) -> None:
    template = {
        "metadata": {"labels": {"kvtune.io/profile": "dense"}},
        "spec": minimal_vmi("t")["spec"],
    }
    vm = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "VirtualMachine",
        "metadata": {"name": "vm"},
        "spec": {"runStrategy": "Halted", "template": template},
    }
    created = _create(api_client, namespace, vm, "virtualmachines")
    assert created["spec"]["template"] == template


def test_crds_of_a_real_kubevirt_installation_are_left_alone(api_client: client.ApiClient) -> None:
    extensions = client.ApiextensionsV1Api(api_client)
    theirs = build_kubevirt_crds()[0]
    names = theirs["spec"]["names"]
    names.update(plural="kvtunetestvmis", singular="kvtunetestvmi", kind="KvtuneTestVMI")
    names.update(listKind="KvtuneTestVMIList", shortNames=[])
    theirs["metadata"] = {"name": f"kvtunetestvmis.{GROUP}"}  # no MANAGED_BY_LABEL: not ours
    ours = copy.deepcopy(theirs)
    ours["metadata"]["labels"] = MANAGED_BY_LABEL
    ours["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["description"] = "ours"
    apply_crds(api_client, [theirs])
    try:
        apply_crds(api_client, [ours], owned_label=MANAGED_BY_LABEL)
        kept = extensions.read_custom_resource_definition(theirs["metadata"]["name"])
        assert kept.spec.versions[0].var_schema.open_apiv3_schema.description is None
    finally:
        extensions.delete_custom_resource_definition(theirs["metadata"]["name"])


def _nodes(schema: Obj, path: str = "") -> list[tuple[str, Obj]]:
    found = [(path or "(root)", schema)]
    for name, child in schema.get("properties", {}).items():
        found += _nodes(child, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            found += _nodes(schema[key], f"{path}[{key}]")
    return found


@pytest.mark.parametrize("crd", build_kubevirt_crds(), ids=lambda crd: crd["metadata"]["name"])
def test_the_crd_schemas_are_structural(crd: Obj) -> None:
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _nodes(schema):
        typed = "type" in node or node.get("x-kubernetes-int-or-string")
        assert typed, f"{path} has no type"
        assert not ("properties" in node and "additionalProperties" in node), path
        assert "$ref" not in node and "default" not in node, path
