"""What the node agent's probe found on a host (placeholder until the probe lands)."""

from __future__ import annotations

from .common import BaseModel


class HostReport(BaseModel):
    """The full probe of one host."""
