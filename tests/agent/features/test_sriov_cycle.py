"""The SR-IOV feature through the agent's whole cycle: VFs bound and offered, nothing written at
steady state, put back on revert, and a PF the SR-IOV Network Operator manages left alone."""

from __future__ import annotations

import datetime
import typing as t
from pathlib import Path

from kvtune_agent.engine.journal import Journal
from kvtune_agent.features.base import NodeMeta
from kvtune_agent.host import pcidriver
from kvtune_agent.host.hostfs import HostFS
from kvtune_agent.wiring import run_cycle
from kvtune_api import conditions as cond
from kvtune_api.v1alpha1.nodestate import (
    HypervisorNodeStateSpec,
    HypervisorNodeStateStatus,
    SriovOperatorPolicy,
)
from support.hosttree import HostTree, vf_address

from ..specs import node_spec

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
PF = "0000:3b:00.0"
VFS = [vf_address(PF, i) for i in range(3)]


def _host(root: Path) -> HostTree:
    tree = HostTree(root).cpuinfo(4).driver("vfio-pci").systemctl()
    return tree.nic("ens1f0", PF, total_vfs=8, vf_drivers=["iavf"] * 3)


def _spec(**flags: t.Any) -> HypervisorNodeStateSpec:
    policies = flags.pop("policies", [])
    spec = node_spec(network={"sriov": [{
        "pfSelector": {"names": ["ens1f0"]}, "numVfs": 3, "driver": "vfio-pci",
        "resourceName": "dataplane"}]}, **flags)
    return spec.model_copy(update={"sriov_operator_policies": [
        SriovOperatorPolicy.model_validate(p) for p in policies]})


def _cycle(tree: HostTree, spec: HypervisorNodeStateSpec, fs: HostFS | None = None,
           previous: HypervisorNodeStateStatus | None = None) -> HypervisorNodeStateStatus:
    return run_cycle(fs or tree.kernel(), spec, 3, NodeMeta(),
                     previous or HypervisorNodeStateStatus(), systemd=tree.systemd(), now=NOW,
                     timeout=5).status


def _drivers(tree: HostTree) -> list[str | None]:
    return [pcidriver.binding(tree.fs(), vf).driver for vf in VFS]


def test_vfs_are_bound_offered_left_alone_at_steady_state_and_put_back_on_revert(
    tmp_path: Path,
) -> None:
    tree = _host(tmp_path)

    first = _cycle(tree, _spec())

    assert [r.result for r in first.results if r.id == "sriov-driver/ens1f0"] == ["Applied"]
    assert _drivers(tree) == ["vfio-pci"] * 3
    assert [p.resource_name for p in first.sriov] == ["dataplane"]
    sriov = cond.find(first.conditions, "SRIOV")
    assert sriov is not None and sriov.status == "True", first.conditions
    assert sriov.message == "offers sriov.kvtune.io/dataplane on ens1f0"
    assert [e.kind for e in Journal(tree.fs()).entries()] == ["pcidriver"]

    fs = tree.kernel()
    _cycle(tree, _spec(), fs=fs, previous=first)
    assert fs.writes == []

    _cycle(tree, _spec(revert=True), previous=first)
    assert _drivers(tree) == ["iavf"] * 3
    assert all(pcidriver.binding(tree.fs(), vf).override is None for vf in VFS)


def test_a_pf_the_sriov_network_operator_manages_is_only_audited(tmp_path: Path) -> None:
    tree = _host(tmp_path)
    fs = tree.kernel()

    status = _cycle(tree, _spec(policies=[{"name": "op/intel", "pfNames": ["ens1f0"]}]), fs=fs)

    assert fs.writes == [] and _drivers(tree) == ["iavf"] * 3
    assert [(pf.name, pf.policies) for pf in status.sriov_operator_pfs] == [
        ("ens1f0", ["op/intel"])]
    sriov = cond.find(status.conditions, "SRIOV")
    assert sriov is not None and (sriov.status, sriov.reason) == (
        "False", "SriovPfManagedElsewhere")
    assert status.sriov == []
