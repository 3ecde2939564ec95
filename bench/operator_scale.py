"""Operator at scale against the real API server: N fake nodes, one profile, simulated agents.

Prints: time until the profile reports every node Ready, API writes and requests per node during
the converge (from the apiserver's own apiserver_request_total, so nothing is self-reported),
operator peak RSS, and mutating requests per minute once converged (the target is zero).

    .venv/bin/python bench/operator_scale.py --nodes 1000 [--nodes 5000] [--steady 60]

Targets (issue 5): 1,000 nodes Ready in under 60 s, <= 3 operator writes per node for a
converge, operator RSS under 300 MiB at 5,000 nodes, zero writes at steady state.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import os
import pathlib
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import psutil
import yaml
from kubernetes import client, config, watch
from kvtune_cli.localcluster import LocalCluster, control_plane_bin_dir, stop_process

# The CRD helper is the tests' own (tests/support), as in webhook_bench.py.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
from support.cluster import apply_crds

REPO = pathlib.Path(__file__).resolve().parents[1]
G, V = "kvtune.io", "v1alpha1"
MUTATING = ("POST", "PATCH", "PUT", "DELETE")
METRIC = re.compile(r'^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>[0-9.e+]+)$')


def request_counts(api: client.ApiClient, token: str) -> dict[tuple[str, str, str], float]:
    """(verb, resource, subresource) -> requests served so far, from the apiserver's /metrics."""
    response = api.rest_client.pool_manager.request(
        "GET", api.configuration.host + "/metrics", headers={"Authorization": f"Bearer {token}"}
    )
    text = response.data.decode()
    counts: dict[tuple[str, str, str], float] = {}
    for line in text.splitlines():
        m = METRIC.match(line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m["labels"]))
        key = (labels.get("verb", ""), labels.get("resource", ""), labels.get("subresource", ""))
        counts[key] = counts.get(key, 0.0) + float(m["value"])
    return counts


def diff(after: dict[tuple[str, str, str], float], before: dict[tuple[str, str, str], float]
         ) -> dict[tuple[str, str, str], float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0) > 0}


def create_nodes(core: client.CoreV1Api, n: int) -> None:
    def one(i: int) -> None:
        core.create_node({"metadata": {"name": f"bench-{i:05}", "labels": {"pool": "bench"}}})
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(n)))


def simulated_agents(api: client.ApiClient, stop: threading.Event) -> None:
    """Answer every new or changed node state once with a Ready status, as an agent would.

    Each node has its own agent, so answers go out side by side (a pool), not one round trip
    after another; and the watch resumes where it stopped, as an informer does, instead of
    listing every state again each time it returns: both would make the bench, not the
    operator, the bottleneck at thousands of nodes."""
    custom = client.CustomObjectsApi(api)
    answered: dict[str, int] = {}

    def answer(name: str, gen: int) -> None:
        custom.patch_cluster_custom_object_status(G, V, "hypervisornodestates", name, {
            "status": {"observedGeneration": gen, "syncStatus": "Succeeded",
                       "conditions": [{"type": "Ready", "status": "True",
                                       "reason": "HostMatches", "message": "",
                                       "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})

    def report(done: concurrent.futures.Future[None]) -> None:
        if (err := done.exception()) is not None:
            print(f"simulated agent failed: {err!r}", file=sys.stderr)

    stream = watch.Watch()  # remembers the last resourceVersion it saw
    with concurrent.futures.ThreadPoolExecutor(8) as agents:
        while not stop.is_set():
            since = {"resource_version": stream.resource_version} if stream.resource_version else {}
            try:
                for event in stream.stream(custom.list_cluster_custom_object, G, V,
                                           "hypervisornodestates", timeout_seconds=5, **since):
                    obj = event["object"]
                    name, gen = obj["metadata"]["name"], obj["metadata"]["generation"]
                    if event["type"] == "DELETED" or answered.get(name) == gen:
                        continue
                    answered[name] = gen
                    agents.submit(answer, name, gen).add_done_callback(report)
                    if stop.is_set():
                        break
            except client.ApiException as err:
                if err.status != 410:
                    raise
                stream.resource_version = None  # too old: list again
            finally:
                stream.stop()


@contextlib.contextmanager
def operator_process(kubeconfig: pathlib.Path, log_path: pathlib.Path
                     ) -> Iterator[subprocess.Popen[bytes]]:
    """`kvtune operator` as a child process, stopped however the bench ends (a failure, ^C):
    asked to stop, then killed if it has not within 30 s."""
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    # No metrics port: the default (8081) may be taken by an operator running on this host.
    with log_path.open("wb") as log:
        op = subprocess.Popen([sys.executable, "-m", "kvtune_cli.main", "operator",
                               "--standalone", "--metrics-port", "0"],
                              env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield op
        finally:
            stop_process(op, timeout=30)


def run(n: int, steady_seconds: float) -> None:
    bin_dir = control_plane_bin_dir(REPO)
    with LocalCluster.start(bin_dir) as cluster:
        api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
        apply_crds(api, [yaml.safe_load(p.read_text())
                         for p in sorted((REPO / "crds").glob("*.yaml"))])
        t0 = time.monotonic()
        create_nodes(client.CoreV1Api(api), n)
        print(f"[{n} nodes] created {n} Node objects in {time.monotonic() - t0:.1f} s")
        stop = threading.Event()  # ends the RSS sampler and the simulated agents
        with operator_process(cluster.kubeconfig, cluster.workdir / "operator.log") as op:
            try:
                measure(n, steady_seconds, cluster, api, op, stop)
            finally:
                stop.set()


def measure(n: int, steady_seconds: float, cluster: LocalCluster, api: client.ApiClient,
            op: subprocess.Popen[bytes], stop: threading.Event) -> None:
    """The converge of one profile over the `n` nodes, then `steady_seconds` of steady state."""
    custom = client.CustomObjectsApi(api)
    token = cluster.token
    proc = psutil.Process(op.pid)
    peak = [0]

    def sample() -> None:
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], proc.memory_info().rss)
            except psutil.NoSuchProcess:
                return
            time.sleep(0.2)

    threading.Thread(target=sample, daemon=True).start()
    agents = threading.Thread(target=simulated_agents, args=(api, stop), daemon=True)
    agents.start()
    time.sleep(3)  # operator started, indexes filled
    before = request_counts(api, token)
    t0 = time.monotonic()
    custom.create_cluster_custom_object(G, V, "hypervisorprofiles", {
        "apiVersion": f"{G}/{V}", "kind": "HypervisorProfile", "metadata": {"name": "bench"},
        "spec": {"nodeSelector": {"matchLabels": {"pool": "bench"}}}})
    ready = 0
    while time.monotonic() - t0 < 600:
        status = custom.get_cluster_custom_object(G, V, "hypervisorprofiles", "bench").get(
            "status") or {}
        ready = status.get("readyNodes", 0)
        if ready == n:
            break
        if op.poll() is not None:
            raise SystemExit(f"operator exited; see {cluster.workdir / 'operator.log'}")
        time.sleep(0.5)
    converge = time.monotonic() - t0
    converged = diff(request_counts(api, token), before)
    print(f"[{n} nodes] all {ready} Ready after {converge:.1f} s")
    operator_writes = sum(v for (verb, res, sub), v in converged.items()
                          if verb in MUTATING and not (res == "hypervisornodestates"
                                                       and sub == "status")
                          and res != "events")
    agent_writes = converged.get(("PATCH", "hypervisornodestates", "status"), 0.0)
    total = sum(converged.values())
    print(f"[{n} nodes] operator writes per node: {operator_writes / n:.2f} "
          f"(events excluded); simulated agent writes per node: {agent_writes / n:.2f}; "
          f"all API requests per node (incl. watches, reads, agents): {total / n:.2f}")
    for key, value in sorted(converged.items()):
        if key[0] in MUTATING:
            print(f"    {key[0]:<6} {key[1]}{'/' + key[2] if key[2] else '':<40} {value:>8.0f}")
    time.sleep(5)
    before = request_counts(api, token)
    time.sleep(steady_seconds)
    steady = diff(request_counts(api, token), before)
    # The apiserver renews its own identity Lease every 10 s; that is not kvtune's write.
    writes = {k: v for k, v in steady.items() if k[0] in MUTATING and k[1] != "leases"}
    print(f"[{n} nodes] steady state: {sum(writes.values()) * 60 / steady_seconds:.1f} "
          f"writes/min by kvtune over {steady_seconds:.0f} s {writes or ''}")
    print(f"[{n} nodes] operator peak RSS: {peak[0] / 2**20:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, action="append", help="node count (repeatable)")
    parser.add_argument("--steady", type=float, default=60.0, help="seconds of steady state")
    args = parser.parse_args()
    for n in args.nodes or [1000]:
        run(n, args.steady)


if __name__ == "__main__":
    main()
