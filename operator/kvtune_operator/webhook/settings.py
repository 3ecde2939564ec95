"""The settings of the webhook: one typed object, every field with its unit, default and reason
(`kvtune webhook` builds its options from them)."""

from __future__ import annotations

import dataclasses
import pathlib
import typing as t


@dataclasses.dataclass(frozen=True)
class WebhookSettings:
    """`kvtune webhook`: the VMI admission webhook, a process of its own.

    Why apart from the operator: the webhook must answer from every replica at once (the
    apiserver spreads calls over the Service's endpoints), while the operator works from one
    replica at a time (kopf peering pauses the others, and a paused kopf stops filling the
    indexes an answer is made from). The webhook only reads the cluster, so any number of its
    replicas run side by side."""

    port: int = 9443
    """TCP port the webhook listens on (default 9443: unprivileged, kopf's and controller-runtime's
    customary port); 0 picks a free one (tests)."""

    host: str = "127.0.0.1"
    """Where the apiserver reaches the webhook when no Service is named: the host of the URL in
    the webhook configurations and the address listened on (default 127.0.0.1, for a webhook run
    beside a local apiserver, as in the tests and the demo)."""

    service: str | None = None
    """`namespace/name` of the Service in front of the webhook pods, in a cluster (default none).
    When set, the configurations name the Service (port 443) instead of a URL, because the
    apiserver resolves Services itself but usually cannot resolve `*.svc` names through DNS;
    the webhook then listens on all interfaces, and a generated certificate names the Service."""

    cert_dir: pathlib.Path | None = None
    """Directory holding `tls.crt`, `tls.key` and `ca.crt` from outside, e.g. a cert-manager
    Secret mounted there; reread every `tls_refresh_seconds`, so a renewal needs no restart.
    Takes precedence over `tls_secret`."""

    tls_secret: str | None = None
    """`namespace/name` of the Secret in which the replicas share a CA and serving certificate
    that the webhook makes itself (the shipped Deployment's choice): the first replica creates
    it, every replica serves from it, and the one that finds the certificate near its end renews
    it under the same CA, so the caBundle in the configurations never changes. Without this and
    without `cert_dir`, a CA is generated in memory for this process alone (local runs)."""

    tls_refresh_seconds: float = 300.0
    """How often the TLS material is reread from `cert_dir` or `tls_secret` (default 5 min); a
    changed certificate is served to new connections at once."""

    failure_policy: t.Literal["Fail", "Ignore"] = "Ignore"
    """What the apiserver does with a VMI when the webhook cannot answer (default Ignore: admit
    it unshaped). The configurations cannot follow the profiles' namespace selectors, so they
    cover every namespace but the excluded ones: with Fail, a webhook outage would block VMI
    creation cluster-wide, including namespaces no profile selects. Choose Fail when a VMI must
    never start unshaped (it then waits, or its VM controller retries, until the webhook is back);
    kvtune leaves its configurations in place when it stops, so Fail also covers restarts."""

    timeout_seconds: int = 10
    """How long the apiserver waits for each webhook call (default 10 s, Kubernetes' own default;
    it allows 1 to 30). One answer takes about a millisecond, but calls queue on a replica's
    single event loop in a burst, and a call that times out is a VMI refused (Fail) or admitted
    unshaped (Ignore). A hung webhook delays each VMI by up to twice this (two webhooks)."""

    max_concurrent_reviews: int = 8
    """AdmissionReviews read, decoded and answered at once (default 8); more wait their turn
    with their bodies still in the socket. A review may carry a 4 MiB VMI, which takes about ten
    times that once decoded: unbounded, 128 such calls at once took 931 MiB, past the shipped
    512Mi limit, and an OOM-killed webhook lets VMIs through unshaped under failurePolicy Ignore.
    A decision takes about a millisecond, so waiting costs a burst little."""

    idle_timeout_seconds: float = 10.0
    """How long a connection may go without a request being read or answered (default 10 s, the
    apiserver's own call timeout): a TLS handshake, a request's headers and its body must each
    arrive within it, and an idle keep-alive connection is closed after one to two of it (the
    apiserver reconnects). A half-open or slow client then holds a connection for seconds, not
    for ever."""

    max_connections: int = 256
    """Connections served at once (default 256, far above what an apiserver opens); beyond it a
    new connection is closed at once, so that no number of clients exhausts the process."""

    excluded_namespaces: tuple[str, ...] = ("kube-system", "kube-public", "kube-node-lease")
    """Namespaces whose VMIs never reach the webhook (default: Kubernetes' own). kvtune's own
    (`namespace`) is added when known, as is any namespace labelled `kvtune.io/skip: "true"`."""

    namespace: str | None = None
    """The webhook's namespace, kept away from the webhook (default: $POD_NAMESPACE, set from the
    downward API in the shipped Deployment)."""
