"""The webhook's HTTPS server: each AdmissionReview decoded, answered by `admission.review` from
the in-memory indexes, and sent back; plus the configurations published once it listens and the
TLS material reread while it runs.

Why aiohttp directly rather than kopf's admission handlers: under a burst of 200 VMI creations
the webhook is CPU-bound, and a profile of the earlier kopf-served webhook (py-spy, bench/
webhook_bench.py) put half of its event loop's time in kopf's per-request machinery (building
handler kwargs, running the handler through its retry and logging layers, copying the body and
diffing it into a JSON patch) and in the access log; the decision itself took a fifth. Here a
request costs one JSON decode, the decision, and one JSON encode: `mutate_vmi` already computes
its RFC 6902 patch, so nothing is diffed. kopf still keeps the indexes (`webhook_handlers.py`).

It listens only once the indexes hold the whole cluster: an answer from empty indexes would let
a VMI through unshaped. Until then the apiserver finds nothing listening and applies the
failurePolicy, as in any restart, and the pod is not ready.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import ssl
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from . import admission, metrics, webhook
from .kube import Kube
from .settings import WebhookSettings

log = logging.getLogger(__name__)

MAX_REVIEW_BYTES = 4 * 1024 * 1024
#: Reads the VMI namespace's labels from the indexes; None when not indexed yet.
NamespaceLabels = Callable[[str], Mapping[str, str] | None]


class AdmissionServer:
    def __init__(
        self,
        settings: WebhookSettings,
        tls: webhook.TlsSource,
        kube: Kube,
        view: Callable[[], admission.ClusterView],
        namespace_labels: NamespaceLabels,
        listening: Callable[[str], None] | None = None,
    ) -> None:
        self._settings = settings
        self._tls = tls
        self._kube = kube
        self._view = view
        self._namespace_labels = namespace_labels
        self._listening = listening

    async def serve(self, indexed: asyncio.Event) -> None:
        """Serve until cancelled, from when `indexed` is set."""
        # Read first, so that an unreadable Secret or mount stops the process at once.
        material = await asyncio.to_thread(self._tls.load)
        context = _ssl_context(material)
        await indexed.wait()
        # An AdmissionReview carries the whole VMI; the apiserver stores objects up to 1.5 MiB
        # (etcd's request limit), above aiohttp's default of 1 MiB per request body.
        app = web.Application(client_max_size=MAX_REVIEW_BYTES)
        app.add_routes([
            web.post(f"/{webhook.MUTATE_ID}", self._mutate),
            web.post(f"/{webhook.VALIDATE_ID}", self._validate),
        ])
        # No access log: a line per call is a measurable share of a burst's CPU; the metrics
        # count and time every answer instead.
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            # Behind a Service the pod's address is not known in advance: listen everywhere.
            listen = "0.0.0.0" if self._settings.service else self._settings.host
            site = web.TCPSite(runner, listen, self._settings.port, ssl_context=context)
            await site.start()
            port = runner.addresses[0][1]
            url = f"https://{self._settings.host}:{port}"
            log.info("webhook listening on %s:%s", listen, port)
            await self._publish(url, material)
            # Everything loaded so far (kopf, the API client, pydantic's models, the indexes)
            # lives as long as the process: out of the cyclic GC's sight, a full collection
            # during a burst of admissions no longer walks it all.
            gc.freeze()
            if self._listening is not None:
                self._listening(url)
            while True:
                await asyncio.sleep(self._settings.tls_refresh_seconds)
                material = await self._refresh(url, material, context)
        finally:
            await runner.cleanup()

    async def _publish(self, url: str, material: webhook.TlsMaterial) -> None:
        owner = None
        if self._settings.namespace:
            owner = await asyncio.to_thread(self._kube.namespace_uid, self._settings.namespace)
        bodies = webhook.configurations(url, material.ca_pem, self._settings, owner)
        await asyncio.to_thread(self._kube.apply_webhook_configurations, bodies)

    async def _refresh(
        self, url: str, material: webhook.TlsMaterial, context: ssl.SSLContext
    ) -> webhook.TlsMaterial:
        try:
            fresh = await asyncio.to_thread(self._tls.load)
        except Exception as err:  # keep serving what works; the next refresh tries again
            log.warning("cannot reread the webhook TLS material, serving the current one: %s", err)
            return material
        if fresh != material:
            _load_chain(context, fresh)  # new connections get the new certificate
            log.info("webhook TLS material changed; serving the new certificate")
            if fresh.ca_pem != material.ca_pem:
                await self._publish(url, fresh)
        return fresh

    async def _mutate(self, request: web.Request) -> web.Response:
        return await self._answer("mutate", request)

    async def _validate(self, request: web.Request) -> web.Response:
        return await self._answer("validate", request)

    async def _answer(self, operation: admission.Operation, request: web.Request) -> web.Response:
        try:
            review = json.loads(await request.read())
            asked = review["request"]
        except (ValueError, KeyError, TypeError):
            return web.Response(status=400, text="expected an admission.k8s.io/v1 AdmissionReview")
        answer = await self.answer(operation, asked)
        return web.Response(body=json.dumps(answer).encode(), content_type="application/json")

    async def answer(
        self, operation: admission.Operation, asked: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The AdmissionReview answering an AdmissionReview's `request`, counted and timed."""
        with metrics.admission(operation) as decided:
            namespace = asked.get("namespace") or ""
            labels = self._namespace_labels(namespace)
            if labels is None:  # created a moment ago: the watch has not delivered it yet
                labels = await asyncio.to_thread(self._kube.namespace_labels, namespace)
            answer, decided.result = admission.review(operation, self._view(), asked, labels)
        return answer


def _ssl_context(material: webhook.TlsMaterial) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    _load_chain(context, material)
    return context


def _load_chain(context: ssl.SSLContext, material: webhook.TlsMaterial) -> None:
    # The ssl module loads certificates from files only: write them into a private directory
    # for as long as it takes, so the key never stays on disk.
    with tempfile.TemporaryDirectory(prefix="kvtune-tls-") as directory:
        cert, key = Path(directory, "tls.crt"), Path(directory, "tls.key")
        cert.write_bytes(material.cert_pem)
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(material.key_pem)
        context.load_cert_chain(cert, key)
