"""kubectl for the deploy tests: render deploy/ with kustomize, apply manifests to a cluster.

Why kubectl and not the Python client: `kubectl kustomize` and `kubectl apply` are what users
run on these files, and kubectl's kustomize is the one whose rules (load restrictions, transformer
order) the manifests must satisfy. The binary is the one built with the control plane
(`kvtune_cli.localcluster`), so its version matches the apiserver's.
"""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


@dataclasses.dataclass(frozen=True)
class Kubectl:
    binary: Path
    kubeconfig: Path | None = None
    """None: no cluster, e.g. only `kubectl kustomize`."""

    def run(self, *args: str, stdin: str | None = None, timeout: float = 120) -> str:
        command = [str(self.binary)]
        # Before the arguments: after `exec ... --` it would go to the command in the pod.
        if self.kubeconfig is not None:
            command += ["--kubeconfig", str(self.kubeconfig)]
        command += args
        done = subprocess.run(
            command, input=stdin, capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0:
            raise AssertionError(
                f"`kubectl {' '.join(args)}` failed ({done.returncode}):\n{done.stderr}"
            )
        return done.stdout

    def render(self, directory: Path) -> list[dict[str, Any]]:
        """The objects `kubectl apply -k directory` would send."""
        return [doc for doc in yaml.safe_load_all(self.run("kustomize", str(directory))) if doc]

    def apply(self, objects: Iterable[Mapping[str, Any]], *flags: str) -> str:
        return self.run("apply", *flags, "-f", "-", stdin=yaml.safe_dump_all(list(objects)))


def of_kind(objects: Iterable[Mapping[str, Any]], *kinds: str) -> list[Mapping[str, Any]]:
    return [o for o in objects if o["kind"] in kinds]


def one(objects: Iterable[Mapping[str, Any]], kind: str, name: str) -> Mapping[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]
