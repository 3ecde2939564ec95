"""The SR-IOV planner: VF counts per selected PF, through a drain where VFs are in use."""

from __future__ import annotations

import typing as t
from pathlib import Path

import pytest
from support.hosttree import (
    HostTree,
)

from ..specs import node_spec
from .planning import finding_of, plan_of, steps_of


def _nics(tmp_path: Path, vf_drivers: t.Iterable[str | None] = ()) -> HostTree:
    tree = HostTree(tmp_path).nic("ens1f0", "0000:3b:00.0", total_vfs=64, vf_drivers=vf_drivers)
    return tree.nic("ens1f1", "0000:3b:00.1", total_vfs=64).nic("eno1", "0000:19:00.0")


@pytest.mark.parametrize(("selector", "selected"), [
    pytest.param({"names": ["ens1f1"]}, ["ens1f1"], id="by name"),
    pytest.param({"pciAddresses": ["0000:3b:00.0"]}, ["ens1f0"], id="by PCI address"),
    pytest.param({"vendor": "8086", "device": "159b", "names": ["ens1f0", "ens1f1"]},
                 ["ens1f0", "ens1f1"], id="every given criterion must match"),
    pytest.param({"vendor": "8086", "device": "1592"}, [], id="another device matches nothing"),
])
def test_a_pf_selector_picks_the_nics_whose_criteria_all_match(
    tmp_path: Path, selector: dict[str, t.Any], selected: list[str]
) -> None:
    spec = node_spec(network={"sriov": [{"pfSelector": selector, "numVfs": 4}]})

    found = plan_of(_nics(tmp_path), spec)

    assert sorted(steps_of(found)) == [f"sriov/{name}" for name in selected]
    if not selected:
        assert finding_of(found, "SriovRuleMatchesNothing").severity == "Warning"


def test_more_vfs_than_the_nic_supports_is_an_error_naming_nic_and_field(tmp_path: Path) -> None:
    spec = node_spec(network={"sriov": [{"pfSelector": {"names": ["ens1f0"]}, "numVfs": 128}]})

    found = plan_of(_nics(tmp_path), spec)

    assert found.steps == ()
    assert finding_of(found, "SriovTooManyVfs").message.startswith(
        "spec.host.network.sriov[0].numVfs is 128, but NIC ens1f0 (0000:3b:00.0) supports at "
        "most 64 VFs")


def test_a_nic_without_sriov_selected_by_a_rule_is_an_error(tmp_path: Path) -> None:
    spec = node_spec(network={"sriov": [{"pfSelector": {"names": ["eno1"]}, "numVfs": 4}]})

    assert "NIC eno1" in finding_of(plan_of(_nics(tmp_path), spec), "SriovNotCapable").message


@pytest.mark.parametrize(("vf_drivers", "disruption"), [
    pytest.param([], "Live", id="creating the first VFs is live"),
    pytest.param(["iavf", None], "Live", id="VFs no VM uses may be recreated live"),
    pytest.param(["iavf", "vfio-pci"], "NeedsDrain", id="a VF attached to a VM needs a drain"),
    *(pytest.param(["iavf", driver], "NeedsDrain", id=f"a VF bound to {driver} needs a drain")
      for driver in ("pci-stub", "igb_uio", "uio_pci_generic")),
])
def test_changing_a_vf_count_needs_a_drain_only_when_a_vf_is_in_use(
    tmp_path: Path, vf_drivers: list[str | None], disruption: str
) -> None:
    spec = node_spec(network={"sriov": [{"pfSelector": {"names": ["ens1f0"]}, "numVfs": 8}]})

    step = steps_of(plan_of(_nics(tmp_path, vf_drivers), spec))["sriov/ens1f0"]

    assert (step.path, step.current, step.desired, step.disruption) == (
        "/sys/bus/pci/devices/0000:3b:00.0/sriov_numvfs", str(len(vf_drivers)), "8", disruption)


def test_two_rules_wanting_different_counts_for_one_nic_leave_it_alone(tmp_path: Path) -> None:
    spec = node_spec(network={"sriov": [
        {"pfSelector": {"vendor": "8086"}, "numVfs": 8},
        {"pfSelector": {"names": ["ens1f1"]}, "numVfs": 16},
    ]})

    found = plan_of(_nics(tmp_path), spec)

    assert "sriov/ens1f1" not in steps_of(found)
    assert "sriov[0] (numVfs 8) and sriov[1] (numVfs 16)" in (
        finding_of(found, "SriovRulesConflict").message)
