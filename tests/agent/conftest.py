"""Fixtures shared by the agent's tests."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def short_root() -> Iterator[Path]:
    """A host root with a short path: a unix socket path must fit in 108 bytes."""
    root = Path(tempfile.mkdtemp(prefix="kva", dir="/tmp"))
    yield root
    shutil.rmtree(root)
