"""The operator's settings: one typed object, each field with its unit, default and reason."""

from __future__ import annotations

import dataclasses
import datetime
import pathlib
import secrets
import typing as t

#: The kopf peering object all replicas share.
PEERING_NAME = "kvtune-operator"


@dataclasses.dataclass(frozen=True)
class Settings:
    resync_seconds: float = 1.0
    """Seconds between two reconcile passes of a profile over the in-memory view (default 1).
    A pass that finds nothing to do makes no API request, so a short interval costs only CPU,
    and keeps a newly labelled node's state a second away."""

    peering_priority: int = dataclasses.field(default_factory=lambda: secrets.randbelow(2**30))
    """kopf peering priority of this replica (default: random). Replicas of equal priority all
    freeze (kopf's rule), so each replica draws its own: the highest works, the others wait, and
    take over when its peering record expires after a crash."""

    peering_lifetime_seconds: int = 60
    """Seconds a replica's peering record lives without renewal (default 60, kopf's): how long
    a crashed leader blocks the others. A replica that stops cleanly removes its record at once."""

    agent_image: str | None = None
    """Image of the node-agent DaemonSet the operator keeps in `namespace` (default: from
    $KVTUNE_AGENT_IMAGE, the operator's own image in the shipped Deployment; unset: no DaemonSet
    is managed, as when operator and agent run as local processes in tests and the demo)."""

    namespace: str | None = None
    """The operator's namespace, for the agent DaemonSet (default: $POD_NAMESPACE, set from the
    downward API in the shipped Deployment)."""

    write_concurrency: int = 16
    """API writes in flight at once during a pass (default 16). A first converge writes two
    objects per node; one at a time, 5,000 nodes would take minutes of round trips. Writes to
    one node stay in order (cordon before evict)."""

    revert_timeout: datetime.timedelta = datetime.timedelta(minutes=10)
    """How long a node that left its profile may take to restore its host (default 10 min).
    After that its state is deleted anyway (a dead node must not block a profile's deletion);
    its agent reverts by itself if it ever finds its state gone."""

    webhook: bool = True
    """Serve the VMI admission webhook (default on). Off (`--no-webhook`) also deletes kvtune's
    webhook configurations at startup, so that no VMI creation waits on a webhook nobody serves."""

    webhook_port: int = 9443
    """TCP port the webhook listens on (default 9443: unprivileged, kopf's and controller-runtime's
    customary port)."""

    webhook_host: str = "127.0.0.1"
    """Where the apiserver reaches the webhook when no Service is named: the host of the URL in
    the webhook configurations and the address listened on (default 127.0.0.1, for an operator
    run beside a local apiserver, as in the tests and the demo)."""

    webhook_service: str | None = None
    """`namespace/name` of the Service in front of the operator, in a cluster (default none).
    When set, the configurations name the Service (port 443) instead of a URL, because the
    apiserver resolves Services itself but usually cannot resolve `*.svc` names through DNS;
    the webhook then listens on all interfaces, and a generated certificate names the Service."""

    webhook_cert_dir: pathlib.Path | None = None
    """Directory holding `tls.crt`, `tls.key` and `ca.crt`, the keys of a kubernetes.io/tls
    Secret mounted there (cert-manager writes all three). When none of them exists, a CA and a
    serving certificate valid for one year are generated into it. Default: a private temporary
    directory, removed at exit, so every run generates anew. kopf rereads the files every 60 s
    and the operator republishes the CA, so a renewed Secret needs no restart."""

    webhook_failure_policy: t.Literal["Fail", "Ignore"] = "Ignore"
    """What the apiserver does with a VMI when the webhook cannot answer (default Ignore: admit
    it unshaped). The configurations cannot follow the profiles' namespace selectors, so they
    cover every namespace but the excluded ones: with Fail, an operator outage would block VMI
    creation cluster-wide, including namespaces no profile selects. Choose Fail when a VMI must
    never start unshaped (it then waits, or its VM controller retries, until the webhook is back);
    kvtune leaves its configurations in place when it stops, so Fail also covers restarts."""

    webhook_timeout_seconds: int = 10
    """How long the apiserver waits for each webhook call (default 10 s, Kubernetes' own default;
    it allows 1 to 30). One answer takes a few milliseconds, but a burst of VMIs queues on the
    operator's single process: 200 VMIs created at once on a busy 2-CPU machine took up to 5 s
    per call (bench/webhook_bench.py), and a call that times out is a VMI refused (Fail) or
    admitted unshaped (Ignore). A hung operator delays each VMI by up to twice this (two
    webhooks)."""

    webhook_excluded_namespaces: tuple[str, ...] = ("kube-system", "kube-public", "kube-node-lease")
    """Namespaces whose VMIs never reach the webhook (default: Kubernetes' own). The operator's
    own (`namespace`) is added when known, as is any namespace labelled `kvtune.io/skip: "true"`."""
