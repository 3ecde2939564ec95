"""The operator on the real API server: node states follow nodes and profiles, status rolls up.

The agents are simulated here by writing node-state status the way an agent does; the real
agent is tested against the API server in its own tests.
"""

from __future__ import annotations

import functools
import time
import typing as t
import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client
from kvtune_api import conditions as cond
from kvtune_operator.common.nodestate import REVERTED
from kvtune_operator.common.profiles import PROFILE_LABEL
from kvtune_operator.controller.settings import Settings
from support.cluster import ClusterAccess, is_gone, wait_for
from support.operator import running_operator

G, V = "kvtune.io", "v1alpha1"
PROFILES, STATES = "hypervisorprofiles", "hypervisornodestates"


@pytest.fixture(scope="module")
def operator(cluster: ClusterAccess, kvtune_crds: list[str]) -> Iterator[None]:
    with running_operator(Settings(), cluster.kubeconfig):
        time.sleep(1)  # let the watches and indexes start
        yield


class World:
    """Nodes, profiles and simulated agents of one test, named apart from other tests."""

    def __init__(self, api: client.ApiClient) -> None:
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.tag = uuid.uuid4().hex[:6]

    def node(self, name: str, **labels: str) -> str:
        full = f"{self.tag}-{name}"
        self.core.create_node({"metadata": {"name": full, "labels": labels}})
        return full

    def relabel(self, node: str, **labels: str | None) -> None:
        self.core.patch_node(node, {"metadata": {"labels": labels}})

    def profile(self, name: str, pool: str, **spec: t.Any) -> str:
        full = f"{self.tag}-{name}"
        body = {"apiVersion": f"{G}/{V}", "kind": "HypervisorProfile",
                "metadata": {"name": full},
                "spec": {"nodeSelector": {"matchLabels": {"pool": f"{self.tag}-{pool}"}}, **spec}}
        self.custom.create_cluster_custom_object(G, V, PROFILES, body)
        return full

    def pool(self, pool: str) -> str:
        return f"{self.tag}-{pool}"

    def state(self, node: str) -> dict[str, t.Any]:
        got: dict[str, t.Any] = self.custom.get_cluster_custom_object(G, V, STATES, node)
        return got

    def status(self, profile: str) -> dict[str, t.Any]:
        got = self.custom.get_cluster_custom_object(G, V, PROFILES, profile)
        return t.cast(dict[str, t.Any], got.get("status") or {})

    def agent_reports(self, node: str, *types: str) -> None:
        """Write status as an agent would: these condition types True, for the current spec."""
        state = self.state(node)
        conditions = [cond.make(ty, "True", ty).model_dump(mode="json") for ty in types]
        for c in conditions:
            c["lastTransitionTime"] = "2026-01-01T00:00:00Z"
        self.custom.patch_cluster_custom_object_status(G, V, STATES, node, {"status": {
            "observedGeneration": state["metadata"]["generation"], "conditions": conditions}})

    def ready_node(self) -> tuple[str, str]:
        """A node under a fresh profile, reported Ready by its agent and rolled up: (node,
        profile)."""
        node = self.node("a", pool=self.pool("vm"))
        profile = self.profile("p", "vm")
        wait_for(lambda: self.has_state(node), "state")
        self.agent_reports(node, cond.READY)
        wait_for(lambda: self.status(profile).get("readyNodes") == 1, "readyNodes 1")
        return node, profile

    def has_state(self, node: str) -> bool:
        return not is_gone(lambda: self.state(node))


@pytest.fixture
def world(operator: None, api_client: client.ApiClient) -> World:
    return World(api_client)


def test_a_profile_renders_a_state_and_a_label_for_each_matching_node(world: World) -> None:
    a = world.node("a", pool=world.pool("vm"))
    b = world.node("b", pool=world.pool("vm"))
    other = world.node("c", pool=world.pool("db"))
    p = world.profile("p", "vm", mode="Enforce")
    wait_for(lambda: world.has_state(a) and world.has_state(b), "states for both nodes")
    assert world.state(a)["spec"]["mode"] == "Enforce"
    assert world.state(a)["spec"]["profile"]["name"] == p
    assert not world.has_state(other)
    wait_for(lambda: world.core.read_node(a).metadata.labels.get(PROFILE_LABEL) == p, "label")
    wait_for(lambda: world.status(p).get("matchedNodes") == 2, "matchedNodes 2")
    assert world.status(p)["readyNodes"] == 0


def test_agent_reports_roll_up_into_a_ready_profile(world: World) -> None:
    _, p = world.ready_node()
    ready = next(c for c in world.status(p)["conditions"] if c["type"] == cond.READY)
    assert ready["status"] == "True"
    assert world.status(p)["observedGeneration"] == 1


def test_a_converged_profile_is_not_rewritten(world: World) -> None:
    a, p = world.ready_node()

    def versions() -> tuple[str, str, str]:
        return (world.state(a)["metadata"]["resourceVersion"],
                world.custom.get_cluster_custom_object(G, V, PROFILES, p)["metadata"][
                    "resourceVersion"],
                world.core.read_node(a).metadata.resource_version)

    time.sleep(1.5)
    before = versions()
    time.sleep(3)  # three resync passes
    assert versions() == before


def test_a_node_leaving_the_selector_reverts_before_its_state_goes(world: World) -> None:
    a = world.node("a", pool=world.pool("vm"))
    p = world.profile("p", "vm")
    wait_for(lambda: world.has_state(a), "state")
    world.relabel(a, pool="elsewhere")
    wait_for(lambda: world.state(a)["spec"]["revert"] is True, "revert requested")
    assert world.has_state(a), "the state must stay until the agent has reverted"
    world.agent_reports(a, REVERTED)
    wait_for(lambda: not world.has_state(a), "state removed after the revert")
    wait_for(lambda: PROFILE_LABEL not in (world.core.read_node(a).metadata.labels or {}),
             "profile label removed")
    wait_for(lambda: world.status(p).get("matchedNodes") == 0, "matchedNodes 0")


def _one_degraded(world: World, profile: str) -> bool:
    return bool(world.status(profile).get("degradedNodes") == 1)


def test_a_node_matched_by_two_profiles_is_reported_by_both(world: World) -> None:
    a = world.node("a", pool=world.pool("vm"), gpu=world.pool("yes"))
    p = world.profile("p", "vm")
    q = world.custom.create_cluster_custom_object(G, V, PROFILES, {
        "apiVersion": f"{G}/{V}", "kind": "HypervisorProfile",
        "metadata": {"name": f"{world.tag}-q"},
        "spec": {"nodeSelector": {"matchLabels": {"gpu": world.pool("yes")}}}})["metadata"]["name"]
    for name, other in ((p, q), (q, p)):
        wait_for(functools.partial(_one_degraded, world, name), f"{name} degraded")
        failing = world.status(name)["failingNodes"]
        assert failing[0]["node"] == a and failing[0]["reason"] == "ProfileConflict"
        assert other in failing[0]["message"]
    # p may have rendered the node before q existed: that state is frozen, not handed over.
    wait_for(lambda: not world.has_state(a) or world.state(a)["spec"]["paused"] is True,
             "no state, or a paused one")


def test_a_paused_profile_pauses_its_states(world: World) -> None:
    a = world.node("a", pool=world.pool("vm"))
    p = world.profile("p", "vm")
    wait_for(lambda: world.has_state(a), "state")
    world.custom.patch_cluster_custom_object(G, V, PROFILES, p, {
        "metadata": {"annotations": {"kvtune.io/paused": "true"}}})
    wait_for(lambda: world.state(a)["spec"]["paused"] is True, "state paused")


def test_deleting_a_profile_reverts_its_nodes_then_lets_it_go(world: World) -> None:
    a = world.node("a", pool=world.pool("vm"))
    p = world.profile("p", "vm")
    wait_for(lambda: world.has_state(a), "state")
    world.custom.delete_cluster_custom_object(G, V, PROFILES, p)
    wait_for(lambda: world.state(a)["spec"]["revert"] is True, "revert requested")
    assert not is_gone(lambda: world.custom.get_cluster_custom_object(G, V, PROFILES, p)), (
        "the profile must wait for its nodes")
    world.agent_reports(a, REVERTED)
    wait_for(lambda: is_gone(lambda: world.custom.get_cluster_custom_object(G, V, PROFILES, p)),
             "profile deleted", timeout=30)
    assert not world.has_state(a)


def test_reported_luns_become_volumes_and_a_bound_one_is_kept(world: World) -> None:
    a = world.node("a", pool=world.pool("vm"))
    p = world.profile("p", "vm", storage={"blockLuns": {
        "selector": {"byIdPatterns": ["wwn-*"]}, "storageClassName": world.pool("raw")}})
    wait_for(lambda: world.has_state(a), "state")
    lun = {"name": "sdb", "path": "/dev/disk/by-id/wwn-0x5000c5", "sizeBytes": 2**40,
           "wwid": f"0x{world.tag}"}
    state = world.state(a)
    world.custom.patch_cluster_custom_object_status(G, V, STATES, a, {"status": {
        "observedGeneration": state["metadata"]["generation"], "luns": [lun]}})

    def volumes() -> list[t.Any]:
        return [pv for pv in world.core.list_persistent_volume(
            label_selector=f"{PROFILE_LABEL}={p}").items]

    wait_for(lambda: len(volumes()) == 1, "a PersistentVolume for the LUN")
    [pv] = volumes()
    assert pv.spec.volume_mode == "Block" and pv.spec.local.path == lun["path"]
    assert pv.spec.storage_class_name == world.pool("raw")
    assert pv.spec.persistent_volume_reclaim_policy == "Retain"

    # Someone's claim binds it; then the LUN disappears from the node's report.
    world.core.patch_persistent_volume_status(pv.metadata.name, {"status": {"phase": "Bound"}})
    world.custom.patch_cluster_custom_object_status(G, V, STATES, a, {"status": {"luns": []}})

    def lun_condition() -> dict[str, t.Any] | None:
        return next((c for c in world.status(p).get("conditions", [])
                     if c["type"] == "LunVolumes"), None)

    wait_for(lambda: (lun_condition() or {}).get("status") == "False", "the missing LUN reported")
    assert pv.metadata.name in (lun_condition() or {})["message"]
    time.sleep(1.5)
    [kept] = volumes()
    assert kept.metadata.uid == pv.metadata.uid and kept.status.phase == "Bound"
