"""Running `kvtune webhook` in a thread of the test process, as `support.operator` does for the
operator: the same `serve` the command runs, with a stop flag, re-raising what it died of."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

from kvtune_operator.common.kube import api_client
from kvtune_operator.webhook.handlers import serve
from kvtune_operator.webhook.kube import Kube
from kvtune_operator.webhook.settings import WebhookSettings

from support.inthread import STOP_TIMEOUT, join, kubeconfig_env

LISTEN_TIMEOUT = 60.0


@contextlib.contextmanager
def running_webhook(settings: WebhookSettings, kubeconfig: Path) -> Iterator[str]:
    """The webhook serves for the duration of the `with` block; yields its URL once it listens
    and has published its configurations."""
    stop, listening = threading.Event(), threading.Event()
    urls: list[str] = []
    died: list[BaseException] = []

    def heard(url: str) -> None:
        urls.append(url)
        listening.set()

    def run() -> None:
        try:
            asyncio.run(serve(settings, Kube(api_client()), stop_flag=stop, listening=heard))
        except BaseException as e:  # handed to the test's thread below
            died.append(e)
        finally:
            listening.set()

    with kubeconfig_env(kubeconfig):
        thread = threading.Thread(target=run, name="kvtune-webhook", daemon=True)
        thread.start()
        try:
            listening.wait(LISTEN_TIMEOUT)
            if died:
                raise died[0]
            if not urls:
                raise RuntimeError(f"the webhook did not listen within {LISTEN_TIMEOUT:.0f} s")
            yield urls[0]
        finally:
            stop.set()
            thread.join(STOP_TIMEOUT)
    join(thread, died, "webhook")
