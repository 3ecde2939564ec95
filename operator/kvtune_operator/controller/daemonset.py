"""The node agent's DaemonSet, as the operator creates and updates it.

Why the operator renders it instead of `deploy/` shipping it: the agent must run the operator's
own image (one version across both halves) and only on nodes some profile selected, which the
operator knows. A pure function keeps every decision below testable without a cluster, and
lets the tests dry-run the exact object on a real API server.

Decisions, each with its reason:

- Runs on nodes labelled `kvtune.io/profile` (any value) or `kvtune.io/journal` (two node
  selector terms, which Kubernetes ORs). The operator sets the profile label when a profile takes
  a node and removes it once the node's host was restored, or after the revert timed out (a node
  that is down). The agent sets the journal label before it first writes to its host or its
  Node and removes it only once its state is gone and nothing kvtune wrote is left. So a node
  whose agent was down when it left its profile still runs an agent when it comes back, which
  restores it, and no agent is ever removed while it still has something to undo.
- Tolerates every taint by default. Hypervisor nodes are often tainted for VMs only, and the
  agent must keep running on a cordoned node, because drain-gated steps are applied exactly
  while the node is cordoned (the DaemonSet controller adds the unschedulable and not-ready
  tolerations itself, but not custom taints such as `dedicated=kubevirt:NoSchedule`).
- hostPID and privileged: the agent reads and writes the host through `/proc/1/root` (sysfs,
  procfs, systemd units), which needs the host's PID namespace and full capabilities. It runs as
  root on purpose; the image's default user is not root.
- No priority class by default: a critical class lets the scheduler preempt a running VM to fit a
  100Mi agent onto a full node. Clusters that keep room for system pods can pass one.
- No CPU limit: throttling a probe only makes it slower; the request keeps it scheduled fairly.
- No liveness probe: the agent's only HTTP endpoint is /metrics, served from its own thread, so
  it answers while the agent's loop hangs; a probe of it would add nothing to the kubelet's own
  restart of a crashed process. A hung agent shows as a HypervisorNodeState whose status stops
  following its spec (the profile's status reports it), and as a stale
  `kvtune_agent_last_successful_cycle_timestamp_seconds`.
- Metrics on container port 9101 named `metrics`, with the `prometheus.io/*` pod annotations
  that annotation-based scrape configs read (docs/metrics.md; a PodMonitor can select the port
  by name). Pod network, not hostNetwork, so the port never clashes with the host's.
- terminationGracePeriodSeconds 60: SIGTERM lets the running cycle finish (each host write is
  bounded by a 10 s timeout), so a rollout never leaves a half-written change such as a partly
  created set of SR-IOV VFs; long enough for a few bounded writes, short enough for a drain.
- RollingUpdate with maxUnavailable 10%: restarting an agent disturbs no VM, so large clusters
  roll quickly, while a broken image that crash-loops stops the rollout after 10% of the nodes.
"""

from __future__ import annotations

import dataclasses
import typing as t
from collections.abc import Mapping, Sequence

from kvtune_api.labels import JOURNAL_LABEL

from ..common.profiles import PROFILE_LABEL

NAME = "kvtune-agent"
SERVICE_ACCOUNT = "kvtune-agent"
#: Where the agent sees the host: PID 1's root, through hostPID.
HOST_ROOT = "/proc/1/root"
#: Where the agent serves /metrics (`kvtune agent --metrics-port`).
METRICS_PORT = 9101
LABELS: Mapping[str, str] = {
    "app.kubernetes.io/name": NAME,
    "app.kubernetes.io/part-of": "kvtune",
    "app.kubernetes.io/managed-by": "kvtune-operator",
}
#: Immutable once the DaemonSet exists: keep it to the one label that names the agent.
SELECTOR: Mapping[str, str] = {"app.kubernetes.io/name": NAME}
TOLERATE_EVERYTHING: tuple[Mapping[str, str], ...] = ({"operator": "Exists"},)


@dataclasses.dataclass(frozen=True)
class AgentResources:
    """The agent container's requests and limits, as Kubernetes quantities."""

    cpu_request: str = "50m"
    """Default 50m: a probe cycle every 30 s costs a few hundred milliseconds of one CPU."""

    memory_request: str = "96Mi"
    """Default 96Mi: Python, the Kubernetes client and the models take ~60 MiB after import;
    the rest holds one host report."""

    memory_limit: str = "256Mi"
    """Default 256Mi: a bound on a leak, well above a cycle's peak, so it is never OOM-killed
    in normal work."""

    def as_dict(self) -> dict[str, dict[str, str]]:
        return {
            "requests": {"cpu": self.cpu_request, "memory": self.memory_request},
            "limits": {"memory": self.memory_limit},
        }


def render_agent_daemonset(
    namespace: str,
    image: str,
    *,
    tolerations: Sequence[Mapping[str, t.Any]] = TOLERATE_EVERYTHING,
    resources: AgentResources = AgentResources(),
    priority_class_name: str | None = None,
) -> dict[str, t.Any]:
    """The agent DaemonSet in `namespace` running `image` (the operator's own image)."""
    pod_spec: dict[str, t.Any] = {
        "serviceAccountName": SERVICE_ACCOUNT,
        "hostPID": True,
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": label, "operator": "Exists"}]}
                        for label in (PROFILE_LABEL, JOURNAL_LABEL)
                    ]
                }
            }
        },
        "tolerations": [dict(toleration) for toleration in tolerations],
        "terminationGracePeriodSeconds": 60,
        "containers": [_container(image, resources)],
        # Python and libvirt may want a scratch directory; the root filesystem is read-only.
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
    }
    if priority_class_name is not None:
        pod_spec["priorityClassName"] = priority_class_name
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": NAME, "namespace": namespace, "labels": dict(LABELS)},
        "spec": {
            "selector": {"matchLabels": dict(SELECTOR)},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%"}},
            "template": {
                "metadata": {"labels": dict(LABELS), "annotations": _scrape(METRICS_PORT)},
                "spec": pod_spec,
            },
        },
    }


def _container(image: str, resources: AgentResources) -> dict[str, t.Any]:
    return {
        "name": "agent",
        "image": image,
        # The image's entrypoint is `kvtune`; $(NODE_NAME) is expanded by the kubelet.
        "args": ["agent", "--node", "$(NODE_NAME)", "--root", HOST_ROOT,
                 "--metrics-port", str(METRICS_PORT)],
        "env": [
            {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "HOME", "value": "/tmp"},
        ],
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT}],
        "resources": resources.as_dict(),
        "securityContext": {
            "privileged": True,
            "runAsUser": 0,
            "runAsGroup": 0,
            "readOnlyRootFilesystem": True,
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }


def _scrape(port: int) -> dict[str, str]:
    """The annotations that Prometheus configs based on pod annotations scrape by."""
    return {"prometheus.io/scrape": "true", "prometheus.io/port": str(port),
            "prometheus.io/path": "/metrics"}
