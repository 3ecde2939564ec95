"""The SR-IOV Network Operator's node policies, as far as kvtune must know them: pure reading.

Where that operator is installed, its SriovNetworkNodePolicies (sriovnetwork.openshift.io/v1)
say which PFs of which nodes it manages: VF count, driver and device plugin pool. Two
controllers writing one sriov_numvfs undo each other, so kvtune leaves those PFs alone. The
operator cannot see a node's NICs, so it copies each policy that selects a node (its
nodeSelector, a plain label map, matches the node's labels) into that node's state spec
(spec.sriovOperatorPolicies); the agent matches the policies' nicSelectors against its NICs,
as the SR-IOV Network Operator's daemon does, and reports the PFs it leaves alone.
"""

from __future__ import annotations

import typing as t
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from kvtune_api.v1alpha1.nodestate import MAX_SRIOV_POLICIES, SriovOperatorPolicy

GROUP, VERSION, PLURAL = "sriovnetwork.openshift.io", "v1", "sriovnetworknodepolicies"
POLICIES = (GROUP, VERSION, PLURAL)


@dataclass(frozen=True)
class PolicyView:
    """One SriovNetworkNodePolicy: where it applies, and what it selects there."""

    node_selector: Mapping[str, str]
    policy: SriovOperatorPolicy

    @classmethod
    def from_body(cls, body: Mapping[str, t.Any]) -> PolicyView:
        meta, spec = body.get("metadata") or {}, body.get("spec") or {}
        nic = spec.get("nicSelector") or {}
        return cls(
            node_selector={str(k): str(v) for k, v in (spec.get("nodeSelector") or {}).items()},
            policy=SriovOperatorPolicy(
                name=f"{meta.get('namespace', '')}/{meta.get('name', '')}",
                # "ens1f0#0-3" selects VFs 0 to 3 of ens1f0: the PF is ens1f0 all the same.
                pf_names=[str(n).split("#", 1)[0] for n in nic.get("pfNames") or []],
                root_devices=[str(d) for d in nic.get("rootDevices") or []],
                vendor=_lower(nic.get("vendor")),
                device_id=_lower(nic.get("deviceID")),
            ),
        )


def _lower(value: t.Any) -> str | None:
    return str(value).lower() if value else None


def selecting(
    labels: Mapping[str, str], policies: Iterable[PolicyView]
) -> list[SriovOperatorPolicy]:
    """The policies whose nodeSelector selects a node with `labels`, by name.

    An empty nodeSelector selects every node (the SR-IOV Network Operator takes it so). Beyond
    MAX_SRIOV_POLICIES the rest are dropped: the cluster would have more policies for one node
    than it has NICs.
    """
    found = [view.policy for view in policies
             if all(labels.get(key) == value for key, value in view.node_selector.items())]
    return sorted(found, key=lambda policy: policy.name)[:MAX_SRIOV_POLICIES]
