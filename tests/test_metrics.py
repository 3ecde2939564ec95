"""The operator's metrics move when a reconcile pass, an API write or an admission happens, and
`kvtune operator` serves them (the agent's are in tests/agent/test_metrics.py).

The pure tests read this process's registry before and after driving a seam; the last test runs
a real `kvtune operator` against the session's API server and scrapes its port.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import typing as t
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from controller.builders import profile
from kubernetes import client
from kvtune_api.v1alpha1.profile import HypervisorProfileStatus
from kvtune_cli.localcluster import free_port
from kvtune_cli.main import serve_metrics
from kvtune_operator.common.profiles import Profile
from kvtune_operator.controller import metrics
from kvtune_operator.controller.passes import PassResult, reconcile_profile, snapshot
from kvtune_operator.controller.settings import Settings
from kvtune_operator.controller.views import Action, CordonNode, CreateState, EvictVmPods, LabelNode
from kvtune_operator.webhook.admission import ClusterView
from kvtune_operator.webhook.configuration import GeneratedTls
from kvtune_operator.webhook.kube import Kube
from kvtune_operator.webhook.server import AdmissionServer
from kvtune_operator.webhook.settings import WebhookSettings
from prometheus_client import REGISTRY
from support.cluster import ClusterAccess, wait_for
from support.metrics import scraped, value
from webhook import make_profile, make_vmi

PASSES = "kvtune_operator_reconcile_passes_total"
WRITES = "kvtune_operator_api_writes_total"
NODES = "kvtune_operator_profile_nodes"
ADMISSIONS = "kvtune_webhook_admissions_total"


class RecordingKube:
    """The operator's API module as a reconcile pass uses it; `fail` makes every write raise."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.done: list[Action] = []

    def execute(self, action: Action) -> None:
        if self.fail:
            raise RuntimeError("the apiserver said no")
        self.done.append(action)

    def patch_profile_status(self, name: str, status: dict[str, t.Any]) -> None:
        self.done.append(t.cast(Action, ("status", name)))

    def count_vm_pods(self, node: str) -> int:
        return 0


def run_pass(name: str, kube: RecordingKube) -> PassResult:
    """One counted pass of profile `name`, which selects one new node (pool=`name`)."""
    p = profile(name)
    snap = snapshot({name: p}, {f"{name}-n1": {"pool": name}}, {}, {})
    work = reconcile_profile(p, snap, HypervisorProfileStatus(), t.cast(t.Any, kube), Settings())
    return asyncio.run(metrics.reconcile_pass(name, work))


def unique(prefix: str) -> str:
    # The registry lives as long as the test process: each test counts its own profile.
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def test_a_pass_that_writes_is_counted_timed_and_sets_the_phase_gauges() -> None:
    name = unique("writes")
    timed = value("kvtune_operator_reconcile_duration_seconds_count")
    labels, states = value(WRITES, action="label_node", result="ok"), value(
        WRITES, action="create_state", result="ok")
    statuses = value(WRITES, action="patch_profile_status", result="ok")
    run_pass(name, RecordingKube())
    assert value(PASSES, profile=name, result="wrote") == 1
    assert value("kvtune_operator_reconcile_duration_seconds_count") == timed + 1
    assert value(WRITES, action="label_node", result="ok") == labels + 1
    assert value(WRITES, action="create_state", result="ok") == states + 1
    assert value(WRITES, action="patch_profile_status", result="ok") == statuses + 1
    # Its one node has no state yet: Progressing.
    assert value(NODES, profile=name, phase="Progressing") == 1
    assert value(NODES, profile=name, phase="Ready") == 0


def test_a_pass_whose_write_fails_counts_the_failed_write_and_an_erroring_pass() -> None:
    name = unique("fails")
    before = value(WRITES, action="label_node", result="error")
    with pytest.raises(RuntimeError):
        run_pass(name, RecordingKube(fail=True))
    assert value(PASSES, profile=name, result="error") == 1
    assert value(WRITES, action="label_node", result="error") == before + 1


def test_a_pass_with_nothing_to_do_is_counted_idle() -> None:
    name = unique("idle")
    done = PassResult(actions=[], status=None, transitions=[])

    async def nothing() -> PassResult:
        return done

    assert asyncio.run(metrics.reconcile_pass(name, nothing())) is done
    assert value(PASSES, profile=name, result="idle") == 1


def test_a_deleted_profile_leaves_no_series_behind() -> None:
    name = unique("gone")
    run_pass(name, RecordingKube())
    metrics.forget_profile(name)
    left = [s for m in REGISTRY.collect() for s in m.samples if s.labels.get("profile") == name]
    assert left == []


@pytest.mark.parametrize(("action", "name"), [
    (CordonNode("n", True), "cordon"),
    (CordonNode("n", False), "uncordon"),
    (EvictVmPods("n"), "evict_vm_pods"),
    (LabelNode("n", None), "label_node"),
    (CreateState({"metadata": {"name": "n"}}), "create_state"),
])
def test_an_api_write_is_labelled_by_its_action(action: Action, name: str) -> None:
    assert metrics.action_name(action) == name


# --- Admissions, through the webhook server as a request reaches it. ---

NAMESPACE_LABELS = {"kubernetes.io/metadata.name": "vms"}


def server(*profiles: Profile) -> AdmissionServer:
    """The webhook's server deciding from `profiles`, its namespace known; nothing listens."""
    view = ClusterView(profiles={p.name: p for p in profiles}, node_labels={}, node_states={},
                       allocatable={})
    return AdmissionServer(WebhookSettings(), GeneratedTls(["127.0.0.1"]),
                           t.cast(Kube, None), lambda: view, lambda _: NAMESPACE_LABELS)


def asked(vmi: dict[str, t.Any]) -> dict[str, t.Any]:
    return {"uid": "u", "operation": "CREATE", "namespace": "vms", "object": vmi}


def mutate(vmi: dict[str, t.Any], *profiles: Profile) -> None:
    asyncio.run(server(*profiles).answer("mutate", asked(vmi)))


def validate(vmi: dict[str, t.Any], *profiles: Profile) -> None:
    asyncio.run(server(*profiles).answer("validate", asked(vmi)))


VMI = make_vmi({"cpu": {"cores": 2}, "memory": {"guest": "2Gi"}})


@pytest.mark.parametrize(("answer", "profiles", "vmi", "result"), [
    (mutate, [make_profile("a")], VMI, "patched"),
    (mutate, [], VMI, "skipped"),
    (mutate, [make_profile("a"), make_profile("b")], VMI, "denied"),
    (validate, [make_profile("a")], VMI, "allowed"),
    (validate, [make_profile("a", vmi={"selector": {"matchLabels": {"app": "db"}}})], VMI,
     "skipped"),
    (validate, [make_profile("a")], make_vmi({"cpu": {"dedicatedCpuPlacement": False}}),
     "denied"),
])
def test_an_admission_is_counted_by_its_result_and_timed(
    answer: t.Callable[..., None], profiles: list[t.Any], vmi: dict[str, t.Any], result: str
) -> None:
    operation = "mutate" if answer is mutate else "validate"
    before = value(ADMISSIONS, operation=operation, result=result)
    timed = value("kvtune_webhook_admission_duration_seconds_count", operation=operation)
    answer(vmi, *profiles)
    assert value(ADMISSIONS, operation=operation, result=result) == before + 1
    assert value("kvtune_webhook_admission_duration_seconds_count",
                 operation=operation) == timed + 1


# --- Serving. ---

def test_a_taken_metrics_port_stops_the_command_with_what_to_do() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = argparse.Namespace(metrics_port=port, metrics_address="127.0.0.1")
        with pytest.raises(SystemExit, match="choose another --metrics-port, or 0"):
            serve_metrics(args)


@pytest.fixture
def operator_process(cluster: ClusterAccess, kvtune_crds: list[str],
                     tmp_path: Path) -> Iterator[int]:
    """`kvtune operator` (standalone) serving its metrics; yields the port."""
    port = free_port()
    with (tmp_path / "operator.log").open("wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "kvtune_cli.main", "operator", "--standalone",
             "--metrics-address", "127.0.0.1", "--metrics-port", str(port)],
            env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
            stdout=log, stderr=subprocess.STDOUT,
        )
    yield port
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)


def test_the_operator_serves_its_passes_and_forgets_a_deleted_profile(
    operator_process: int, api_client: client.ApiClient
) -> None:
    port = operator_process
    custom = client.CustomObjectsApi(api_client)
    name = unique("metrics")
    custom.create_cluster_custom_object("kvtune.io", "v1alpha1", "hypervisorprofiles", {
        "apiVersion": "kvtune.io/v1alpha1", "kind": "HypervisorProfile",
        "metadata": {"name": name},
        "spec": {"nodeSelector": {"matchLabels": {"pool": name}}}})
    # No node matches: the first pass writes the status, and the gauges read 0.
    wait_for(lambda: (scraped(port, PASSES, profile=name, result="wrote") or 0) >= 1,
             "a counted pass of the new profile", timeout=60)
    assert scraped(port, NODES, profile=name, phase="Ready") == 0
    custom.delete_cluster_custom_object("kvtune.io", "v1alpha1", "hypervisorprofiles", name)
    wait_for(lambda: scraped(port, NODES, profile=name, phase="Ready") is None,
             "the deleted profile's series dropped", timeout=60)


@pytest.mark.parametrize(("process", "own", "other"), [
    ("kvtune_operator.controller.handlers", "kvtune_operator_", "kvtune_webhook_"),
    ("kvtune_operator.webhook.handlers", "kvtune_webhook_", "kvtune_operator_"),
])
def test_each_process_serves_only_its_own_series(process: str, own: str, other: str) -> None:
    """What `kvtune operator` and `kvtune webhook` load before serving: each registers its own
    metrics and none of the other's (docs/metrics.md), since neither imports the other."""
    listed = subprocess.run(
        [sys.executable, "-c", f"import {process}\nfrom prometheus_client import REGISTRY\n"
         "print('\\n'.join(m.name for m in REGISTRY.collect()))"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.split()
    assert any(name.startswith(own) for name in listed), listed
    assert not [name for name in listed if name.startswith(other)]
