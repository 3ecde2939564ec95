"""`kvtune demo`: the whole product on one machine, with nothing changed on the host.

It starts a real local control plane, installs the CRDs, registers this machine as a Node, runs
the operator, the VMI webhook and a node agent for this host (as separate processes, exactly as
in a cluster), applies a profile `kvtune profile suggest` proposes for this very host (in Audit)
and shows what kvtune found, what Enforce would change and why, and the one command that would
change it for real. Every step is a `kvtune` or `kubectl` command, printed before it runs, so a
newcomer can repeat it.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import typing as t

from .localcluster import (
    ControlPlaneError,
    LocalCluster,
    control_plane_bin_dir,
    free_port,
    stop_process,
)

REPO = pathlib.Path(__file__).resolve().parents[2]
PROFILE_NAME = "this-host"


def enforce_command(plan: list[dict[str, t.Any]]) -> str:
    """The command that makes the profile change this host (not run by the demo): Enforce, and
    where a step waits for a drain, the drain allowed (the operator cordons the node and evicts
    its VM pods first)."""
    spec: dict[str, t.Any] = {"mode": "Enforce"}
    if any(step["disruption"] == "NeedsDrain" for step in plan):
        spec["rollout"] = {"allowDrain": True}
    return (f"kubectl patch hvp {PROFILE_NAME} --type merge -p "
            f"'{json.dumps({'spec': spec}, separators=(',', ':'))}'")


class DemoError(RuntimeError):
    pass


class Demo:
    def __init__(self, cluster: LocalCluster, bin_dir: pathlib.Path, logs: pathlib.Path) -> None:
        self.cluster = cluster
        self.kubectl_bin = str(bin_dir / "kubectl")
        self.logs = logs
        self.env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
        self.procs: list[subprocess.Popen[bytes]] = []

    def kubectl(self, *args: str, stdin: str | None = None, show: bool = True) -> str:
        if show:
            print(f"$ kubectl {' '.join(args)}", flush=True)
        done = subprocess.run(
            [self.kubectl_bin, *args], env=self.env, input=stdin, capture_output=True, text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise DemoError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
        if show and done.stdout.strip():
            print(done.stdout.rstrip(), flush=True)
        return done.stdout

    def kvtune(self, *args: str) -> None:
        """Run a short kvtune command, shown as a person would type it."""
        print(f"$ kvtune {' '.join(args)}", flush=True)
        done = subprocess.run([sys.executable, "-m", "kvtune_cli.main", *args], env=self.env,
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise DemoError(f"kvtune {' '.join(args)} failed: {done.stderr.strip()}")

    def spawn(self, name: str, *args: str) -> None:
        log = self.logs / f"{name}.log"
        print(f"$ kvtune {' '.join(args)}   # log: {log}", flush=True)
        with log.open("wb") as out:
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "kvtune_cli.main", *args], env=self.env,
                stdout=out, stderr=subprocess.STDOUT,
            ))

    def stop(self) -> None:
        for proc in reversed(self.procs):  # all asked at once, so they stop side by side
            proc.terminate()
        for proc in self.procs:
            stop_process(proc, timeout=10)

    def get(self, *what: str) -> dict[str, t.Any]:
        out: dict[str, t.Any] = json.loads(self.kubectl("get", *what, "-o", "json", show=False))
        return out

    def wait(self, what: str, check: t.Callable[[], bool], timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if check():
                    return
            except DemoError:
                pass
            if time.monotonic() > deadline:
                raise DemoError(f"{what} did not happen within {timeout:.0f} s; see {self.logs}")
            for proc in self.procs:
                if proc.poll() is not None:
                    raise DemoError(f"a kvtune process exited early; see {self.logs}")
            time.sleep(0.5)


def run_demo(once: bool = False) -> int:
    node = socket.gethostname()
    try:
        bin_dir = control_plane_bin_dir(REPO)
        started = time.monotonic()
        with LocalCluster.start(bin_dir) as cluster:
            print(f"control plane up at {cluster.server} in {time.monotonic() - started:.1f} s")
            logs = pathlib.Path(tempfile.mkdtemp(prefix="kvtune-demo-"))
            demo = Demo(cluster, bin_dir, logs)
            try:
                metrics = _show(demo, node)
                if not once:
                    print(f"\nexport KUBECONFIG={cluster.kubeconfig}  # and use {demo.kubectl_bin}")
                    for name, port in metrics.items():
                        print(f"curl http://127.0.0.1:{port}/metrics  # the {name}'s metrics")
                    print("Press Ctrl-C to stop the demo (the control plane is thrown away).")
                    while all(p.poll() is None for p in demo.procs):
                        time.sleep(1)
            except KeyboardInterrupt:
                pass
            finally:
                demo.stop()
    except (ControlPlaneError, DemoError) as err:
        print(f"demo failed: {err}", file=sys.stderr)
        return 1
    return 0


def _settled(profile: dict[str, t.Any]) -> bool:
    """The profile's roll-up describes its spec and the node's report: every matched node is
    ready, degraded, waiting, or differs (Audit: Enforce would change it)."""
    status = profile.get("status", {})
    if not (status.get("matchedNodes", 0) > 0
            and status.get("observedGeneration") == profile["metadata"]["generation"]):
        return False
    done = sum(status.get(k, 0)
               for k in ("readyNodes", "degradedNodes", "waitingNodes", "differingNodes"))
    return bool(done == status["matchedNodes"])


def _conditions(title: str, conditions: list[dict[str, t.Any]]) -> None:
    print(title)
    for c in conditions:
        print(f"  {c['type']:<18} {c['status']:<7} {c['reason']}: {c.get('message', '')}")


def _show(demo: Demo, node: str) -> dict[str, int]:
    """Run the demo's steps and show the result; returns the metrics port of each process."""
    demo.kubectl("apply", "-k", str(REPO / "crds"))
    demo.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    # There is no kubelet here: this machine is registered as a Node by hand.
    node_manifest = json.dumps({"apiVersion": "v1", "kind": "Node", "metadata": {
        "name": node, "labels": {"kubernetes.io/hostname": node, "kubernetes.io/os": "linux"}}})
    demo.kubectl("apply", "-f", "-", stdin=node_manifest)
    # Free ports on loopback, so that a demo runs beside anything else on this machine.
    metrics = {"operator": free_port(), "webhook": free_port(), "agent": free_port()}
    demo.spawn("operator", "operator", "--standalone", *_metrics_flags(metrics["operator"]))
    # The VMI webhook, configured for this control plane (no KubeVirt here, so no VMI reaches it).
    demo.spawn("webhook", "webhook", "--port", str(free_port()),
               *_metrics_flags(metrics["webhook"]))
    demo.spawn("agent", "agent", "--node", node, "--root", "/", "--interval", "10",
               *_metrics_flags(metrics["agent"]))
    # The profile: proposed from this host's own probe (read-only), as a newcomer would.
    profile = demo.logs / f"{PROFILE_NAME}.yaml"
    demo.kvtune("profile", "suggest", "--name", PROFILE_NAME, "--output", str(profile))
    print(profile.read_text().rstrip(), flush=True)
    demo.kubectl("apply", "-f", str(profile))
    demo.wait("the node agent's first report", lambda: bool(
        demo.get("hvns", node).get("status", {}).get("observedGeneration")))
    demo.wait("the profile's roll-up of that report", lambda: _settled(
        demo.get("hvp", PROFILE_NAME)))
    print()
    demo.kubectl("get", "hvp,hvns", "-o", "wide")
    state = demo.get("hvns", node)
    status = state.get("status", {})
    _conditions(f"\nNode {node}: conditions reported by its agent", status.get("conditions", []))
    plan = status.get("plan", [])
    print(f"\nWhat Enforce would change on this host ({len(plan)} step(s); Audit changed nothing):")
    for step in plan:
        print(f"  [{step['disruption']}] {step['path']}: {step['current']} -> {step['desired']}")
        print(textwrap.fill(step["reason"], 100, initial_indent="      why: ",
                            subsequent_indent="      "))
    rolled = demo.get("hvp", PROFILE_NAME).get("status", {})
    _conditions(f"\nProfile {PROFILE_NAME}: conditions rolled up by the operator",
                rolled.get("conditions", []))
    print("\nTo let kvtune make these changes on this host for real (the demo does not"
          + (", and the NeedsDrain steps need the node drained first" if "allowDrain" in
             enforce_command(plan) else "") + f"):\n  {enforce_command(plan)}")
    return metrics


def _metrics_flags(port: int) -> tuple[str, ...]:
    return ("--metrics-address", "127.0.0.1", "--metrics-port", str(port))
