"""The operator on the real API server keeps what it owns: the whole node-state spec, the state's
profile label, the agent DaemonSet, and no node cordoned after the drain it was cordoned for.

Agents are simulated by writing node-state status as an agent does (as in test_operator.py).
"""

from __future__ import annotations

import contextlib
import copy
import pathlib
import time
import typing as t
from collections.abc import Iterator

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kvtune_api import conditions as cond
from kvtune_operator.common.nodestate import REVERTED
from kvtune_operator.common.profiles import PROFILE_LABEL
from kvtune_operator.controller.daemonset import NAME as AGENT
from kvtune_operator.controller.rollup import AGENT_DAEMONSET
from kvtune_operator.controller.settings import Settings
from kvtune_operator.controller.views import CORDONED_ANNOTATION
from support.cluster import ClusterAccess, apply_crds, fresh_namespace, is_gone, wait_for
from support.operator import running_operator

from .test_operator import PROFILES, STATES, G, V, World

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def operator_namespace(api_client: client.ApiClient) -> Iterator[str]:
    with fresh_namespace(api_client, "kvtune-op") as name:
        yield name


@pytest.fixture(scope="module")
def operator(
    cluster: ClusterAccess, kvtune_crds: list[str], operator_namespace: str
) -> Iterator[None]:
    settings = Settings(agent_image="registry.example/kvtune:test", namespace=operator_namespace)
    with running_operator(settings, cluster.kubeconfig):
        time.sleep(1)  # let the watches and indexes start
        yield


@pytest.fixture
def world(operator: None, api_client: client.ApiClient) -> World:
    return World(api_client)


def _agent_needs_a_drain(world: World, node: str) -> None:
    """Status as an agent writes it when its next step needs the node drained."""
    state = world.state(node)
    world.custom.patch_cluster_custom_object_status(G, V, STATES, node, {"status": {
        "observedGeneration": state["metadata"]["generation"], "drainRequired": True}})


def _cordon(world: World, node: str) -> tuple[bool, str | None]:
    got = world.core.read_node(node)
    return bool(got.spec.unschedulable), (got.metadata.annotations or {}).get(CORDONED_ANNOTATION)


def test_a_hand_set_approval_is_withdrawn(world: World) -> None:
    node, _ = world.ready_node()
    forged = {"spec": {"disruption": {"approved": True}}}
    world.custom.patch_cluster_custom_object(G, V, STATES, node, forged)
    wait_for(lambda: world.state(node)["spec"]["disruption"]["approved"] is False,
             "the operator putting its own spec back")


def test_a_relabelled_state_is_relabelled_and_still_its_profile_s(world: World) -> None:
    node, p = world.ready_node()
    other = world.profile("q", "elsewhere")
    world.custom.patch_cluster_custom_object(
        G, V, STATES, node, {"metadata": {"labels": {PROFILE_LABEL: other}}})
    wait_for(lambda: world.state(node)["metadata"]["labels"][PROFILE_LABEL] == p, "label back")
    time.sleep(2)  # passes of both profiles
    state = world.state(node)
    assert state["spec"]["revert"] is False, "the other profile must not revert it"
    assert world.status(p)["readyNodes"] == 1
    assert world.status(other).get("matchedNodes", 0) == 0


def test_deleting_a_profile_mid_drain_uncordons_the_node_kvtune_cordoned(world: World) -> None:
    node = world.node("a", pool=world.pool("vm"))
    p = world.profile("p", "vm", mode="Enforce", rollout={"allowDrain": True})
    wait_for(lambda: world.has_state(node), "state")
    _agent_needs_a_drain(world, node)
    # Only the cordon itself: where kvtune notes it is its own business (it moved to the Node).
    wait_for(lambda: _cordon(world, node)[0], "kvtune cordoning the node")
    world.custom.delete_cluster_custom_object(G, V, PROFILES, p)
    wait_for(lambda: _cordon(world, node) == (False, None), "the node uncordoned")
    world.agent_reports(node, REVERTED)
    wait_for(lambda: is_gone(lambda: world.custom.get_cluster_custom_object(G, V, PROFILES, p)),
             "profile deleted", timeout=30)
    assert _cordon(world, node) == (False, None)


def test_deleting_a_profile_lifts_only_kvtune_s_cordon_not_an_administrator_s(
    world: World,
) -> None:
    pool = world.pool("vm")
    mine, theirs = world.node("a", pool=pool), world.node("b", pool=pool)
    world.core.patch_node(theirs, {"spec": {"unschedulable": True}})
    p = world.profile("p", "vm", mode="Enforce", rollout={"allowDrain": True, "maxUnavailable": 2})
    wait_for(lambda: world.has_state(mine) and world.has_state(theirs), "states")
    for node in (mine, theirs):
        _agent_needs_a_drain(world, node)
    wait_for(lambda: _cordon(world, mine)[0], "kvtune cordoning its node")
    wait_for(lambda: world.state(theirs)["spec"]["disruption"]["approved"] is True,
             "approved: the administrator emptied it")
    world.custom.delete_cluster_custom_object(G, V, PROFILES, p)
    wait_for(lambda: _cordon(world, mine) == (False, None), "kvtune's cordon lifted")
    for node in (mine, theirs):
        world.agent_reports(node, REVERTED)
    wait_for(lambda: is_gone(lambda: world.custom.get_cluster_custom_object(G, V, PROFILES, p)),
             "profile deleted", timeout=30)
    time.sleep(1)
    assert _cordon(world, theirs) == (True, None), "not kvtune's cordon to lift"
    assert _cordon(world, mine) == (False, None)


def _events(world: World, profile: str, reason: str) -> list[t.Any]:
    found = world.core.list_namespaced_event("default").items
    return [e for e in found if e.involved_object.name == profile and e.reason == reason]


def test_a_deleted_agent_daemonset_is_recreated_and_the_profile_says_so(
    world: World, api_client: client.ApiClient, operator_namespace: str
) -> None:
    apps = client.AppsV1Api(api_client)
    _, p = world.ready_node()
    # The DaemonSet itself, not the condition about it, so that the test fails on an operator
    # that never recreates it for that reason and not for a missing condition type.
    def installed() -> bool:
        return not is_gone(lambda: apps.read_namespaced_daemon_set(AGENT, operator_namespace))

    wait_for(installed, "the agent DaemonSet installed")
    before = apps.read_namespaced_daemon_set(AGENT, operator_namespace).metadata.uid
    apps.delete_namespaced_daemon_set(AGENT, operator_namespace)

    def recreated() -> bool:
        found = is_gone(lambda: apps.read_namespaced_daemon_set(AGENT, operator_namespace))
        return not found and apps.read_namespaced_daemon_set(
            AGENT, operator_namespace).metadata.uid != before

    wait_for(recreated, "the agent DaemonSet recreated without an operator restart")
    wait_for(lambda: bool(_events(world, p, f"{AGENT_DAEMONSET}False")),
             "an Event saying it was gone")
    [event] = _events(world, p, f"{AGENT_DAEMONSET}False")
    assert "was missing" in event.message and operator_namespace in event.message
    assert cond.READY in {c["type"] for c in world.status(p)["conditions"]}


def _loosened(crd: dict[str, t.Any]) -> dict[str, t.Any]:
    """The profile CRD as it was before rollout.maxUnavailable was bounded."""
    loose = copy.deepcopy(crd)
    spec = loose["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec["properties"]["rollout"]["properties"]["maxUnavailable"].pop("x-kubernetes-validations")
    return loose


def test_a_profile_stored_before_the_schema_refused_it_is_degraded_naming_the_field(
    world: World, api_client: client.ApiClient
) -> None:
    crd = yaml.safe_load((REPO / "crds" / "hypervisorprofiles.kvtune.io.yaml").read_text())
    apply_crds(api_client, [_loosened(crd)])
    made: list[str] = []

    def stored() -> bool:  # the apiserver takes up a changed schema a moment after the update
        try:
            made.append(world.profile("old", "old", rollout={"maxUnavailable": 0}))
        except ApiException as e:
            if e.status != 422:
                raise
            return False
        return True

    try:
        wait_for(stored, "the loosened schema taking effect")
    finally:
        apply_crds(api_client, [crd])
    [p] = made

    def degraded() -> dict[str, t.Any] | None:
        found = [c for c in world.status(p).get("conditions", []) if c["type"] == cond.DEGRADED]
        return found[0] if found and found[0]["reason"] == "InvalidSpec" else None

    wait_for(lambda: degraded() is not None, "Degraded InvalidSpec")
    condition = degraded()
    assert condition is not None and condition["status"] == "True"
    assert condition["message"].startswith("spec.rollout.maxUnavailable: ")
    assert "Correct the profile" in condition["message"]
    version = world.custom.get_cluster_custom_object(G, V, PROFILES, p)["metadata"][
        "resourceVersion"]
    time.sleep(2)  # passes: the same status, not rewritten
    assert world.custom.get_cluster_custom_object(G, V, PROFILES, p)["metadata"][
        "resourceVersion"] == version
    world.custom.delete_cluster_custom_object(G, V, PROFILES, p)
    wait_for(lambda: is_gone(lambda: world.custom.get_cluster_custom_object(G, V, PROFILES, p)),
             "the unreadable profile deleted, not held by its finalizer")


def _no_profile_left(world: World) -> None:
    """Every profile of the cluster gone, without waiting for its nodes' reverts."""
    for p in world.custom.list_cluster_custom_object(G, V, PROFILES)["items"]:
        name = p["metadata"]["name"]
        with contextlib.suppress(ApiException):
            world.custom.delete_cluster_custom_object(G, V, PROFILES, name)
            # Deleting first: kopf adds no finalizer back to an object being deleted.
            world.custom.patch_cluster_custom_object(
                G, V, PROFILES, name, {"metadata": {"finalizers": None}})
    wait_for(lambda: not world.custom.list_cluster_custom_object(G, V, PROFILES)["items"],
             "no profile left")


def test_with_no_profile_left_a_cordon_kvtune_noted_is_lifted(world: World) -> None:
    # The last profile removed with its finalizer taken off mid-drain, or the operator started
    # after that: no profile's pass is left to lift the cordon, and the node stayed cordoned.
    _no_profile_left(world)
    node = world.node("a", pool=world.pool("vm"))
    world.core.patch_node(node, {"spec": {"unschedulable": True},
                                 "metadata": {"annotations": {CORDONED_ANNOTATION: "true"}}})
    wait_for(lambda: _cordon(world, node) == (False, None), "the cordon lifted")
