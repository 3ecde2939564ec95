"""Dedicated networking: each VM on an SR-IOV VF or a macvtap NIC of its own, never only a
software switch shared with other pods (vmi.dedicatedNetworking, vmi.podNetwork)."""

from __future__ import annotations

from typing import Any

import pytest
from kvtune_operator.webhook.vmi import KubeVirtConfig, validate_vmi
from support.kubevirt_oracle import Oracle, admission_chain

from webhook import Obj, make_profile, make_vmi

SRIOV = ({"name": "data", "sriov": {}}, {"name": "data", "multus": {"networkName": "vf-net"}})
MACVTAP = ({"name": "data", "binding": {"name": "macvtap"}},
           {"name": "data", "multus": {"networkName": "macvtap-ens2"}})
BRIDGE = ({"name": "data", "bridge": {}},
          {"name": "data", "multus": {"networkName": "br-shared"}})
POD = ({"name": "default", "masquerade": {}}, {"name": "default", "pod": {}})


def vmi(*nics: tuple[Obj, Obj]) -> Obj:
    spec: dict[str, Any] = {"networks": [network for _, network in nics]} if nics else {}
    domain = {"devices": {"interfaces": [interface for interface, _ in nics]} if nics else {},
              "resources": {"requests": {"memory": "2Gi"}}}
    return make_vmi(domain, **spec)


def profile(mode: str = "Require", pod_network: str = "Shared") -> Any:
    return make_profile(vmi={"dedicatedCpus": False, "isolateEmulatorThread": False,
                             "dedicatedNetworking": mode, "podNetwork": pod_network})


def judged(vmi: Obj, **settings: str) -> tuple[list[str], list[str]]:
    return validate_vmi(profile(**settings), vmi, namespace_labels={})


@pytest.mark.parametrize(
    ("nics", "pod_network"),
    [
        pytest.param((SRIOV,), "Shared", id="an SR-IOV VF alone"),
        pytest.param((MACVTAP,), "Shared", id="macvtap alone"),
        pytest.param((POD, SRIOV), "ManagementOnly", id="management pod network beside a VF"),
    ],
)
def test_a_vmi_with_a_nic_of_its_own_passes(nics: tuple[tuple[Obj, Obj], ...],
                                            pod_network: str) -> None:
    assert judged(vmi(*nics), pod_network=pod_network) == ([], [])


@pytest.mark.parametrize(
    ("nics", "pod_network", "named"),
    [
        pytest.param((), "Shared", "interfaces[0] (default, bridge binding) on the pod network",
                     id="no interface: KubeVirt's default bridge on the pod network"),
        pytest.param((POD,), "ManagementOnly", "no interface uses SR-IOV or macvtap",
                     id="only the management pod network"),
        pytest.param((POD, SRIOV), "Shared", "interfaces[0] (default, masquerade binding)",
                     id="a VF beside a pod network that carries traffic"),
        pytest.param((BRIDGE,), "Shared", "on Multus network br-shared",
                     id="bridge binding on a Multus bridge"),
    ],
)
def test_a_vmi_on_shared_switches_is_refused_naming_the_interface_and_the_fix(
    nics: tuple[tuple[Obj, Obj], ...], pod_network: str, named: str
) -> None:
    errors, warnings = judged(vmi(*nics), pod_network=pod_network)
    assert warnings == [] and len(errors) == 1
    assert named in errors[0]
    assert "sriov: {}" in errors[0] and "binding: {name: macvtap}" in errors[0]
    assert ("vmi.podNetwork: ManagementOnly" in errors[0]) is (pod_network == "Shared")


def test_warn_mode_only_warns_and_off_judges_nothing() -> None:
    assert judged(vmi(BRIDGE), mode="Warn")[0] == []
    assert len(judged(vmi(BRIDGE), mode="Warn")[1]) == 1
    assert judged(vmi(BRIDGE), mode="Off") == ([], [])


def test_the_default_is_warn() -> None:
    bare = make_profile(vmi={"dedicatedCpus": False, "isolateEmulatorThread": False})
    defaults = bare.spec.vmi
    assert defaults is not None
    # make_profile turns networking off for the other tests; the model's own default is Warn.
    assert type(defaults).model_fields["dedicated_networking"].default == "Warn"


@pytest.mark.parametrize("nics", [(SRIOV,), (MACVTAP,), (POD, SRIOV)], ids=["sriov", "macvtap",
                                                                          "pod and sriov"])
def test_kubevirt_admits_the_vmis_dedicated_networking_lets_through(
    kubevirt_oracle: Oracle, nics: tuple[tuple[Obj, Obj], ...]
) -> None:
    pod_network = "ManagementOnly" if len(nics) > 1 else "Shared"
    outcome = admission_chain(kubevirt_oracle, profile(pod_network=pod_network), vmi(*nics),
                              KubeVirtConfig())
    # (macvtap is admitted too; to run, the cluster registers the binding in the KubeVirt CR's
    # spec.configuration.network.binding and runs the macvtap-cni device plugin.)
    assert outcome.refused_by is None, outcome.reasons


@pytest.mark.parametrize(
    ("domain", "spec", "field"),
    [
        pytest.param({"devices": {"interfaces": 5}}, {}, "spec.domain.devices.interfaces",
                     id="interfaces not a list"),
        pytest.param({"devices": {"interfaces": [{"name": ["x"], "bridge": {}}]}},
                     {"networks": 7}, "spec.networks", id="networks not a list"),
    ],
)
def test_a_malformed_interface_list_is_an_error_naming_the_field_not_a_crash(
    domain: Obj, spec: Obj, field: str
) -> None:
    bad = make_vmi({**domain, "resources": {"requests": {"memory": "2Gi"}}}, **spec)
    errors, _ = validate_vmi(profile(), bad, namespace_labels={})
    assert len(errors) == 1 and errors[0].startswith(field)


def test_an_audit_profile_warns_about_an_unreadable_field_instead_of_refusing() -> None:
    from kvtune_operator.webhook.vmi import mutate_vmi

    bad = make_vmi({"resources": {"requests": {"memory": "lots"}}})
    result = mutate_vmi(make_profile(mode="Audit"), bad, namespace_labels={})
    assert result.refused == [] and result.patch == []
    assert len(result.warnings) == 1 and "requests.memory" in result.warnings[0]
