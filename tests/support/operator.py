"""Running the operator in a thread of the test process, with `Settings` of the test's choice.

Why not `kopf.testing.KopfRunner`: it runs kopf's command line, which has no way to hand the
operator its `Settings` (they travel in kopf's memo, as `kvtune operator` passes them). This runs
`kopf.run` the way `kvtune operator` does, with a stop flag, and re-raises what the operator died
of when it stops.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import kopf
import kvtune_operator.controller.handlers  # noqa: F401  (registers the handlers)
from kvtune_operator.common.kube import api_client
from kvtune_operator.controller.kube import Kube
from kvtune_operator.controller.settings import Settings

from support.inthread import STOP_TIMEOUT, join, kubeconfig_env


@contextlib.contextmanager
def running_operator(settings: Settings, kubeconfig: Path) -> Iterator[None]:
    """The operator runs (standalone, cluster-wide) for the duration of the `with` block."""
    stop, ready = threading.Event(), threading.Event()
    died: list[BaseException] = []

    def run() -> None:
        memo = kopf.Memo(settings=settings, kube=Kube(api_client()))
        try:
            kopf.run(clusterwide=True, standalone=True, memo=memo, stop_flag=stop,
                     ready_flag=ready)
        except BaseException as e:  # handed to the test's thread below
            died.append(e)

    with kubeconfig_env(kubeconfig):
        thread = threading.Thread(target=run, name="kvtune-operator", daemon=True)
        thread.start()
        try:
            yield
        finally:
            # Stopping kopf while it still starts up can fail its shutdown (a root task times
            # out).
            ready.wait(STOP_TIMEOUT)
            stop.set()
            thread.join(STOP_TIMEOUT)
    join(thread, died, "operator")
