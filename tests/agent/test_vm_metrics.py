"""The measured interference reaches Prometheus: per-VM counters grow by each window's
increments, gauges take the latest value and leave an unknown one out, a stopped VM's series go,
and the node's status is not rewritten when only the measured figures moved."""

from __future__ import annotations

import datetime
import json
import re
from pathlib import Path

from kvtune_agent.agent import significant
from kvtune_agent.audit import interference, vm_metrics
from kvtune_agent.audit.evidence import Memory, Thread, VmFigures, VmReading
from kvtune_api.v1alpha1.nodestate import HypervisorNodeStateStatus
from kvtune_api.v1alpha1.profile import AuditSettings
from prometheus_client import REGISTRY

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def sample(metric: str, **labels: str) -> float | None:
    """A series of this process's registry; None when it does not exist."""
    return REGISTRY.get_sample_value(metric, labels)


def _vm(name: str, wait: float, *, remote: float | None = 25.0) -> VmFigures:
    reading = VmReading(namespace="metrics", name=name, pid=1, start=1,
                        threads=(Thread(0, 2, 0, 0, 0, 0, 1),), dedicated=frozenset({1}),
                        vcpu_nodes=frozenset({0}), memory=Memory({0: 1}, 0, 0.0, swap_kib=4))
    return VmFigures(reading=reading, window=10.0, at=10.0, wait_seconds=wait, run_seconds=1.0,
                     involuntary=3, irqs=50, remote_memory_percent=remote,
                     cpu_wait_percent=wait * 10, worst_vcpu=0, worst_vcpu_wait_percent=wait * 10)


def test_per_vm_counters_grow_by_each_window_and_a_stopped_vms_series_go() -> None:
    vm_metrics.set_interference([_vm("a", 0.5), _vm("b", 0.0, remote=None)], {"ThreadExited": 1})
    vm_metrics.set_interference([_vm("a", 0.25)], {})

    labels = {"namespace": "metrics", "name": "a"}
    assert sample("kvtune_agent_vm_vcpu_wait_seconds_total", **labels) == 0.75
    assert sample("kvtune_agent_vm_dedicated_cpu_interrupts_total", **labels) == 100
    assert sample("kvtune_agent_vm_memory_remote_ratio", **labels) == 0.25
    assert sample("kvtune_agent_vm_swap_bytes", **labels) == 4096
    assert sample("kvtune_agent_vm_ksm_merging_pages", **labels) is None  # unknown: no series
    assert sample("kvtune_agent_vm_vcpu_wait_seconds_total", namespace="metrics",
                 name="b") is None
    assert (sample("kvtune_agent_vm_evidence_skipped_total", reason="ThreadExited") or 0) >= 1


def test_a_status_whose_measured_figures_alone_changed_is_not_rewritten() -> None:
    limits = AuditSettings()
    before = interference.with_interference(
        HypervisorNodeStateStatus(), interference.summarise([_vm("a", 0.1)], {}, limits),
        HypervisorNodeStateStatus(), 1, NOW)
    after = interference.with_interference(
        before, interference.summarise([_vm("a", 0.2)], {"VmStopped": 1}, limits), before, 1,
        NOW + datetime.timedelta(seconds=30))
    over = interference.with_interference(
        before, interference.summarise([_vm("a", 9.0)], {}, limits), before, 1, NOW)

    assert after.interference != before.interference
    assert significant(after) == significant(before)
    assert significant(over) != significant(before)  # a VM over its threshold is news


ROOT = Path(__file__).resolve().parents[2]


def test_every_vm_metric_the_docs_and_dashboard_use_is_one_the_agent_serves() -> None:
    served = {metric.name for metric in REGISTRY.collect()}
    served |= {f"{name}_total" for name in served}
    dashboard = json.loads((ROOT / "docs/dashboards/interference.json").read_text())
    exprs = " ".join(target["expr"] for panel in dashboard["panels"]
                     for target in panel["targets"])
    docs = (ROOT / "docs/interference.md").read_text() + (ROOT / "docs/metrics.md").read_text()

    used = set(re.findall(r"kvtune_agent_vm_[a-z_]+", exprs + docs)) - {"kvtune_agent_vm_"}

    assert used, "no metric found: the pattern no longer matches"
    assert not used - served, f"named but not served: {sorted(used - served)}"
