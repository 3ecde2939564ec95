"""Where a profile and KubeVirt would work against each other on the same nodes: pure checks.

kvtune cooperates with KubeVirt rather than fights it (anchors, lesson 6): KubeVirt's KSM
handler turns KSM on under memory pressure on the nodes its `ksmConfiguration` selects, which
undoes `memory.ksm: Disabled`; and VMIs asking for dedicated CPUs stay Pending on nodes that
virt-handler has not labelled `kubevirt.io/cpumanager=true` (static CPU manager). Both are
reported on the profile, with the fix, instead of being silently lost.
"""

from __future__ import annotations

import typing as t
from collections.abc import Iterable, Mapping

import pydantic
from kvtune_api.v1alpha1.common import LabelSelector

from ..common.profiles import Profile

CPUMANAGER_LABEL = "kubevirt.io/cpumanager"
MAX_NAMED = 5


def ksm_selector(kubevirt_spec: Mapping[str, t.Any]) -> LabelSelector | None:
    """The KubeVirt CR's KSM node selector; None when KubeVirt does not manage KSM at all."""
    ksm = (kubevirt_spec.get("configuration") or {}).get("ksmConfiguration")
    if ksm is None:
        return None
    # An empty (or absent) nodeLabelSelector means every node, as KubeVirt documents. One kvtune
    # cannot read (KubeVirt's CR checks its selectors less strictly than kvtune's schema) is
    # taken as every node too: KubeVirt may then turn KSM on anywhere, the cautious reading.
    try:
        return LabelSelector.model_validate(ksm.get("nodeLabelSelector") or {})
    except pydantic.ValidationError:
        return LabelSelector()


def problems(
    profile: Profile,
    nodes: Iterable[str],
    labels: Mapping[str, Mapping[str, str]],
    ksm: LabelSelector | None,
) -> list[str]:
    """Human-readable conflicts between the profile and KubeVirt on the profile's nodes."""
    found: list[str] = []
    names = sorted(nodes)
    if profile.spec.memory.ksm == "Disabled" and ksm is not None:
        clash = [n for n in names if ksm.matches(labels.get(n, {}))]
        if clash:
            found.append(
                f"KubeVirt's ksmConfiguration.nodeLabelSelector selects {_some(clash)}: its KSM "
                "handler would turn KSM back on under memory pressure. Exclude these nodes from "
                "that selector in the KubeVirt CR, or set memory.ksm: Unmanaged"
            )
    vmi = profile.spec.vmi
    if vmi is not None and vmi.dedicated_cpus:
        pending = [n for n in names if labels.get(n, {}).get(CPUMANAGER_LABEL) != "true"]
        if pending:
            found.append(
                f"vmi.dedicatedCpus is set but {_some(pending)} lack {CPUMANAGER_LABEL}=true, so "
                "such VMIs would stay Pending there: configure the kubelet with "
                "cpuManagerPolicy: static and enable KubeVirt's CPUManager feature gate "
                "(virt-handler sets the label only with both)"
            )
    return found


def _some(nodes: list[str]) -> str:
    shown = ", ".join(nodes[:MAX_NAMED])
    more = f" and {len(nodes) - MAX_NAMED} more" if len(nodes) > MAX_NAMED else ""
    return f"{len(nodes)} node(s) ({shown}{more})"
