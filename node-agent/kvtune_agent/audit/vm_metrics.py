"""The per-VM Prometheus series moved from each cycle's measured interference.

The metric objects are in `kvtune_agent.metrics` with every other metric of the agent (their
names are the contract with dashboards, docs/interference.md); this function is here, beside the
figures it reads, because the metrics module sits below the audit (the engine imports it).
"""

from __future__ import annotations

import typing as t
from collections.abc import Mapping, Sequence
from contextlib import suppress

from .. import metrics
from .evidence import VmFigures

#: The counter series of each VM shown, by (namespace, name): looked up once per VM.
_vm_series: dict[tuple[str, str], tuple[t.Any, ...]] = {}


def set_interference(figures: Sequence[VmFigures], skipped: Mapping[str, int]) -> None:
    """The per-VM series from one cycle's figures: counters grow by the window's increments,
    gauges take the latest value (an unknown one is left out, never set to 0)."""
    global _vm_series
    ordered = sorted(figures, key=lambda f: (f.reading.namespace, f.reading.name))
    shown = ordered[:metrics.MAX_VM_SERIES]
    now = {}
    for vm in shown:
        # A host libvirt's domain names are not Kubernetes names: cut to what one can be.
        labels = (vm.reading.namespace[:63], vm.reading.name[:253])
        series = _vm_series.get(labels) or tuple(
            metric.labels(*labels) for metric in metrics.VM_COUNTERS)
        now[labels] = series
        increments = (vm.wait_seconds, vm.run_seconds, vm.involuntary, vm.migrations, vm.irqs,
                      vm.foreign_seconds)
        for counter, amount in zip(series, increments, strict=False):
            counter.inc(amount)
        values = (len(vm.reading.threads), len(vm.reading.dedicated),
                  None if vm.remote_memory_percent is None else vm.remote_memory_percent / 100,
                  None if vm.hugepage_memory_percent is None else vm.hugepage_memory_percent / 100,
                  None if vm.reading.swap_kib is None else vm.reading.swap_kib * 1024,
                  vm.reading.ksm_pages)
        for gauge, value in zip(metrics.VM_GAUGES, values, strict=True):
            if value is not None:  # an unknown value has no series, rather than a 0
                gauge.labels(*labels).set(value)
    for labels in _vm_series.keys() - now.keys():
        for metric in (*metrics.VM_COUNTERS, *metrics.VM_GAUGES):
            with suppress(KeyError):
                metric.remove(*labels)
    _vm_series = now
    for reason, count in skipped.items():
        metrics.EVIDENCE_SKIPPED.labels(reason).inc(count)
