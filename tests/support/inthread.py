"""What `support.operator` and `support.webhook` share: running a kvtune process's main coroutine
in a thread of the test process, against the test cluster's kubeconfig."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

STOP_TIMEOUT = 60.0


@contextlib.contextmanager
def kubeconfig_env(kubeconfig: Path) -> Iterator[None]:
    """$KUBECONFIG names `kubeconfig` inside the block (read by kopf's login handler and by
    api_client()), and is restored after."""
    previous = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = str(kubeconfig)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = previous


def join(thread: threading.Thread, died: list[BaseException], what: str) -> None:
    """Wait for a stopped process thread; raise what it died of, or that it did not stop."""
    thread.join(STOP_TIMEOUT)
    if thread.is_alive():
        raise RuntimeError(f"the {what} did not stop within {STOP_TIMEOUT:.0f} s")
    if died:
        raise died[0]
