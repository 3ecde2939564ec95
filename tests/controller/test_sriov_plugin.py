"""The SR-IOV network device plugin's ConfigMap of a profile: what its nodes offer alike, in the
plugin's own config.json format, on the profile's status, written only when it changes."""

from __future__ import annotations

import asyncio
import datetime
import json
import typing as t
import uuid

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kvtune_api import conditions as cond
from kvtune_api.v1alpha1.profile import HypervisorProfileStatus, SriovResource
from kvtune_operator.common.nodestate import StateView
from kvtune_operator.controller import plugin_config
from kvtune_operator.controller.kube import Kube
from kvtune_operator.controller.passes import reconcile_profile, snapshot
from kvtune_operator.controller.rollup import rollup
from kvtune_operator.controller.settings import Settings
from kvtune_operator.controller.sriov_plugin import SRIOV, config_json
from kvtune_operator.controller.views import Action, ApplyConfigMap, DeleteConfigMap
from support import sriov_dp

from .builders import create_profile, profile, state

NS = "kvtune-system"
NOW = datetime.datetime(2026, 12, 7, tzinfo=datetime.UTC)
RULES: dict[str, t.Any] = {"network": {"sriov": [{"pfSelector": {"names": ["ens1f0"]}, "numVfs": 4,
                                "driver": "vfio-pci", "resourceName": "dataplane"}]}}


def pool(pf: str = "ens1f0", address: str = "0000:3b:00.0", name: str = "dataplane",
         driver: str = "vfio-pci") -> dict[str, t.Any]:
    """A status.sriov entry, as an agent renders it."""
    return {"resourceName": name, "resourcePrefix": "sriov.kvtune.io", "selectors": {
        "vendors": ["8086"], "devices": ["1889"], "drivers": [driver], "pfNames": [pf],
        "rootDevices": [address]}}


def _plan(states: dict[str, StateView | None], current: dict[str, str] | None = None,
          **spec: object) -> list[Action]:
    return plugin_config.plan_config_map(SRIOV, profile(**(spec or RULES)), NS, states, current)


def test_what_every_node_offers_alike_becomes_the_plugins_config_json() -> None:
    [action] = _plan({n: state(n, sriov=[pool()]) for n in "ab"})

    assert isinstance(action, ApplyConfigMap)
    meta = action.manifest["metadata"]
    assert (meta["name"], meta["namespace"]) == ("kvtune-sriov-p", NS)
    assert meta["ownerReferences"][0]["kind"] == "HypervisorProfile"
    assert json.loads(action.manifest["data"]["config.json"]) == {"resourceList": [pool()]}


@pytest.mark.parametrize("driver", ["vfio-pci", "iavf"])
def test_the_config_json_is_one_the_plugin_takes_without_dropping_a_field(driver: str) -> None:
    resources = [SriovResource.model_validate(pool(driver=driver)),
                 SriovResource.model_validate(pool("ens2f0", "0000:5e:00.0", "other", driver))]

    assert sriov_dp.problems(config_json(resources)) == []


@pytest.mark.parametrize(("mutate", "why"), [
    (lambda c: c["resourceList"][0]["selectors"].update(rootDevice=["0000:3b:00.0"]),
     "Additional properties are not allowed ('rootDevice' was unexpected)"),
    (lambda c: c["resourceList"][0].update(resourceName="data-plane"), "does not match"),
    (lambda c: c["resourceList"].append(c["resourceList"][0]), "already exists"),
    (lambda c: c.update(resourceList=[]), "should be non-empty"),
    (lambda c: c["resourceList"][0]["selectors"].update(rootDevices=["3b:00.0"]),
     "does not match"),
])
def test_the_judge_refuses_what_the_plugin_would_refuse_or_misread(
    mutate: t.Callable[[dict[str, t.Any]], None], why: str
) -> None:
    config = json.loads(config_json([SriovResource.model_validate(pool())]))
    mutate(config)

    assert any(why in problem for problem in sriov_dp.problems(json.dumps(config)))


def test_nodes_that_differ_keep_only_the_common_pools_and_say_which_node_differs() -> None:
    states: dict[str, StateView | None] = {
        "a": state("a", sriov=[pool()]), "b": state("b", sriov=[pool("ens2f0", "0000:5e:00.0")])}
    status = rollup(profile(**RULES), states, {}, HypervisorProfileStatus(), NOW)

    found = cond.find(status.conditions, "SriovConfig")
    assert found is not None and (found.status, found.reason) == ("False", "NodesDiffer")
    assert "a offers sriov.kvtune.io/dataplane on ens1f0" in found.message
    assert status.sriov == []
    assert _plan(states, {"config.json": "{}"}) == [DeleteConfigMap(NS, "kvtune-sriov-p")]


def test_a_profile_without_resources_has_no_sriov_condition_and_no_config_map() -> None:
    spec: dict[str, t.Any] = {
        "network": {"sriov": [{"pfSelector": {"names": ["ens1f0"]}, "numVfs": 4}]}}
    states: dict[str, StateView | None] = {"a": state("a")}
    status = rollup(profile(**spec), states, {}, HypervisorProfileStatus(), NOW)

    assert cond.find(status.conditions, "SriovConfig") is None
    assert _plan(states, None, **spec) == []


def test_a_node_not_yet_reported_leaves_the_config_map_as_it_is() -> None:
    assert _plan({"a": state("a", sriov=[pool()]), "b": None}, None) == []


@pytest.mark.apiserver
def test_the_operator_keeps_the_config_map_and_the_status_of_the_profile(
    api_client: client.ApiClient, namespace: str, kvtune_crds: list[str]
) -> None:
    custom, core = client.CustomObjectsApi(api_client), client.CoreV1Api(api_client)
    name = f"sriov-{uuid.uuid4().hex[:6]}"
    body, mine = create_profile(custom, name, RULES)
    kube, settings = Kube(api_client), Settings(namespace=namespace)

    def reconcile(*offered: dict[str, t.Any], previous: HypervisorProfileStatus) -> t.Any:
        views = {n: state(n, owner=name, sriov=[o]) for n, o in zip("ab", offered, strict=True)}
        snap = snapshot({name: mine}, {n: {"pool": name} for n in views}, views, {})
        return asyncio.run(reconcile_profile(mine, snap, previous, kube, settings))

    first = reconcile(pool(), pool(), previous=HypervisorProfileStatus())
    made = core.read_namespaced_config_map(f"kvtune-sriov-{name}", namespace)
    assert sriov_dp.problems(made.data["config.json"]) == []
    assert json.loads(made.data["config.json"])["resourceList"] == [pool()]
    assert made.metadata.owner_references[0].uid == body["metadata"]["uid"]
    stored = custom.get_cluster_custom_object("kvtune.io", "v1alpha1", "hypervisorprofiles", name)
    assert stored["status"]["sriov"] == [pool()]

    again = reconcile(pool(), pool(), previous=first.status)
    assert not [a for a in again.actions if isinstance(a, ApplyConfigMap)]

    reconcile(pool(), pool("ens2f0"), previous=first.status)
    with pytest.raises(ApiException) as gone:
        core.read_namespaced_config_map(f"kvtune-sriov-{name}", namespace)
    assert gone.value.status == 404
    custom.delete_cluster_custom_object("kvtune.io", "v1alpha1", "hypervisorprofiles", name)
