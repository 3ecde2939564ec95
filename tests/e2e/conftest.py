"""The e2e tier's clusters: kvtune installed as users install it, on one of two providers.

- `node`: a one-node cluster on this very machine (kvtune_cli.nodecluster): the control plane,
  containerd, a kubelet, kube-proxy and kube-scheduler built here, and kvtune's image built from
  its Dockerfile. It needs root, /dev/kvm and overlayfs and is then required: a missing tool or a
  failed build fails the tier with the remedy, it does not skip. Its node is this host, so
  Enforce is tested for real, read back on the host itself. Runs of it take turns with the
  realhost tier (the same lock): both change this kernel's hugepages, KSM and THP.
- `kind`: where docker and kind exist (a laptop); Audit only, since kind's nodes share the
  developer's kernel.

Each provider's cluster lives for the module (one installation, then the tests in order,
uninstall last); everything it created is removed afterwards, and leftovers fail the tier.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import kubernetes
import pytest
from deploy.kubectl import Kubectl
from kubernetes import client
from kvtune_cli import nodecluster
from kvtune_cli.nodecluster import NodeCluster, node_bin_dir, node_images
from support.realhost import LOCK

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "kvtune-system"


@dataclass
class Installation:
    """A cluster to install kvtune into, and how to reach it."""

    provider: str
    kubectl: Kubectl
    api: client.ApiClient
    overlay: Path
    """The kustomization `kubectl apply -k` installs."""
    node: NodeCluster | None
    """The real node (this host) on the node provider; None on kind."""

    @property
    def kubeconfig(self) -> Path:
        assert self.kubectl.kubeconfig is not None
        return self.kubectl.kubeconfig


@contextlib.contextmanager
def _host_lock() -> Iterator[None]:
    """The realhost tier's lock, for the whole life of the node: other checkouts' runs of either
    tier wait instead of changing this kernel's tunables under each other."""
    os.makedirs(os.path.dirname(LOCK), exist_ok=True)
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def _node_provider(config: pytest.Config) -> Iterator[Installation]:
    reason = nodecluster.why_not_here()
    if reason is not None:
        pytest.skip(f"e2e on a real node skipped: {reason}")
    missing = nodecluster.missing_tools()
    if missing:
        pytest.fail(f"the real-node tier needs {', '.join(missing)}: run `make setup` as root")
    capture = config.pluginmanager.getplugin("capturemanager")
    with _host_lock():
        # Builds, start and stop show their progress (a cold build takes minutes).
        with capture.global_and_fixture_disabled():
            bin_dir = node_bin_dir(REPO)
            images = node_images(REPO)
            cluster = NodeCluster.start(bin_dir, images)
        try:
            api = kubernetes.config.new_client_from_config(config_file=str(cluster.kubeconfig))
            try:
                yield Installation("node", Kubectl(bin_dir / "kubectl", cluster.kubeconfig), api,
                                   REPO / "deploy/overlays/node-e2e", cluster)
            finally:
                api.close()
        finally:
            with capture.global_and_fixture_disabled():
                cluster.stop()


def _kind_missing() -> str | None:
    for tool in ("docker", "kind", "kubectl"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not on PATH"
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60)
    if info.returncode != 0:
        return f"`docker info` fails, no container engine to run kind: {info.stderr.strip()[:200]}"
    return None


def _run(*command: str, timeout: float = 1200) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"`{' '.join(command)}` failed:\n{done.stdout}\n{done.stderr}"


@contextlib.contextmanager
def _kind_provider(tmp: Path) -> Iterator[Installation]:
    reason = _kind_missing()
    if reason is not None:
        pytest.skip(f"e2e on kind skipped: {reason}")
    name = f"kvtune-e2e-{uuid.uuid4().hex[:6]}"
    kubeconfig = tmp / "kubeconfig"
    _run("docker", "build", "-t", "kvtune:dev", str(REPO))
    _run("kind", "create", "cluster", "--name", name, "--kubeconfig", str(kubeconfig),
         "--wait", "120s")
    try:
        _run("kind", "load", "docker-image", "kvtune:dev", "--name", name)
        api = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
        yield Installation("kind", Kubectl(Path(shutil.which("kubectl") or "kubectl"), kubeconfig),
                           api, REPO / "deploy/overlays/kind", None)
        api.close()
    finally:
        _run("kind", "delete", "cluster", "--name", name)


@pytest.fixture(scope="module", params=["node", "kind"])
def provider(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Installation]:
    """An empty cluster of the provider, removed after the module's tests."""
    if request.param == "node":
        with _node_provider(request.config) as installation:
            yield installation
    else:
        with _kind_provider(tmp_path_factory.mktemp("kind")) as installation:
            yield installation
