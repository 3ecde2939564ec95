"""The host features, one module or package each, over the Feature protocol (base.py).

FEATURES is the registry the agent hands the engine: one line per feature. Its order is the
order of the probe's sections and problems, of the text report and of the feature conditions;
steps are applied by each feature's write_order, then in this order. See docs/architecture.md.
"""

from __future__ import annotations

import typing as t

from . import block, cpu, ksm, kubelet, memory, network, numa, numad, sriov
from .base import Feature

FEATURES: tuple[Feature[t.Any, t.Any], ...] = (
    cpu.FEATURE,
    numa.FEATURE,
    memory.HUGEPAGES,
    ksm.FEATURE,
    numad.FEATURE,
    memory.THP,
    sriov.FEATURE,
    network.FEATURE,
    block.FEATURE,
    kubelet.FEATURE,
)
