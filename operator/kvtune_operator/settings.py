"""The operator's settings: one typed object, each field with its unit, default and reason."""

from __future__ import annotations

import dataclasses
import datetime


@dataclasses.dataclass(frozen=True)
class Settings:
    resync_seconds: float = 1.0
    """Seconds between two reconcile passes of a profile over the in-memory view (default 1).
    A pass that finds nothing to do makes no API request, so a short interval costs only CPU,
    and keeps a newly labelled node's state a second away."""

    revert_timeout: datetime.timedelta = datetime.timedelta(minutes=10)
    """How long a node that left its profile may take to restore its host (default 10 min).
    After that its state is deleted anyway (a dead node must not block a profile's deletion);
    its agent reverts by itself if it ever finds its state gone."""
