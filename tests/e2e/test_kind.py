"""The whole installation on a real cluster: kind nodes, the image built here, `kubectl apply -k
deploy/overlays/kind`, agents probing real (kind) nodes, and the webhook answering for a VMI.

Needs docker with a running engine, kind and kubectl on PATH; skipped with the reason otherwise.
It only ever uses Audit mode: kind nodes are containers on the developer's own host, whose
kernel settings an Enforce profile would change. The parts that need no docker (rendering, the
API server accepting every manifest) are tested in tests/deploy/.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import kubevirt
from support.cluster import wait_for

REPO = Path(__file__).resolve().parents[2]
IMAGE = "kvtune:dev"
NAMESPACE = "kvtune-system"

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]


def _missing_tools() -> str | None:
    for tool in ("docker", "kind", "kubectl"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not on PATH"
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60)
    if info.returncode != 0:
        return f"`docker info` fails, no container engine to run kind: {info.stderr.strip()[:200]}"
    return None


def run(*command: str, stdin: str | None = None, timeout: float = 600) -> str:
    done = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"`{' '.join(command)}` failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def kind_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A kind cluster with the kvtune image loaded; its kubeconfig."""
    reason = _missing_tools()
    if reason is not None:
        pytest.skip(f"e2e on kind skipped: {reason}")
    name = f"kvtune-e2e-{uuid.uuid4().hex[:6]}"
    kubeconfig = tmp_path_factory.mktemp("kind") / "kubeconfig"
    run("docker", "build", "-t", IMAGE, str(REPO), timeout=1200)
    run("kind", "create", "cluster", "--name", name, "--kubeconfig", str(kubeconfig),
        "--wait", "120s")
    try:
        run("kind", "load", "docker-image", IMAGE, "--name", name)
        yield kubeconfig
    finally:
        run("kind", "delete", "cluster", "--name", name)


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    return run("kubectl", "--kubeconfig", str(kubeconfig), *args, stdin=stdin)


@pytest.fixture(scope="module")
def installed(kind_cluster: Path) -> Path:
    # One apply, as deploy/README.md promises: the operator creates kopf's peering object itself.
    kubectl(kind_cluster, "apply", "-k", str(REPO / "deploy/overlays/kind"))
    for deployment in ("kvtune-operator", "kvtune-webhook"):
        kubectl(kind_cluster, "-n", NAMESPACE, "rollout", "status", f"deployment/{deployment}",
                "--timeout=300s")
    return kind_cluster


def profile(name: str, node_selector: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "kvtune.io/v1alpha1", "kind": "HypervisorProfile",
            "metadata": {"name": name},
            "spec": {"nodeSelector": node_selector, "mode": "Audit",
                     "vmi": {"namespaceSelector": {}}}}


def test_every_node_reports_its_real_host_in_audit_mode(installed: Path) -> None:
    # Every node on purpose: an empty selector is refused (it would take every node by accident).
    every_node = {"matchExpressions": [
        {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}]}
    kubectl(installed, "apply", "-f", "-",
            stdin=yaml.safe_dump(profile("e2e-audit-all", every_node)))
    nodes = json.loads(kubectl(installed, "get", "nodes", "-o", "json"))["items"]
    names = sorted(n["metadata"]["name"] for n in nodes)

    def reported() -> bool:
        states = json.loads(kubectl(installed, "get", "hypervisornodestates", "-o", "json"))
        done = {s["metadata"]["name"] for s in states["items"]
                if (s.get("status") or {}).get("host") is not None}
        return done == set(names)

    wait_for(reported, f"HypervisorNodeStates of {names} with a probed host", 600, interval=2)
    for name in names:
        state = json.loads(kubectl(installed, "get", "hypervisornodestate", name, "-o", "json"))
        assert state["status"]["host"]["cpu"], f"{name}: no CPU probed from the kind node"


def test_the_webhook_answers_for_a_vmi(installed: Path) -> None:
    # Two Audit profiles claiming the same VMI: the validating webhook warns instead of refusing,
    # a reply only the running webhook can give.
    for crd in kubevirt.kubevirt_crds():
        kubectl(installed, "apply", "-f", "-", stdin=yaml.safe_dump(crd))
    kubectl(installed, "wait", "--for=condition=Established", "--timeout=60s",
            "crd/virtualmachineinstances.kubevirt.io")
    claim_nothing = {"matchLabels": {"kvtune.io/e2e": "none"}}
    for name in ("e2e-claim-a", "e2e-claim-b"):
        kubectl(installed, "apply", "-f", "-", stdin=yaml.safe_dump(profile(name, claim_nothing)))
    namespace = f"e2e-{uuid.uuid4().hex[:6]}"
    kubectl(installed, "create", "namespace", namespace)
    vmi = yaml.safe_dump(kubevirt.minimal_vmi("vm", namespace))

    def warned() -> bool:
        out = subprocess.run(
            ["kubectl", "--kubeconfig", str(installed), "create", "--dry-run=server", "-f", "-"],
            input=vmi, capture_output=True, text=True, timeout=60)
        return "would be refused" in out.stderr

    wait_for(warned, "the webhook warning about the VMI two profiles claim", 120, interval=2)
