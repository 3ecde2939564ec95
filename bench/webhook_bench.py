"""What the VMI admission webhook costs a VMI creation, against a real kube-apiserver.

Every VMI creation in a namespace the webhook covers waits for two calls to it (mutating, then
validating), so its latency is added to every VM start, and its throughput bounds how fast a
burst of VMs (a VirtualMachinePool scaling up, a node's VMs re-created elsewhere) is admitted.
This starts a local control plane, installs KubeVirt's VMI CRD and kvtune's CRDs, and creates
VMIs from many threads at once, in four set-ups that differ only in who answers the webhook
configurations (the same configurations, written by the same code):

- none: no webhook configuration at all;
- no-op: a minimal aiohttp HTTPS server in its own process that allows everything;
- no-op patching: the same server, answering every mutation with the very patch kvtune makes
  for these VMIs (computed once, beforehand). The apiserver then applies, validates and stores
  the shaped VMI as with kvtune, so kvtune's figures over these are the webhook's own cost, and
  these over the no-op are the cost of the mutation itself;
- kvtune: `kvtune webhook` in its own process, with a profile that selects every VMI and ready
  nodes of that profile for its capacity check.

The set-ups take turns, round by round and in a rotating order (all three servers run
throughout; each turn points the configurations at one of them), so that what slows the
apiserver down over a run (the thousands of VMIs it stores) weighs on all of them alike.

It prints end-to-end latency as the client sees it, for creations one at a time (the cost at
rest) and in bursts (p50/p99/max and throughput), the apiserver's own measure of each webhook
call during the bursts (`apiserver_admission_webhook_admission_duration_seconds`, mean and a p99
bound from its histogram), kvtune's own measure of its decisions, and what the kvtune webhook
adds over each of the others. The client, the control plane and the webhooks share this
machine's CPUs, so bursts measure the machine as much as the webhook: `--favour-webhooks` lets
the webhook servers run first when they have work, as a pod's CPU request does in a cluster,
and `--pin` gives them a CPU of their own. Figures only, no assertions.

Run: .venv/bin/python bench/webhook_bench.py [--vmis 200] [--rounds 3] [--nodes 50]
     [--sequential 100] [--pin] [--favour-webhooks]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import json
import os
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kvtune_api.labels import READY_LABEL
from kvtune_cli.localcluster import LocalCluster, control_plane_bin_dir, free_port, stop_process
from kvtune_operator.common.profiles import PROFILE_LABEL, Profile
from kvtune_operator.webhook import configuration as webhook
from kvtune_operator.webhook.kube import Kube
from kvtune_operator.webhook.settings import WebhookSettings
from kvtune_operator.webhook.vmi import mutate_vmi
from prometheus_client.parser import text_string_to_metric_families

# The CRD helpers and builders are the tests' own (tests/support, tests/webhook).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support import kubevirt
from support.cluster import apply_crds, wait_for
from webhook import make_profile, make_vmi

REPO_ROOT = Path(__file__).resolve().parents[1]

METRIC = "apiserver_admission_webhook_admission_duration_seconds"
#: The webhook's own measure: one decision, from the decoded request to the answer.
OWN_METRIC = "kvtune_webhook_admission_duration_seconds"
SELECTED = {"kvtune-bench": "selected"}
STARTUP_TIMEOUT = 120.0
SETUPS = ("none", "no-op", "no-op patching", "kvtune")
#: The warning a no-op server adds to a dry run, naming itself.
ANSWERED_BY = "kvtune-bench answered by: "


# --- the no-op webhooks, run as `webhook_bench.py --noop-server NAME PORT CERT_DIR [PATCH]` ---

def _serve_noop(name: str, port: int, cert_dir: Path, patch_file: Path | None) -> None:
    from aiohttp import web

    patch = base64.b64encode(patch_file.read_bytes()).decode() if patch_file else None

    async def allow(request: web.Request) -> web.Response:
        review = await request.json()
        response: dict[str, Any] = {"uid": review["request"]["uid"], "allowed": True}
        if patch and request.path.endswith(webhook.MUTATE_ID):
            response.update(patchType="JSONPatch", patch=patch)
        if review["request"].get("dryRun"):  # the bench's probe of who answers
            response["warnings"] = [f"{ANSWERED_BY}{name}"]
        return web.json_response({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                                  "response": response})

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_dir / "tls.crt", cert_dir / "tls.key")
    app = web.Application()
    app.add_routes([web.post("/{id}", allow)])
    web.run_app(app, host="127.0.0.1", port=port, ssl_context=context, print=None)


# --- the cluster side ---

@dataclass
class Bench:
    cluster: LocalCluster
    api: client.ApiClient
    workdir: Path

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    def prepare(self, nodes: int) -> str:
        """CRDs, a selected namespace, a profile for it and `nodes` ready nodes; the namespace."""
        apply_crds(self.api, kubevirt.kubevirt_crds())
        apply_crds(self.api, [yaml.safe_load(p.read_text())
                              for p in sorted((REPO_ROOT / "crds").glob("*.yaml"))])
        core = client.CoreV1Api(self.api)
        core.create_namespace({"metadata": {"name": "bench", "labels": SELECTED}})
        for i in range(nodes):
            name = f"bench-{i:03d}"
            # As the operator and the agents label them, so that the capacity check counts them.
            core.create_node({"metadata": {"name": name, "labels": {
                "pool": "bench", PROFILE_LABEL: "bench", READY_LABEL: "true"}}})
            core.patch_node_status(name, {"status": {
                "capacity": {"cpu": "64", "memory": "256Gi", "pods": "110"},
                "allocatable": {"cpu": "62", "memory": "250Gi", "pods": "110"}}})
        self.custom.create_cluster_custom_object("kvtune.io", "v1alpha1", "hypervisorprofiles", {
            "apiVersion": "kvtune.io/v1alpha1", "kind": "HypervisorProfile",
            "metadata": {"name": "bench"},
            "spec": {"mode": "Enforce", "nodeSelector": {"matchLabels": {"pool": "bench"}},
                     "vmi": {"namespaceSelector": {"matchLabels": SELECTED}}}})
        return "bench"

    def kvtune_patch(self, namespace: str) -> list[dict[str, Any]]:
        """The patch kvtune's mutation makes for the VMIs `create` sends, from the stored
        (defaulted) profile and a VMI as the apiserver hands it to a webhook."""
        stored = self.custom.get_cluster_custom_object("kvtune.io", "v1alpha1",
                                                       "hypervisorprofiles", "bench")
        vmi = self.create(namespace, dry_run=True)  # no webhook configured yet: as sent
        result = mutate_vmi(Profile.from_body(stored), vmi, namespace_labels={
            **SELECTED, "kubernetes.io/metadata.name": namespace})
        assert result.skipped is None, result.skipped
        return result.patch

    def create(self, namespace: str, *, dry_run: bool = False) -> dict[str, Any]:
        vmi = make_vmi({"cpu": {"cores": 2}, "memory": {"guest": "4Gi"}})
        vmi["metadata"].update(name=f"vm-{uuid.uuid4().hex[:10]}", namespace=namespace)
        created: dict[str, Any] = self.custom.create_namespaced_custom_object(
            kubevirt.GROUP, kubevirt.VERSION, namespace, "virtualmachineinstances", vmi,
            dry_run="All" if dry_run else None)
        return created

    def create_raw(self, namespace: str, *, dry_run: bool = False) -> Any:
        """`create`, answered as the raw HTTP response (its Warning headers included)."""
        vmi = make_vmi({"cpu": {"cores": 2}, "memory": {"guest": "4Gi"}})
        vmi["metadata"].update(name=f"vm-{uuid.uuid4().hex[:10]}", namespace=namespace)
        return self.custom.create_namespaced_custom_object(
            kubevirt.GROUP, kubevirt.VERSION, namespace, "virtualmachineinstances", vmi,
            dry_run="All" if dry_run else None, _preload_content=False)

    def metric(self) -> dict[tuple[str, ...], dict[str, float]]:
        """The apiserver's webhook-duration histogram by (webhook name, type)."""
        context = ssl.create_default_context(cafile=str(self.cluster.ca_file))
        request = urllib.request.Request(f"{self.cluster.server}/metrics",
                                         headers={"Authorization": f"Bearer {self.cluster.token}"})
        return _histograms(request, METRIC, ("name", "type"), context)


def _histograms(
    request: urllib.request.Request | str, metric: str, by: tuple[str, ...],
    context: ssl.SSLContext | None = None,
) -> dict[tuple[str, ...], dict[str, float]]:
    """A Prometheus histogram scraped from `request`, by the values of the labels `by`: bucket
    bounds -> counts, plus "sum" and "count"."""
    with urllib.request.urlopen(request, context=context) as response:
        text = response.read().decode()
    found: dict[tuple[str, ...], dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != metric:
            continue
        for sample in family.samples:
            key = tuple(sample.labels[label] for label in by)
            entry = found.setdefault(key, {})
            suffix = sample.name.removeprefix(metric)
            label = sample.labels.get("le", "") if suffix == "_bucket" else suffix[1:]
            entry[label] = entry.get(label, 0.0) + sample.value
    return found


@contextlib.contextmanager
def _process(command: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                preexec_fn=_webhook_cpus)
        try:
            yield proc
        finally:
            stop_process(proc, timeout=30)


@dataclass(frozen=True)
class Answerer:
    """One server the configurations can point at."""

    who: str
    port: int
    ca: bytes
    metrics_url: str | None = None  # kvtune's own /metrics


@contextlib.contextmanager
def _answerers(bench: Bench, namespace: str) -> Iterator[dict[str, Answerer]]:
    """The three servers, running for the `with` block; no configurations point at them yet."""
    with contextlib.ExitStack() as running:
        answerers: dict[str, Answerer] = {}
        for who in SETUPS[1:]:
            port = free_port()
            cert_dir = bench.workdir / f"tls-{who.replace(' ', '-')}"
            cert_dir.mkdir()
            material = webhook.GeneratedTls(["127.0.0.1"]).load()
            for name, pem in zip(webhook.TLS_FILES, (material.cert_pem, material.key_pem,
                                                      material.ca_pem), strict=True):
                (cert_dir / name).write_bytes(pem)
            metrics_url = None
            if who == "kvtune":
                metrics_port = free_port()
                metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
                command = [sys.executable, "-m", "kvtune_cli.main", "webhook",
                           "--kubeconfig", str(bench.cluster.kubeconfig), "--port", str(port),
                           "--cert-dir", str(cert_dir), "--failure-policy", "Fail",
                           "--metrics-address", "127.0.0.1", "--metrics-port", str(metrics_port)]
            else:
                command = [sys.executable, __file__, "--noop-server", who, str(port),
                           str(cert_dir)]
                if who == "no-op patching":
                    patch_file = bench.workdir / "kvtune-patch.json"
                    patch_file.write_text(json.dumps(bench.kvtune_patch(namespace)))
                    command.append(str(patch_file))
            log = bench.workdir / f"{who.replace(' ', '-')}.log"
            proc = running.enter_context(_process(command, log))
            wait_for(functools.partial(_listening, port, proc, log),
                     f"the {who} webhook listening", STARTUP_TIMEOUT)
            answerers[who] = Answerer(who, port, material.ca_pem, metrics_url)
        try:
            yield answerers
        finally:
            _unpublish(bench)


def _listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> bool:
    if proc.poll() is not None:
        raise RuntimeError(f"a webhook exited; see {log}:\n{log.read_text()[-3000:]}")
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _switch(bench: Bench, namespace: str, to: Answerer | None) -> None:
    """Point the configurations (the ones kvtune writes) at `to`, or remove them (None), and
    wait until the apiserver follows."""
    if to is None:
        _unpublish(bench)
    else:
        settings = WebhookSettings(failure_policy="Fail")
        Kube(bench.api).apply_webhook_configurations(
            webhook.configurations(f"https://127.0.0.1:{to.port}", to.ca, settings))
    expected = "none" if to is None else to.who
    wait_for(lambda: _answered_by(bench, namespace) == expected,
             f"the apiserver calling {expected}", STARTUP_TIMEOUT)


def _answered_by(bench: Bench, namespace: str) -> str | None:
    """Who answers a dry-run creation now: a no-op server names itself in a warning; kvtune is
    known by its shaping; none leaves the VMI as sent."""
    try:
        response = bench.create_raw(namespace, dry_run=True)
    except ApiException:
        return None  # a server just switched away from, or not yet reached
    for warning in response.headers.getlist("Warning"):
        if ANSWERED_BY in warning:
            return str(warning.split(ANSWERED_BY, 1)[1].rstrip('"'))
    vmi = json.loads(response.data)
    return "kvtune" if "kvtune.io/mutated-by" in (
        vmi["metadata"].get("annotations") or {}) else "none"


def _unpublish(bench: Bench) -> None:
    admission = client.AdmissionregistrationV1Api(bench.api)
    for delete in (admission.delete_mutating_webhook_configuration,
                   admission.delete_validating_webhook_configuration):
        with contextlib.suppress(ApiException):
            delete(webhook.CONFIGURATION_NAME)


def _burst(bench: Bench, namespace: str, count: int) -> tuple[list[float], float]:
    """`count` creations started together; each one's latency (ms) and the burst's wall time."""
    start = threading.Barrier(count)

    def one(_: int) -> float:
        start.wait()
        began = time.perf_counter()
        bench.create(namespace)
        return (time.perf_counter() - began) * 1000

    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=count) as pool:
        latencies = list(pool.map(one, range(count)))
    return latencies, time.perf_counter() - began


def _one_at_a_time(bench: Bench, namespace: str, count: int) -> list[float]:
    """Latency (ms) of `count` creations made one after another: the webhook's cost at rest."""
    latencies = []
    for _ in range(count):
        began = time.perf_counter()
        bench.create(namespace)
        latencies.append((time.perf_counter() - began) * 1000)
    return latencies


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _histogram_summary(before: dict[str, float], after: dict[str, float]) -> str:
    count = after.get("count", 0) - before.get("count", 0)
    if not count:
        return "no calls"
    mean = (after["sum"] - before.get("sum", 0)) / count * 1000
    # The first bucket bound that holds 99% of the calls: an upper bound on the p99.
    bounds = sorted((float(le), after[le] - before.get(le, 0)) for le in after
                    if le not in ("sum", "count") and le != "+Inf")
    p99 = next((f"<= {bound * 1000:g} ms" for bound, n in bounds if n >= 0.99 * count), "> max")
    return f"{int(count)} calls, mean {mean:.2f} ms, p99 {p99}"


def decision_cost(nodes: int, calls: int = 3000) -> None:
    """CPU per call of the webhook's own work, in this process: decode the AdmissionReview,
    decide (admission.review), encode the answer; beside the same decode and encode alone (what
    the no-op server does). No cluster, no TLS, no HTTP."""
    from kvtune_operator.webhook.admission import ClusterView, node_capacity, review

    names = [f"bench-{i:03d}" for i in range(nodes)]
    view = ClusterView(
        profiles={"bench": make_profile("bench")},
        node_labels={n: {PROFILE_LABEL: "bench", READY_LABEL: "true"} for n in names},
        node_states={},
        allocatable={n: node_capacity(n, {"cpu": "62", "memory": "250Gi"}) for n in names})
    vmi = make_vmi({"cpu": {"cores": 2}, "memory": {"guest": "4Gi"}})
    body = json.dumps({"request": {"uid": "u", "operation": "CREATE", "namespace": "bench",
                                   "object": vmi}}).encode()
    labels = {**SELECTED, "kubernetes.io/metadata.name": "bench"}

    def per_call(answer: Any) -> float:
        began = time.perf_counter()
        for _ in range(calls):
            json.dumps(answer(json.loads(body)["request"])).encode()
        return (time.perf_counter() - began) / calls * 1e6

    bare = per_call(lambda asked: {"response": {"uid": asked["uid"], "allowed": True}})
    figures = {operation: per_call(lambda asked, op=operation: review(op, view, asked, labels)[0])
               for operation in ("mutate", "validate")}
    print(f"decision CPU per call, in process ({nodes} ready nodes): "
          + ", ".join(f"{op} {us:.0f} us" for op, us in figures.items())
          + f"; decode+encode alone {bare:.0f} us")


#: With --pin: the CPUs of the webhook under test, apart from the control plane and the client.
WEBHOOK_CPUS: set[int] = set()
#: With --favour-webhooks: the nice value of every webhook server (all alike).
WEBHOOK_NICE = 0


def _webhook_cpus() -> None:
    if WEBHOOK_NICE:
        os.nice(WEBHOOK_NICE)
    if WEBHOOK_CPUS:
        os.sched_setaffinity(0, WEBHOOK_CPUS)


def _pin(cpus: list[int]) -> str:
    """The last CPU for the webhooks, the others for this process and the control plane (its
    processes inherit them): as in a cluster, where the apiserver runs on control-plane nodes
    and the webhook's pod on a worker, each answering webhook gets a CPU of its own."""
    if len(cpus) < 2:
        raise SystemExit("--pin needs at least 2 CPUs")
    WEBHOOK_CPUS.add(cpus[-1])
    os.sched_setaffinity(0, set(cpus[:-1]))
    return f"; control plane and client on CPU {cpus[:-1]}, webhooks on CPU {cpus[-1]}"


def run(args: argparse.Namespace) -> None:
    global WEBHOOK_NICE
    decision_cost(args.nodes)
    pinned = _pin(sorted(os.sched_getaffinity(0))) if args.pin else ""
    if args.favour_webhooks:
        # What a CPU request does for a pod under contention: the kubelet gives its cgroup a
        # CPU weight by the request, so the scheduler runs it before busier, lighter-weighted
        # processes. Needs root; every webhook server gets the same.
        WEBHOOK_NICE = -10
        pinned += "; webhooks at nice -10"
    with LocalCluster.start(control_plane_bin_dir(REPO_ROOT)) as cluster:
        configuration = client.Configuration()
        kubernetes.config.load_kube_config(config_file=str(cluster.kubeconfig),
                                           client_configuration=configuration)
        # One pooled connection per thread, so that the client does not queue the burst.
        configuration.connection_pool_maxsize = args.vmis
        api = client.ApiClient(configuration)
        bench = Bench(cluster, api, cluster.workdir)
        namespace = bench.prepare(args.nodes)
        print(f"{args.rounds} bursts of {args.vmis} concurrent VMI creations per set-up, "
              f"{args.nodes} ready nodes, failurePolicy Fail; kube-apiserver on {cluster.server}"
              + pinned)
        bursts: dict[str, list[float]] = {who: [] for who in SETUPS}
        walls: dict[str, list[float]] = {who: [] for who in SETUPS}
        at_rest: dict[str, list[float]] = {who: [] for who in SETUPS}
        seen: dict[str, dict[tuple[str, ...], dict[str, float]]] = {who: {} for who in SETUPS}
        own: dict[tuple[str, ...], dict[str, float]] = {}
        sequential = max(1, args.sequential // args.rounds)
        with _answerers(bench, namespace) as answerers:
            for turn in range(args.rounds):
                # Rotated, so that no set-up always follows the same one.
                for who in SETUPS[turn % 4:] + SETUPS[:turn % 4]:
                    answerer = answerers.get(who)
                    _switch(bench, namespace, answerer)
                    _burst(bench, namespace, min(20, args.vmis))  # warm-up: connections
                    before = bench.metric()
                    own_url = answerer.metrics_url if answerer else None
                    own_before = _histograms(own_url, OWN_METRIC, ("operation",)) \
                        if own_url else {}
                    took, wall = _burst(bench, namespace, args.vmis)
                    _accumulate(seen[who], before, bench.metric())
                    if own_url:
                        _accumulate(own, own_before,
                                    _histograms(own_url, OWN_METRIC, ("operation",)))
                    bursts[who] += took
                    walls[who].append(wall)
                    at_rest[who] += _one_at_a_time(bench, namespace, sequential)
        for who in SETUPS:
            alone, latencies = at_rest[who], bursts[who]
            print(f"\n{who}: one at a time: p50 {statistics.median(alone):.1f} ms, "
                  f"p99 {_quantile(alone, 0.99):.1f} ms ({len(alone)} creations)")
            print(f"  in bursts of {args.vmis}: p50 {statistics.median(latencies):.0f} ms, "
                  f"p99 {_quantile(latencies, 0.99):.0f} ms, max {max(latencies):.0f} ms; "
                  f"throughput {len(latencies) / sum(walls[who]):.0f} VMIs/s")
            for key, delta in sorted(seen[who].items()):
                called = key[0].startswith((webhook.MUTATE_ID, webhook.VALIDATE_ID))
                if called and delta.get("count"):
                    print(f"  apiserver, webhook {key[0]} ({key[1]}): "
                          f"{_histogram_summary({}, delta)}")
            if who == "kvtune":
                for key, delta in sorted(own.items()):
                    print(f"  kvtune webhook, its own decision ({key[0]}): "
                          f"{_histogram_summary({}, delta)}")
        print()
        for label, figures in (("one at a time", at_rest), (f"bursts of {args.vmis}", bursts)):
            p50 = {who: statistics.median(values) for who, values in figures.items()}
            p99 = {who: _quantile(values, 0.99) for who, values in figures.items()}
            print(f"kvtune adds, {label}: " + "; ".join(
                f"over {base} p50 {p50['kvtune'] - p50[base]:+.1f} ms, "
                f"p99 {p99['kvtune'] - p99[base]:+.1f} ms" for base in SETUPS[-2::-1]))


def _accumulate(
    total: dict[tuple[str, ...], dict[str, float]],
    before: dict[tuple[str, ...], dict[str, float]],
    after: dict[tuple[str, ...], dict[str, float]],
) -> None:
    """Add what each histogram counted between `before` and `after` into `total`."""
    for key, counts in after.items():
        entry = total.setdefault(key, {})
        for label, value in counts.items():
            entry[label] = entry.get(label, 0.0) + value - before.get(key, {}).get(label, 0.0)


def main() -> None:
    if len(sys.argv) in (5, 6) and sys.argv[1] == "--noop-server":
        _serve_noop(sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]),
                    Path(sys.argv[5]) if len(sys.argv) == 6 else None)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vmis", type=int, default=200, help="concurrent creations per burst")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds; each runs one burst per set-up")
    parser.add_argument("--nodes", type=int, default=50, help="ready nodes of the profile")
    parser.add_argument("--sequential", type=int, default=100,
                        help="creations one after another per set-up, spread over the rounds")
    parser.add_argument("--pin", action="store_true",
                        help="run the webhooks on a CPU of their own (see _pin)")
    parser.add_argument("--favour-webhooks", action="store_true",
                        help="run the webhook servers at nice -10, as a CPU request weighs a "
                        "pod under contention (root only)")
    run(parser.parse_args())


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
