"""A HypervisorNodeStateSpec builder for the agent's tests, from the camelCase the API stores,
and a busy host with the spec it is far from, for the apply and cycle tests."""

from __future__ import annotations

import typing as t
from collections.abc import Iterable
from pathlib import Path

from kvtune_api.v1alpha1.nodestate import HypervisorNodeStateSpec
from support.hosttree import HostTree, intel_two_socket
from support.sections import HostSections


def node_spec(
    mode: str = "Enforce",
    *,
    paused: bool = False,
    revert: bool = False,
    approved: bool = False,
    allow_reboot: bool = False,
    vmi: dict[str, t.Any] | None = None,
    **host: t.Unpack[HostSections],
) -> HypervisorNodeStateSpec:
    """A spec for node n1 with the host settings given as camelCase sections (memory=..., ...),
    and the VMI settings when given."""
    return HypervisorNodeStateSpec.model_validate({
        **({"vmi": {"namespaceSelector": {}, **vmi}} if vmi is not None else {}),
        "nodeName": "n1",
        "profile": {"name": "p", "generation": 1},
        "mode": mode,
        "paused": paused,
        "revert": revert,
        "host": host,
        "disruption": {"allowDrain": True, "allowReboot": allow_reboot, "approved": approved},
    })


def busy_host(root: Path, vf_drivers: Iterable[str | None] = ("iavf", "iavf")) -> HostTree:
    """A host far from `busy_spec`: KSM merging with ksmtuned, numad, THP always, 2 VFs."""
    tree = intel_two_socket(root).ksm(1, shared=100, sharing=4000).thp("always").systemctl()
    tree.unit("ksmtuned.service", wanted_by=["multi-user.target"])
    tree.process(812, "bash", "bash", "/usr/sbin/ksmtuned")
    tree.unit("numad.service", wanted_by=["multi-user.target"]).process(700, "numad")
    tree.file("/proc/stat", "cpu  1 2 3\nbtime 1700000000")
    return tree.nic("ens1f0", "0000:3b:00.0", total_vfs=64, vf_drivers=vf_drivers)


class Flags(t.TypedDict, total=False):
    """`node_spec`'s flags, for builders that pass them on."""

    paused: bool
    revert: bool
    approved: bool
    allow_reboot: bool


def busy_spec(mode: str = "Enforce", **flags: t.Unpack[Flags]) -> HypervisorNodeStateSpec:
    """KSM and numad off, THP madvise, 40 1Gi hugepages, 8 VFs on ens1f0."""
    return node_spec(
        mode,
        memory={"ksm": "Disabled", "transparentHugepages": "madvise",
                "hugepages": {"pages": [{"size": "1Gi", "count": 40}]}},
        numa={"numad": "Disabled"},
        network={"sriov": [{"pfSelector": {"names": ["ens1f0"]}, "numVfs": 8}]},
        **flags,
    )
