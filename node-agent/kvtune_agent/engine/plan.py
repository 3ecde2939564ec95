"""The planner: what must change on this host to meet its HypervisorNodeState spec, and why.

A pure function of the spec, the probe report, the node's labels and annotations, and the few
host facts the probe does not carry (each feature's `read`): the same inputs give the same
plan, and a host that already matches gives none, so the agent writes nothing at steady state.
Every step declares its disruption class, Live, NeedsDrain (the VMs using the resource must
leave first) or NeedsReboot, because the operator, not the agent, decides when a node may be
disrupted.

What no step can fix (a conflict with KubeVirt, hardware without a feature, a kubelet configured
otherwise, a spec that does not fit this host) is a `Finding`: it shows in the feature's condition
with what to do, instead of a write retried forever.
"""

from __future__ import annotations

import typing as t
from collections.abc import Mapping, Sequence

from kvtune_api.v1alpha1.host import HostReport
from kvtune_api.v1alpha1.nodestate import HypervisorNodeStateSpec

from ..features.base import Draft, Feature, NodeMeta, Plan, PlanInputs
from ..host.hostfs import HostFS

AnyFeature = Feature[t.Any, t.Any]
#: Each feature's host facts (its `read`), by feature.
Facts = Mapping[AnyFeature, t.Any]


def read_facts(features: Sequence[AnyFeature], fs: HostFS, host: HostReport) -> Facts:
    """The host facts each feature's planner needs beyond the probe report."""
    return {feature: feature.read(fs, host) for feature in features}


def in_write_order(features: Sequence[AnyFeature]) -> list[AnyFeature]:
    """The features by write_order, then in registry order."""
    return sorted(features, key=lambda feature: feature.write_order)


def plan(
    features: Sequence[AnyFeature],
    spec: HypervisorNodeStateSpec,
    host: HostReport,
    node: NodeMeta | None = None,
    facts: Facts | None = None,
) -> Plan:
    """The changes that bring `host` to `spec`, with findings; empty when the host matches.

    Each feature plans in write order into one draft, so its steps are applied (and its
    findings told) in that order."""
    inputs = PlanInputs(spec, host, node or NodeMeta())
    out = Draft()
    for feature in in_write_order(features):
        feature.plan(inputs, (facts or {}).get(feature), out)
    return out.done()
