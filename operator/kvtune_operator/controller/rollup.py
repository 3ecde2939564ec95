"""Rolls the node states of a profile up into its status: a pure function.

Counts and a bounded list of failing nodes answer "where do my nodes stand" in one
`kubectl get hvp`; the three conditions answer "is it done, is it moving, is it broken".
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence

from kvtune_api import conditions as cond
from kvtune_api.v1alpha1.common import ConditionStatus
from kvtune_api.v1alpha1.profile import FailingNode, HypervisorProfileStatus, MacvtapResource

from ..common.nodestate import Phase, StateView, node_phase
from ..common.profiles import Profile
from .macvtap import Offers, offers

MAX_FAILING = 20
#: False while the agent DaemonSet is missing, and once when the operator recreated it.
AGENT_DAEMONSET = "AgentDaemonSet"
#: That condition's (status, reason, message).
AgentCondition = tuple[ConditionStatus, str, str]
#: A fourth profile condition: False when KubeVirt's own settings would undo the profile.
KUBEVIRT_COMPATIBLE = "KubeVirtCompatible"
#: The agents' running-VM audits, rolled up (the node condition has the same type).
VMS_COMPLIANT = "VMsCompliant"
#: Present for profiles with storage.blockLuns: False when volumes outlive their LUNs.
LUN_VOLUMES = "LunVolumes"
#: Present for profiles with network.macvtap: whether one device plugin configuration is right
#: on every node (the stock macvtap-cni DaemonSet reads one ConfigMap on all its nodes).
MACVTAP_CONFIG = "MacvtapConfig"


def rollup(
    profile: Profile,
    states: Mapping[str, StateView | None],
    conflicts: Mapping[str, Sequence[str]],
    previous: HypervisorProfileStatus,
    now: datetime.datetime,
    kubevirt_problems: Sequence[str] = (),
    orphaned_volumes: Sequence[str] = (),
    shared_luns: Sequence[str] = (),
    agent: AgentCondition | None = None,
) -> HypervisorProfileStatus:
    """The profile's status from its nodes' states (None: not created yet); `agent`: the
    AgentDaemonSet condition's (status, reason, message), None when no agent is managed."""
    counts: dict[Phase, int] = {"Ready": 0, "Progressing": 0, "Degraded": 0, "Waiting": 0}
    failing: list[FailingNode] = []
    for node in sorted(states):
        phase, reason, message = node_phase(states[node])
        counts[phase] += 1
        if phase in ("Degraded", "Waiting"):
            failing.append(FailingNode(node=node, reason=reason, message=message))
    for node in sorted(conflicts):
        others = ", ".join(conflicts[node])
        failing.append(
            FailingNode(
                node=node,
                reason="ProfileConflict",
                message=f"also selected by HypervisorProfile {others}; kvtune leaves the node "
                "untouched until exactly one profile's nodeSelector matches it",
            )
        )
    matched = len(states) + len(conflicts)
    degraded = counts["Degraded"] + len(conflicts)
    new_conditions = _conditions(profile, matched, counts, degraded)
    if kubevirt_problems:
        new_conditions.append(cond.make(KUBEVIRT_COMPATIBLE, "False", "Conflicts",
                                        "; ".join(kubevirt_problems), profile.generation))
    else:
        new_conditions.append(cond.make(KUBEVIRT_COMPATIBLE, "True", "AsExpected", "",
                                        profile.generation))
    if profile.spec.storage.block_luns is not None:
        new_conditions.append(
            _volumes_condition(orphaned_volumes, shared_luns, profile.generation))
    new_conditions.append(_vms_condition(states, profile.generation))
    if agent is not None:
        new_conditions.append(cond.make(AGENT_DAEMONSET, *agent, profile.generation))
    macvtap: list[MacvtapResource] = []
    if profile.spec.network.macvtap:
        found = offers(states)
        macvtap = found.common
        new_conditions.append(_macvtap_condition(found, profile.generation))
    return HypervisorProfileStatus(
        observed_generation=profile.generation,
        matched_nodes=matched,
        ready_nodes=counts["Ready"],
        progressing_nodes=counts["Progressing"],
        degraded_nodes=degraded,
        waiting_nodes=counts["Waiting"],
        conditions=cond.merge(previous.conditions, new_conditions, now),
        failing_nodes=failing[:MAX_FAILING],
        macvtap=macvtap,
    )


def _conditions(
    profile: Profile, matched: int, counts: Mapping[Phase, int], degraded: int
) -> list[cond.Condition]:
    gen = profile.generation
    ready = counts["Ready"]
    if matched == 0:
        ready_c = cond.make(cond.READY, "False", "NoMatchingNodes",
                            "no node matches spec.nodeSelector", gen)
    elif ready == matched:
        ready_c = cond.make(cond.READY, "True", "AllNodesReady", f"{ready}/{matched} nodes ready",
                            gen)
    else:
        ready_c = cond.make(cond.READY, "False", "NodesNotReady",
                            f"{ready}/{matched} nodes ready", gen)
    moving = counts["Progressing"] + counts["Waiting"]
    if profile.paused:
        prog_c = cond.make(cond.PROGRESSING, "False", "Paused",
                           "spec.paused or annotation kvtune.io/paused stops all changes", gen)
    elif moving:
        prog_c = cond.make(cond.PROGRESSING, "True", "Applying",
                           f"{counts['Progressing']} progressing, {counts['Waiting']} waiting for "
                           "a drain or reboot", gen)
    else:
        prog_c = cond.make(cond.PROGRESSING, "False", "Settled", "", gen)
    if degraded:
        deg_c = cond.make(cond.DEGRADED, "True", "NodesDegraded",
                          f"{degraded} node(s) degraded; see status.failingNodes", gen)
    else:
        deg_c = cond.make(cond.DEGRADED, "False", "AsExpected", "", gen)
    return [ready_c, prog_c, deg_c]


def _vms_condition(states: Mapping[str, StateView | None], generation: int) -> cond.Condition:
    """The nodes' running-VM audits in one condition: do VMs get what the profile promises?"""
    by_status: dict[str, list[str]] = {"False": [], "Unknown": []}
    for node in sorted(states):
        view = states[node]
        found = cond.find(view.state.status.conditions, VMS_COMPLIANT) if view else None
        if found is not None and found.status in by_status:
            by_status[found.status].append(f"{node} ({found.message or found.reason})")
    if by_status["False"]:
        nodes = by_status["False"]
        return cond.make(VMS_COMPLIANT, "False", "Violations",
                         f"{len(nodes)} node(s) run VMs that break the profile's promises: "
                         + "; ".join(nodes[:5]) + ("; ..." if len(nodes) > 5 else ""),
                         generation)
    if by_status["Unknown"]:
        nodes = by_status["Unknown"]
        return cond.make(VMS_COMPLIANT, "Unknown", "Unreachable",
                         "could not inspect every VM on: " + "; ".join(nodes[:5]), generation)
    return cond.make(VMS_COMPLIANT, "True", "Compliant", "", generation)


def _offers(resources: Sequence[MacvtapResource]) -> str:
    return ", ".join(f"{r.name} on {r.lower_device}" for r in resources) or "nothing"


def _macvtap_condition(found: Offers, generation: int) -> cond.Condition:
    """Whether what the nodes offer alike (status.macvtap) is all that each of them offers."""
    if found.differ:
        nodes = [f"{node} offers {_offers(offered)}" for node, offered in found.differ.items()]
        return cond.make(MACVTAP_CONFIG, "False", "NodesDiffer", (
            f"status.macvtap holds what every node offers alike ({_offers(found.common)}), but "
            f"{len(nodes)} node(s) offer more or otherwise: " + "; ".join(nodes[:MAX_FAILING])
            + ". One DP_MACVTAP_CONF cannot say that: give each variant its own macvtap-cni "
            "DaemonSet and ConfigMap from the nodes' status.macvtap, or make the nodes agree"),
            generation)
    if found.pending:
        return cond.make(MACVTAP_CONFIG, "Unknown", "NodesPending", (
            f"{len(found.pending)} node(s) have not reported yet: "
            f"{', '.join(found.pending[:MAX_FAILING])}"), generation)
    return cond.make(MACVTAP_CONFIG, "True", "Uniform", (
        f"every node offers {_offers(found.common)}: status.macvtap is the DP_MACVTAP_CONF for "
        "all of them"), generation)


def _volumes_condition(
    orphans: Sequence[str], shared: Sequence[str], generation: int
) -> cond.Condition:
    problems = []
    if shared:
        problems.append(
            f"{len(shared)} LUN(s) seen from more than one node: {', '.join(shared[:MAX_FAILING])}"
            ". A LUN several hosts see is shared storage, not a local raw disk: kvtune makes no "
            "volume for it (a volume per node would let two VMs write it at once), and a volume "
            "made before the second node saw it must be used by one VM only; unzone the LUN "
            "from the other hosts, or leave it to a shared-storage CSI driver")
    if orphans:
        problems.append(
            f"{len(orphans)} PersistentVolume(s) whose LUN is no longer reported by its node: "
            f"{', '.join(orphans[:MAX_FAILING])}. kvtune never deletes volumes; check the "
            "device, then delete the volume yourself once its data is safe (or its claim is "
            "gone)")
    if not problems:
        return cond.make(LUN_VOLUMES, "True", "AllLunsPresent", "", generation)
    reason = "LunsShared" if shared else "LunsMissing"
    return cond.make(LUN_VOLUMES, "False", reason, " ".join(problems), generation)


def status_changed(old: HypervisorProfileStatus, new: HypervisorProfileStatus) -> bool:
    """Whether writing `new` over `old` says anything new (transition times do not count)."""
    fields = set(HypervisorProfileStatus.model_fields) - {"conditions"}
    return old.model_dump(include=fields) != new.model_dump(include=fields) or not (
        cond.equivalent(old.conditions, new.conditions)
    )
