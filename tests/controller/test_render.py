"""A node's state is rendered from its profile alone, deterministically."""

from __future__ import annotations

from kvtune_api.v1alpha1.nodestate import HypervisorNodeState
from kvtune_operator.common.profiles import PROFILE_LABEL
from kvtune_operator.controller.render import render_node_state

from .builders import profile


def test_the_rendered_state_copies_the_host_settings_and_names_its_profile() -> None:
    p = profile(generation=4, memory={"ksm": "Enabled", "hugepages": {"pages": [
        {"size": "1Gi", "count": 8}]}}, mode="Enforce")
    manifest = render_node_state(p, "node-1")
    state = HypervisorNodeState.model_validate(manifest)
    assert state.metadata.name == "node-1"
    assert manifest["metadata"]["labels"] == {PROFILE_LABEL: "p"}
    assert manifest["metadata"]["ownerReferences"][0]["uid"] == "uid-p"
    assert state.spec.profile.generation == 4
    assert state.spec.mode == "Enforce"
    assert state.spec.host.memory.ksm == "Enabled"
    assert state.spec.host.memory.hugepages.pages[0].count == 8
    assert "vmi" not in manifest["spec"]["host"]
    assert "nodeSelector" not in manifest["spec"]["host"]


def test_the_boot_settings_reach_the_node_with_the_reboot_grant() -> None:
    manifest = render_node_state(
        profile(boot={"settings": "Report"}, rollout={"allowReboot": True}), "n")
    assert manifest["spec"]["host"]["boot"] == {"settings": "Report"}
    assert manifest["spec"]["disruption"]["allowReboot"] is True


def test_rendering_is_deterministic() -> None:
    p = profile(rollout={"allowDrain": True})
    assert render_node_state(p, "n") == render_node_state(p, "n")
    assert render_node_state(p, "n")["spec"]["disruption"] == {
        "allowDrain": True, "allowReboot": False, "approved": False}


def test_the_pause_annotation_pauses_every_rendered_state() -> None:
    from kvtune_operator.common.profiles import Profile

    body = {"metadata": {"name": "p", "annotations": {"kvtune.io/paused": "true"}},
            "spec": {"nodeSelector": {}}}
    assert render_node_state(Profile.from_body(body), "n")["spec"]["paused"] is True


def test_a_revert_is_rendered_as_a_flag_on_the_same_spec() -> None:
    assert render_node_state(profile(), "n", revert=True)["spec"]["revert"] is True


def test_the_fast_path_renders_exactly_what_the_model_would() -> None:
    from kvtune_operator.controller.views import normalized

    p = profile(mode="Enforce", memory={"hugepages": {"pages": [{"size": "2Mi", "count": 4}]}},
                rollout={"allowReboot": True})
    for flags in ({}, {"paused": True}, {"revert": True}, {"approved": True}):
        rendered = render_node_state(p, "n", **flags)["spec"]
        assert normalized(rendered) == rendered


def test_the_vmi_settings_travel_to_the_node_for_its_audit() -> None:
    p = profile(vmi={"namespaceSelector": {}, "hugepageSize": "2Mi"},
                memory={"hugepages": {"pages": [{"size": "2Mi", "count": 4}]}})
    assert render_node_state(p, "n")["spec"]["vmi"]["hugepageSize"] == "2Mi"
    assert "vmi" not in render_node_state(profile(), "n")["spec"]
