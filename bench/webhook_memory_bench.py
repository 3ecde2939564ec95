"""What the VMI admission webhook's memory and connections come to under clients that push it.

Why: the webhook runs with a memory limit (deploy/base/webhook.yaml); OOM-killed, it lets VMIs
through unshaped under failurePolicy Ignore. 128 parallel 3.7 MiB AdmissionReviews once peaked at
931 MiB, and 1,200 half-open TLS connections were held for over a minute. This starts a local
control plane, kvtune's and KubeVirt's CRDs, a profile that selects the bench's namespace, and
`kvtune webhook` in a process of its own, then:

1. sends `--parallel` AdmissionReviews of `--review-mib` MiB each at once, straight to the
   webhook over TLS (as the apiserver would, but larger than it forwards), and reads the
   process's peak RSS (VmHWM) against the limit, and its RSS once the burst is over;
2. opens `--half-open` TCP connections that send the first bytes of a TLS ClientHello and no
   more, and as many that finish the handshake and send half a request's headers, and times how
   long the webhook holds them.

`--source DIR` runs the webhook from another checkout (e.g. `git archive` of an older commit),
for a before/after comparison. Figures only, no assertions.

Run: .venv/bin/python bench/webhook_memory_bench.py [--parallel 128] [--review-mib 3.7]
     [--half-open 1200] [--source DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import kubernetes
import yaml
from kubernetes import client
from kvtune_cli.localcluster import LocalCluster, control_plane_bin_dir, free_port, stop_process
from kvtune_operator.webhook import configuration as webhook

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support import kubevirt
from support.cluster import apply_crds, wait_for
from webhook import make_vmi

REPO_ROOT = Path(__file__).resolve().parents[1]
NAMESPACE, SELECTED = "bench", {"kvtune-bench": "selected"}
MiB = 1024 * 1024


def shipped_limit() -> str:
    """The webhook container's memory limit in deploy/base/webhook.yaml."""
    for doc in yaml.safe_load_all((REPO_ROOT / "deploy/base/webhook.yaml").read_text()):
        if doc and doc.get("kind") == "Deployment":
            container = doc["spec"]["template"]["spec"]["containers"][0]
            return str(container["resources"]["limits"]["memory"])
    return "?"


def prepare(api: client.ApiClient) -> None:
    apply_crds(api, kubevirt.kubevirt_crds())
    apply_crds(api, [yaml.safe_load(p.read_text()) for p in sorted((REPO_ROOT / "crds").glob(
        "*.yaml"))])
    client.CoreV1Api(api).create_namespace({"metadata": {"name": NAMESPACE, "labels": SELECTED}})
    client.CustomObjectsApi(api).create_cluster_custom_object(
        "kvtune.io", "v1alpha1", "hypervisorprofiles", {
            "apiVersion": "kvtune.io/v1alpha1", "kind": "HypervisorProfile",
            "metadata": {"name": "bench"},
            "spec": {"mode": "Enforce", "nodeSelector": {"matchLabels": {"pool": "bench"}},
                     "vmi": {"namespaceSelector": {"matchLabels": SELECTED}}}})


def review(mib: float) -> bytes:
    """A CREATE AdmissionReview of a selected VMI, padded to `mib` MiB with many small disks'
    worth of annotations (many small values, as a real large object decodes: many objects)."""
    vmi = make_vmi({"cpu": {"cores": 2}, "memory": {"guest": "2Gi"}})
    vmi["metadata"]["namespace"] = NAMESPACE
    pad = int(mib * MiB)
    vmi["metadata"]["annotations"] = {f"bench.kvtune.io/k{i}": "v" * 40
                                      for i in range(pad // 70)}
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                       "request": {"uid": "bench", "operation": "CREATE", "namespace": NAMESPACE,
                                   "object": vmi}}).encode()


def status_kib(pid: int, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    found = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(found.group(1)) if found else 0


def tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return context


def post(port: int, body: bytes) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=120) as raw, \
            tls_context().wrap_socket(raw) as conn:
        conn.sendall(b"POST /" + webhook.MUTATE_ID.encode() + b" HTTP/1.1\r\nHost: w\r\n"
                     b"Content-Type: application/json\r\nConnection: close\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    return int(reply.split(b" ", 2)[1]) if reply else 0


def burst(port: int, pid: int, parallel: int, mib: float) -> None:
    body = review(mib)
    before = status_kib(pid, "VmRSS")
    start = time.monotonic()
    with ThreadPoolExecutor(parallel) as pool:
        codes = list(pool.map(lambda _: post(port, body), range(parallel)))
    took = time.monotonic() - start
    time.sleep(6)  # past the webhook's trim interval
    print(f"burst: {parallel} parallel reviews of {len(body) / MiB:.1f} MiB in {took:.1f} s, "
          f"answers {sorted(set(codes))}")
    print(f"  RSS before {before / 1024:.0f} MiB, peak (VmHWM) "
          f"{status_kib(pid, 'VmHWM') / 1024:.0f} MiB, after {status_kib(pid, 'VmRSS') / 1024:.0f}"
          f" MiB; shipped limit {shipped_limit()}")


def _held(conns: list[socket.socket]) -> int:
    """How many of `conns` the server has not closed yet."""
    held = 0
    for conn in conns:
        conn.setblocking(False)
        try:
            held += conn.recv(1) != b""
        except (BlockingIOError, ssl.SSLWantReadError):
            held += 1
        except OSError:
            pass
    return held


def half_open(port: int, pid: int, count: int) -> None:
    hello: list[socket.socket] = []
    headers: list[socket.socket] = []
    for _ in range(count):
        raw = socket.create_connection(("127.0.0.1", port), timeout=30)
        raw.sendall(b"\x16\x03\x01")  # the first bytes of a ClientHello, and no more
        hello.append(raw)
    for _ in range(count):
        try:
            conn = tls_context().wrap_socket(socket.create_connection(("127.0.0.1", port), 30))
        except OSError:
            continue  # refused beyond max_connections, or closed: not held
        conn.sendall(b"POST /" + webhook.MUTATE_ID.encode() + b" HTTP/1.1\r\nHost: w")
        headers.append(conn)
    print(f"half-open: {len(hello)} stopped in the handshake, {len(headers)} in their headers; "
          f"RSS {status_kib(pid, 'VmRSS') / 1024:.0f} MiB")
    start = time.monotonic()
    for wait in (5, 10, 20, 30, 60):
        time.sleep(max(0.0, start + wait - time.monotonic()))
        h, r = _held(hello), _held(headers)
        print(f"  after {wait:>2} s: held {h} in the handshake, {r} in their headers")
        if h == r == 0:
            break
    for held in hello + headers:
        held.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parallel", type=int, default=128)
    parser.add_argument("--review-mib", type=float, default=3.7)
    parser.add_argument("--half-open", type=int, default=1200)
    parser.add_argument("--source", type=Path, help="run the webhook from this checkout")
    args = parser.parse_args()
    with LocalCluster.start(control_plane_bin_dir(REPO_ROOT)) as cluster:
        api = kubernetes.config.new_client_from_config(config_file=str(cluster.kubeconfig))
        prepare(api)
        port, cert_dir = free_port(), cluster.workdir / "webhook-tls"
        cert_dir.mkdir()
        material = webhook.GeneratedTls(["127.0.0.1"]).load()
        for name, pem in zip(webhook.TLS_FILES, (material.cert_pem, material.key_pem,
                                                  material.ca_pem), strict=True):
            (cert_dir / name).write_bytes(pem)
        env = dict(os.environ)
        if args.source:
            env["PYTHONPATH"] = os.pathsep.join(
                str(args.source / d) for d in ("api", "operator", "node-agent", "cli"))
        log = cluster.workdir / "webhook.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "kvtune_cli.main", "webhook", "--kubeconfig",
                 str(cluster.kubeconfig), "--port", str(port), "--cert-dir", str(cert_dir)],
                stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            wait_for(lambda: _listening(port), "the webhook listening", 120)
            print(f"kvtune webhook from {args.source or REPO_ROOT}, pid {proc.pid}")
            burst(port, proc.pid, args.parallel, args.review_mib)
            half_open(port, proc.pid, args.half_open)
        finally:
            stop_process(proc, timeout=30)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


if __name__ == "__main__":
    main()
