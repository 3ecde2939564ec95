"""The names of the host features a node agent probes, plans and reports conditions for.

One vocabulary, typed: a Problem (the probe's findings), a PlannedStep, an agent Finding and a
feature condition all name their feature with one of these. On the wire the fields stay plain
strings (a Literal would put an enum into the CRDs' schemas, so that an operator could not read
the status of a newer agent with one more feature); mypy holds the code to these names.
"""

from __future__ import annotations

import typing as t

#: Features with a condition of their own in a HypervisorNodeState's status, in its order.
ConditionFeature = t.Literal[
    "PLE", "NUMA", "Hugepages", "KSM", "Numad", "THP", "SRIOV", "Macvtap", "BlockDevices",
    "Kubelet",
]
#: Names only the probe's findings use: the section a problem was found in ("Report": the
#: report's own note that findings were left out).
ProbeFeature = t.Literal["CPU", "Memory", "Network", "Block", "Report"]
FeatureName = t.Literal[ConditionFeature, ProbeFeature]

CONDITION_FEATURES: tuple[ConditionFeature, ...] = t.get_args(ConditionFeature)
