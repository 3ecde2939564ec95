"""KubeVirt's own admission code as the judge of kvtune's VMI shaping.

Why: the webhook shapes VMIs before KubeVirt sees them, and what KubeVirt then does (its defaulting
re-serialises the spec, its create admitter refuses what it cannot run, its overhead sizes the pod)
decides whether a VM starts. Judged by kvtune's own idea of KubeVirt, kvtune once shaped VMIs that
KubeVirt refused in 33 of 34 cases. These helpers ask `hack/kubevirt-oracle`, a small Go program
built from KubeVirt's modules at the version its go.mod pins, instead.

`admission_chain` replays what the apiserver does on a VMI create with both webhooks installed:
mutating webhooks run in the order of their configurations' names (kvtune's `kvtune.io` before
KubeVirt's `virt-api-mutator`), kvtune is reinvoked after KubeVirt's mutator changed the object
(`reinvocationPolicy: IfNeeded`; KubeVirt's own webhook is never reinvoked), then both validating
webhooks judge the result.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jsonpatch
import yaml
from kvtune_operator.common.profiles import Profile
from kvtune_operator.webhook.vmi import KubeVirtConfig, mutate_vmi, validate_vmi
from kvtune_operator.webhook.vmi.mutate import MutationResult

Obj = dict[str, Any]

REPO_ROOT = Path(__file__).resolve().parents[2]
ORACLE_DIR = REPO_ROOT / "hack" / "kubevirt-oracle"
#: A path to an already built oracle; otherwise hack/build-kubevirt-oracle.sh builds (or finds) it.
ORACLE_ENV = "KVTUNE_KUBEVIRT_ORACLE"


class OracleError(RuntimeError):
    """The oracle could not be built or answered with an error of its own."""


@dataclasses.dataclass(frozen=True)
class Verdict:
    """KubeVirt's VMI create admitter's answer."""

    allowed: bool
    causes: tuple[str, ...]
    """`field: message` for each reason KubeVirt gave."""


@dataclasses.dataclass(frozen=True)
class Sizing:
    """virt-controller's memory overhead for a VMI and the virt-launcher pod's resources."""

    overhead: int
    pod_requests: Mapping[str, str]
    pod_limits: Mapping[str, str]


def oracle_path() -> Path:
    """The built oracle: `$KVTUNE_KUBEVIRT_ORACLE`, else what the build script prints last."""
    if from_env := os.environ.get(ORACLE_ENV):
        return Path(from_env)
    script = REPO_ROOT / "hack" / "build-kubevirt-oracle.sh"
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=False)
    if done.returncode != 0 or not done.stdout.strip():
        raise OracleError(f"{script} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


def kubevirt_version() -> str:
    """The KubeVirt version the oracle is built from (hack/kubevirt-oracle/go.mod)."""
    for line in (ORACLE_DIR / "go.mod").read_text().splitlines():
        words = line.split()
        if words[:1] == ["kubevirt.io/kubevirt"] and len(words) == 2:
            return words[1]
    raise OracleError(f"{ORACLE_DIR / 'go.mod'} does not require kubevirt.io/kubevirt")


def kubevirt_source_dir() -> Path:
    """KubeVirt's module source in the Go module cache (the oracle's build downloaded it)."""
    done = subprocess.run(
        ["go", "list", "-m", "-f", "{{.Dir}}", "kubevirt.io/kubevirt"],
        cwd=ORACLE_DIR, capture_output=True, text=True, check=False,
        env={**os.environ, "GOFLAGS": "-mod=mod"},
    )
    if done.returncode != 0 or not done.stdout.strip():
        raise OracleError(f"cannot locate KubeVirt's module source: {done.stderr}")
    return Path(done.stdout.strip())


def example_vmis() -> list[tuple[str, Obj]]:
    """The VirtualMachineInstances among KubeVirt's own `examples/` (file name, object)."""
    found = []
    for path in sorted((kubevirt_source_dir() / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "VirtualMachineInstance":
                doc.setdefault("metadata", {}).setdefault("namespace", "vms")
                found.append((path.name, doc))
    return found


class Oracle:
    """One running oracle process, asked one JSON line at a time (it takes ~3 s to start, then
    answers in well under a millisecond)."""

    def __init__(self, path: Path) -> None:
        self._proc = subprocess.Popen(
            [str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        self._lock = threading.Lock()

    def close(self) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        self._proc.wait(timeout=30)

    def _ask(self, op: str, vmi: Mapping[str, Any], config: KubeVirtConfig) -> Obj:
        return self._line(
            {"op": op, "vmi": vmi, "config": configuration(config), "arch": "amd64"}
        )

    def _line(self, request: Obj) -> Obj:
        line = json.dumps(request)
        with self._lock:
            assert self._proc.stdin is not None and self._proc.stdout is not None
            self._proc.stdin.write(line + "\n")
            answer = self._proc.stdout.readline()
        if not answer:
            raise OracleError(f"the oracle exited ({self._proc.poll()})")
        decoded: Obj = json.loads(answer)
        return decoded

    def default(self, vmi: Mapping[str, Any], config: KubeVirtConfig) -> Obj:
        """The VMI after virt-api's mutating webhook (presets, defaults, finalizer, status)."""
        answer = self._ask("default", vmi, config)
        if "error" in answer:
            raise OracleError(f"KubeVirt's mutator refused the VMI: {answer['error']}")
        defaulted: Obj = answer["vmi"]
        return defaulted

    def admit(self, vmi: Mapping[str, Any], config: KubeVirtConfig) -> Verdict:
        """KubeVirt's VMI create admitter on `vmi` (which should be defaulted already)."""
        answer = self._ask("admit", vmi, config)
        causes = tuple(f"{c.get('field', '')}: {c['message']}" for c in answer.get("causes", []))
        return Verdict(bool(answer.get("allowed")), causes)

    def version(self, version: str) -> tuple[int, int, list[str]] | None:
        """(major, minor, prerelease identifiers) of a KubeVirt version as virt-operator parses
        it (go-semver after one "v"); None where it refuses it."""
        answer = self._line({"op": "version", "version": version})
        if "error" in answer:
            return None
        found = answer["semver"]
        pre = found["preRelease"]
        return found["major"], found["minor"], pre.split(".") if pre else []

    def sizing(self, vmi: Mapping[str, Any], config: KubeVirtConfig) -> Sizing:
        """virt-controller's overhead and pod resources for `vmi` (defaulted already)."""
        answer = self._ask("overhead", vmi, config)
        if "error" in answer:
            raise OracleError(answer["error"])
        return Sizing(
            answer["overhead"], answer.get("podRequests", {}), answer.get("podLimits", {})
        )


def configuration(config: KubeVirtConfig) -> Obj:
    """The KubeVirt CR's spec.configuration for `config`."""
    body: Obj = {"developerConfiguration": {"featureGates": sorted(config.feature_gates)}}
    if config.overhead_ratio is not None:
        body["additionalGuestMemoryOverheadRatio"] = config.overhead_ratio
    if config.memory_overcommit != 100:
        body["developerConfiguration"]["memoryOvercommit"] = config.memory_overcommit
    if config.stage_rollout:
        body["vmRolloutStrategy"] = config.vm_rollout_strategy
    return body


@contextmanager
def running_oracle() -> Iterator[Oracle]:
    oracle = Oracle(oracle_path())
    try:
        yield oracle
    finally:
        oracle.close()


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How a VMI create ends with kvtune's and KubeVirt's webhooks both installed."""

    stored: Obj | None
    """The VMI as stored; None when refused."""
    refused_by: str | None
    """"kvtune mutate", "kvtune validate", "KubeVirt mutate", "KubeVirt admit", or None."""
    reasons: tuple[str, ...]


def admission_chain(
    oracle: Oracle,
    profile: Profile,
    vmi: Mapping[str, Any],
    config: KubeVirtConfig,
    *,
    namespace_labels: Mapping[str, str] | None = None,
) -> Outcome:
    """Replay a VMI create through both webhooks in the apiserver's order (module docstring)."""
    labels = {} if namespace_labels is None else namespace_labels
    first = _kvtune_mutate(profile, vmi, labels, config)
    if isinstance(first, Outcome):
        return first
    defaulted = oracle.default(first, config)
    again = _kvtune_mutate(profile, defaulted, labels, config)
    if isinstance(again, Outcome):
        return again
    errors, _ = validate_vmi(profile, again, namespace_labels=labels, kubevirt=config)
    if errors:
        return Outcome(None, "kvtune validate", tuple(errors))
    verdict = oracle.admit(again, config)
    if not verdict.allowed:
        return Outcome(None, "KubeVirt admit", verdict.causes)
    return Outcome(again, None, ())


def _kvtune_mutate(
    profile: Profile, vmi: Mapping[str, Any], labels: Mapping[str, str], config: KubeVirtConfig
) -> Obj | Outcome:
    result: MutationResult = mutate_vmi(profile, vmi, namespace_labels=labels, kubevirt=config)
    if result.refused:
        return Outcome(None, "kvtune mutate", tuple(result.refused))
    # Applied as the apiserver applies the webhook's answer, not taken from result.vmi.
    shaped: Obj = jsonpatch.apply_patch(dict(vmi), result.patch)
    return shaped


def refused_by_kubevirt(outcomes: Sequence[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if o.refused_by in {"KubeVirt mutate", "KubeVirt admit"}]
