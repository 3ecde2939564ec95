"""The suggested profile planned on every given host by the agent's own planner, and whatever
the planner would refuse there taken out again.

Why: `suggest` chooses from facts, but the judgement of whether a host can meet a setting lives
in the agent (a NIC the host's own traffic uses, a KSM that KubeVirt's handler manages, a pool
beyond the budget...). Repeating those rules here would make a second copy that drifts; asking
the planner itself, through the same rendering the operator does, means a suggested profile is
one the agent accepts on each of those hosts, or the choice is withdrawn with the planner's own
words as the reason.
"""

from __future__ import annotations

import typing as t
from collections.abc import Callable, Sequence

from kvtune_agent.features.base import Finding, NodeMeta
from kvtune_agent.wiring import plan
from kvtune_api.v1alpha1.nodestate import HypervisorNodeStateSpec
from kvtune_operator.common.profiles import Profile
from kvtune_operator.controller.render import render_spec

from .hosts import ProbedHost
from .suggestion import Draft, Path, SuggestError

Refusal = tuple[ProbedHost, Finding]
#: The node name a host without one is planned as (probe files do not name their node).
ANY_NODE = "probed-host"


def refusals(hosts: Sequence[ProbedHost], manifest: dict[str, t.Any]) -> list[Refusal]:
    """The Error findings (a Degraded node) the agent's planner gives on each host under the
    profile `manifest`, in Audit as in Enforce: the planner does not look at the mode."""
    profile = Profile.from_body(manifest)
    if profile.problem:
        raise SuggestError(f"the suggested profile is not valid: {profile.problem} (a kvtune "
                           "bug: please report it with the probes used)")
    found = []
    for host in hosts:
        spec = HypervisorNodeStateSpec.model_validate(
            render_spec(profile, host.node or ANY_NODE))
        planned = plan(spec, host.report, NodeMeta(host.labels, host.annotations))
        found += [(host, f) for f in planned.findings if f.severity == "Error"]
    return found


def _because(found: list[Refusal]) -> str:
    host, finding = found[0]
    more = f" (and on {len(found) - 1} more)" if len(found) > 1 else ""
    return f"the agent would refuse it on {host.source}{more}: {finding.message}"


def withdraw_refused_rules(hosts: Sequence[ProbedHost], draft: Draft,
                           manifest: dict[str, t.Any]) -> None:
    """Try each NIC and LUN rule alone on every host; take out those the planner refuses."""
    base = {key: manifest["spec"][key] for key in ("nodeSelector", "mode")}
    quiet = {"memory": {"ksm": "Unmanaged"}, "numa": {"numad": "Unmanaged"},
             "cpu": {"ple": "Ignored"}}
    for section, feature in (("sriov", "SRIOV"), ("macvtap", "Macvtap")):
        path: Path = ("network", section)
        rules = draft.get(path) or []
        kept = []
        for rule in rules:
            alone = {**manifest, "spec": {**base, **quiet, "network": {section: [rule]}}}
            found = [r for r in refusals(hosts, alone) if r[1].feature == feature]
            if found:
                name = rule.get("name") or rule["pfSelector"]["names"][0]
                draft.why[path] = [line for line in draft.why.get(path, [])
                                   if not line.startswith(f"{name}: ")]
                draft.leave_out(("network",), f"{section} on {name}", _because(found))
            else:
                kept.append(rule)
        if kept:
            draft.get(("network",))[section] = kept
        elif rules:
            draft.drop(path)


def _set(path: Path, value: t.Any, what: str) -> Callable[[Draft, str], None]:
    def withdraw(draft: Draft, because: str) -> None:
        draft.drop(path)
        draft.choose(path, value, f"{what}: {because}")
    return withdraw


def _drop(*paths: Path) -> Callable[[Draft, str], None]:
    def withdraw(draft: Draft, because: str) -> None:
        present = [p for p in paths if draft.get(p) is not None]
        for path in present:
            draft.drop(path)
            draft.leave_out(path[:-1], str(path[-1]), because)
    return withdraw


def _no_dedicated_cpus(draft: Draft, because: str) -> None:
    _drop(("numa", "topologyManagerPolicy"), ("vmi", "numaPassthrough"),
          ("cpu", "partition"))(draft, because)
    for key in ("dedicatedCpus", "isolateEmulatorThread"):
        if draft.get(("vmi", key)):
            _set(("vmi", key), False, "withdrawn")(draft, because)


#: How a choice is taken back when the planner refuses its feature on some host.
WITHDRAW: dict[str, Callable[[Draft, str], None]] = {
    "Hugepages": _drop(("memory", "hugepages"), ("vmi", "hugepageSize"),
                       ("vmi", "numaPassthrough")),
    "KSM": _set(("memory", "ksm"), "Unmanaged", "KSM left as each host has it"),
    "Numad": _set(("numa", "numad"), "Unmanaged", "numad left as each host has it"),
    "THP": _drop(("memory", "transparentHugepages")),
    "SRIOV": _drop(("network", "sriov")),
    "Macvtap": _drop(("network", "macvtap")),
    "BlockDevices": _drop(("storage", "blockLuns")),
    "Kubelet": _no_dedicated_cpus,
    "CPUIsolation": _drop(("cpu", "partition")),
    "PLE": _set(("cpu", "ple"), "Preferred", "a host without PLE is a warning only"),
}


def withdraw_refused(hosts: Sequence[ProbedHost], draft: Draft,
                     manifest: Callable[[], dict[str, t.Any]]) -> None:
    """Plan the whole profile on every host and take back each feature the planner refuses,
    until none is refused; raises SuggestError for a refusal nothing here can take back."""
    withdrawn: set[str] = set()
    while found := refusals(hosts, manifest()):
        by_feature: dict[str, list[Refusal]] = {}
        for refusal in found:
            by_feature.setdefault(refusal[1].feature, []).append(refusal)
        stuck = [f for f in by_feature if f not in WITHDRAW or f in withdrawn]
        if stuck:
            raise SuggestError(
                "no profile these hosts all satisfy: " + _because(by_feature[stuck[0]]))
        for feature, refused in by_feature.items():
            WITHDRAW[feature](draft, _because(refused))
            withdrawn.add(feature)
