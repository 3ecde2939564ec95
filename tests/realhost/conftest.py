"""The real-host tier: the agent against this machine's own kernel, block devices and libvirt.

Why: every other host test runs on trees we wrote and a kernel we imitate (hosttree.KernelFS);
those agree with our beliefs. Here the real kernel is the oracle. The tier needs root and
/dev/kvm and is skipped, with the reason, where either is missing; where both exist it is
required: a missing tool fails its tests with the remedy (`make setup`), it does not skip.

Every test that changes a kernel value takes `tunables`, which reads every tunable the tier may
touch before the test and requires each to read back exactly afterwards, whatever the test's
outcome; a value that does not is restored and fails the test. Runs of the tier from several
checkouts on one machine take turns (`host_lock`): they share one kernel.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.realhost import LOCK, RecordingFS, guarded_tunables, why_not_here

from .netns import Network


@pytest.fixture(scope="session", autouse=True)
def host_lock() -> Iterator[None]:
    """One realhost run at a time on this machine (other checkouts share its kernel)."""
    if why_not_here() is not None:
        yield
        return
    os.makedirs(os.path.dirname(LOCK), exist_ok=True)
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@pytest.fixture
def tunables() -> Iterator[RecordingFS]:
    """The real host's `/` as a recording HostFS; every tunable must read back as before."""
    with guarded_tunables() as fs:
        yield fs


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Network]:
    """Links and pods on the real kernel, all deleted afterwards (see netns.py)."""
    made = Network(tmp_path)
    try:
        yield made
    finally:
        made.close()
