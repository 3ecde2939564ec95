"""Memory: the memory section of the probe (meminfo, hugepage pools, THP), and the two features
that change it, hugepages (with their boot-time half) and transparent hugepages."""

from __future__ import annotations

from .hugepages import FEATURE as HUGEPAGES
from .thp import FEATURE as THP

__all__ = ["HUGEPAGES", "THP"]
