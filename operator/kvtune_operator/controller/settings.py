"""The settings of the operator: one typed object, every field with its unit, default and reason
(`kvtune operator` builds its options from them)."""

from __future__ import annotations

import dataclasses
import datetime

#: The kopf peering object all replicas share.
PEERING_NAME = "kvtune-operator"


def _random_priority() -> int:
    # secrets (hashlib, OpenSSL) is imported here, not with the module: every `kvtune` command
    # builds its argument parser from these settings' defaults, `kvtune probe` too.
    import secrets

    return secrets.randbelow(2**30)


@dataclasses.dataclass(frozen=True)
class Settings:
    resync_seconds: float = 1.0
    """Seconds between two reconcile passes of a profile over the in-memory view (default 1).
    A pass that finds nothing to do makes no API request, so a short interval costs only CPU,
    and keeps a newly labelled node's state a second away."""

    peering_priority: int = dataclasses.field(default_factory=_random_priority)
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
    its agent reverts by itself when it finds its state gone (the node's `kvtune.io/journal`
    label, which only the agent removes, keeps an agent on it until then)."""
