"""The macvtap-cni ConfigMap of a profile: what its nodes offer alike, written only when it
changes, never as an empty list (which macvtap-cni takes as "offer every link")."""

from __future__ import annotations

import asyncio
import json
import typing as t
import uuid

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kvtune_api.v1alpha1.profile import HypervisorProfileStatus
from kvtune_operator.common.nodestate import StateView
from kvtune_operator.common.profiles import Profile
from kvtune_operator.controller.kube import Kube
from kvtune_operator.controller.macvtap import plan_config_map, render_config_map
from kvtune_operator.controller.passes import reconcile_profile, snapshot
from kvtune_operator.controller.settings import Settings
from kvtune_operator.controller.views import Action, ApplyConfigMap, DeleteConfigMap
from support.sections import HostSections

from .builders import profile, state

NS = "kvtune-system"
RULES: HostSections = {
    "network": {"macvtap": [{"name": "dp", "nicSelector": {"names": ["ens2f0", "ens3f0"]}}]}}


def _plan(states: dict[str, StateView | None], current: dict[str, str] | None = None,
          **spec: object) -> list[Action]:
    return plan_config_map(profile(**(spec or RULES)), NS, states, current)


def test_what_every_node_offers_alike_becomes_the_device_plugins_configuration() -> None:
    [action] = _plan({n: state(n, macvtap=[("dp", "ens2f0")]) for n in "ab"})

    assert isinstance(action, ApplyConfigMap)
    meta = action.manifest["metadata"]
    assert (meta["name"], meta["namespace"], meta["labels"]) == (
        "kvtune-macvtap-p", NS, {"kvtune.io/profile": "p"})
    assert meta["ownerReferences"][0]["kind"] == "HypervisorProfile"
    assert json.loads(action.manifest["data"]["DP_MACVTAP_CONF"]) == [
        {"name": "dp", "lowerDevice": "ens2f0", "mode": "bridge", "capacity": 1}]


def test_a_config_map_that_already_says_so_is_not_written_again() -> None:
    view = state("a", macvtap=[("dp", "ens2f0")])
    current = render_config_map(profile(**RULES), NS, view.state.status.macvtap)["data"]

    assert _plan({"a": view}, current) == []


def test_nothing_in_common_deletes_the_config_map_rather_than_write_an_empty_list() -> None:
    states: dict[str, StateView | None] = {"a": state("a", macvtap=[("dp", "ens2f0")]),
                                           "b": state("b", macvtap=[("dp", "ens3f0")])}

    assert _plan(states, {"DP_MACVTAP_CONF": "[]"}) == [DeleteConfigMap(NS, "kvtune-macvtap-p")]
    assert _plan(states, None) == []


def test_a_node_not_yet_reported_leaves_the_config_map_as_it_is() -> None:
    assert _plan({"a": state("a", macvtap=[("dp", "ens2f0")]), "b": None}, None) == []


def test_a_profile_that_drops_macvtap_removes_its_config_map() -> None:
    states: dict[str, StateView | None] = {"a": state("a")}

    assert _plan(states, {"DP_MACVTAP_CONF": "[]"}, mode="Audit") == [
        DeleteConfigMap(NS, "kvtune-macvtap-p")]


@pytest.mark.apiserver
def test_the_operator_keeps_the_config_map_owned_by_the_profile_and_writes_it_once(
    api_client: client.ApiClient, namespace: str, kvtune_crds: list[str]
) -> None:
    custom, core = client.CustomObjectsApi(api_client), client.CoreV1Api(api_client)
    name = f"mvt-{uuid.uuid4().hex[:6]}"
    body = custom.create_cluster_custom_object("kvtune.io", "v1alpha1", "hypervisorprofiles", {
        "apiVersion": "kvtune.io/v1alpha1", "kind": "HypervisorProfile",
        "metadata": {"name": name},
        "spec": {"nodeSelector": {"matchLabels": {"pool": name}}, **RULES}})
    kube, settings = Kube(api_client), Settings(namespace=namespace)
    mine = Profile.from_body(body)

    def reconcile(*offered: tuple[str, str], previous: HypervisorProfileStatus) -> t.Any:
        views = {n: state(n, owner=name, macvtap=[o]) for n, o in zip("ab", offered, strict=True)}
        snap = snapshot({name: mine}, {n: {"pool": name} for n in views}, views, {})
        return asyncio.run(reconcile_profile(mine, snap, previous, kube, settings))

    first = reconcile(("dp", "ens2f0"), ("dp", "ens2f0"), previous=HypervisorProfileStatus())
    made = core.read_namespaced_config_map(f"kvtune-macvtap-{name}", namespace)
    assert json.loads(made.data["DP_MACVTAP_CONF"])[0]["lowerDevice"] == "ens2f0"
    assert made.metadata.owner_references[0].uid == body["metadata"]["uid"]

    again = reconcile(("dp", "ens2f0"), ("dp", "ens2f0"), previous=first.status)
    assert not [a for a in again.actions if isinstance(a, ApplyConfigMap)]
    assert core.read_namespaced_config_map(
        f"kvtune-macvtap-{name}", namespace).metadata.resource_version == (
        made.metadata.resource_version)

    reconcile(("dp", "ens2f0"), ("dp", "ens3f0"), previous=first.status)
    with pytest.raises(ApiException) as gone:
        core.read_namespaced_config_map(f"kvtune-macvtap-{name}", namespace)
    assert gone.value.status == 404
    custom.delete_cluster_custom_object("kvtune.io", "v1alpha1", "hypervisorprofiles", name)
