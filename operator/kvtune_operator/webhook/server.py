"""The webhook's HTTPS server: each AdmissionReview decoded, answered by `admission.review` from
the in-memory indexes, and sent back; plus the configurations published once it listens and the
TLS material reread while it runs.

Why aiohttp directly rather than kopf's admission handlers: under a burst of 200 VMI creations
the webhook is CPU-bound, and a profile of the earlier kopf-served webhook (py-spy, bench/
webhook_bench.py) put half of its event loop's time in kopf's per-request machinery (building
handler kwargs, running the handler through its retry and logging layers, copying the body and
diffing it into a JSON patch) and in the access log; the decision itself took a fifth. Here a
request costs one JSON decode, the decision, and one JSON encode: `mutate_vmi` already computes
its RFC 6902 patch, so nothing is diffed. kopf still keeps the indexes (`handlers.py`).

It listens only once the indexes hold the whole cluster: an answer from empty indexes would let
a VMI through unshaped. Until then the apiserver finds nothing listening and applies the
failurePolicy, as in any restart, and the pod is not ready.

It cannot be knocked over by its clients (docs/safety.md, "The webhook under load"): bodies are
bounded (MAX_REVIEW_BYTES) and so are the reviews decoded at once (`max_concurrent_reviews`);
TLS handshakes, requests and idle connections are timed out (`idle_timeout_seconds`, `_Guarded`)
and connections counted (`max_connections`); memory freed after a burst is handed back to the
system; and every answer is JSON: an AdmissionReview, or a 4xx/5xx Status for a body that is no
AdmissionReview (null, an array or a string as its request, a namespace that is no string, JSON
nested past what can be decoded, NaN).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import json
import logging
import os
import socket
import ssl
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from . import admission, configuration, metrics
from .kube import Kube
from .settings import WebhookSettings

log = logging.getLogger(__name__)

MAX_REVIEW_BYTES = 4 * 1024 * 1024
#: How long a connection that has answered requests may stay idle (seconds): above the 90 s
#: after which Go's HTTP client, the apiserver's, closes its idle connections itself.
KEEPALIVE_SECONDS = 120.0
#: A burst's freed memory is handed back to the system at most this often (seconds).
TRIM_INTERVAL = 5.0
_NOT_A_REVIEW = "expected an admission.k8s.io/v1 AdmissionReview"
#: Reads the VMI namespace's labels from the indexes; None when not indexed yet.
NamespaceLabels = Callable[[str], Mapping[str, str] | None]


class AdmissionServer:
    def __init__(
        self,
        settings: WebhookSettings,
        tls: configuration.TlsSource,
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
        self._gate = asyncio.Semaphore(settings.max_concurrent_reviews)
        self._connections: dict[asyncio.BaseTransport, _Guarded] = {}
        self._handshakes: set[asyncio.Task[None]] = set()
        self._in_flight = 0
        self._trimmed_at = 0.0

    async def serve(self, indexed: asyncio.Event) -> None:
        """Serve until cancelled, from when `indexed` is set."""
        # Read first, so that an unreadable Secret or mount stops the process at once.
        material = await asyncio.to_thread(self._tls.load)
        context = _ssl_context(material)
        await indexed.wait()
        # An AdmissionReview carries the whole VMI; the apiserver stores objects up to 1.5 MiB
        # (etcd's request limit), above aiohttp's default of 1 MiB per request body.
        app = web.Application(client_max_size=MAX_REVIEW_BYTES, middlewares=[self._guard])
        app.add_routes([
            web.post(f"/{configuration.MUTATE_ID}", self._mutate),
            web.post(f"/{configuration.VALIDATE_ID}", self._validate),
        ])
        # No access log: a line per call is a measurable share of a burst's CPU; the metrics
        # count and time every answer instead.
        # lingering_time=0: a refused body (too late, too large) is not read for another 10 s
        # after the answer, as aiohttp would; the connection closes.
        runner = web.AppRunner(app, access_log=None, lingering_time=0)
        await runner.setup()
        # Behind a Service the pod's address is not known in advance: listen everywhere.
        listen = "0.0.0.0" if self._settings.service else self._settings.host
        listener = socket.create_server((listen, self._settings.port), backlog=1024)
        listener.setblocking(False)
        accepting = asyncio.create_task(self._accept(listener, runner, context))
        try:
            port = listener.getsockname()[1]
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
            accepting.cancel()
            listener.close()
            await runner.cleanup()

    async def _accept(
        self, listener: socket.socket, runner: web.AppRunner, context: ssl.SSLContext
    ) -> None:
        """Accept connections while fewer than `max_connections` are open or shaking hands.

        Not `loop.create_server`: it accepts every connection at once and gives each, from its
        first byte, a 256 KiB TLS read buffer, so 2,400 clients that never finished a handshake
        or a request took 380 MiB. Here a connection beyond the limit waits in the kernel's
        listen queue, costing this process nothing, until one closes.
        """
        loop = asyncio.get_running_loop()
        slots = asyncio.Semaphore(self._settings.max_connections)
        handlers = runner.server
        assert handlers is not None  # set up before
        while True:
            await slots.acquire()
            try:
                conn, _ = await loop.sock_accept(listener)
            except OSError as err:  # e.g. out of file descriptors: try again shortly
                slots.release()
                log.warning("cannot accept a connection: %s", err)
                await asyncio.sleep(1)
                continue
            guarded = _Guarded(handlers(), self._connections, self._settings, slots.release)
            task = asyncio.create_task(self._connect(conn, guarded, context))
            self._handshakes.add(task)  # held, so that it is not collected while it runs
            task.add_done_callback(self._handshakes.discard)

    async def _connect(
        self, conn: socket.socket, guarded: _Guarded, context: ssl.SSLContext
    ) -> None:
        timeout = self._settings.idle_timeout_seconds
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                lambda: guarded, conn, ssl=context, ssl_handshake_timeout=timeout,
                ssl_shutdown_timeout=timeout)
        except (OSError, TimeoutError):  # ssl.SSLError is an OSError
            conn.close()
            guarded.release()

    async def _publish(self, url: str, material: configuration.TlsMaterial) -> None:
        owner = None
        if self._settings.namespace:
            owner = await asyncio.to_thread(self._kube.namespace_uid, self._settings.namespace)
        bodies = configuration.configurations(url, material.ca_pem, self._settings, owner)
        await asyncio.to_thread(self._kube.apply_webhook_configurations, bodies)

    async def _refresh(
        self, url: str, material: configuration.TlsMaterial, context: ssl.SSLContext
    ) -> configuration.TlsMaterial:
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

    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Every answer JSON, whatever went wrong; the connection marked busy meanwhile, so that
        its idle deadline spares a request waiting its turn or being answered."""
        guarded = self._connections.get(request.transport) if request.transport else None
        if guarded is not None:
            guarded.begin()
        try:
            return await handler(request)
        except web.HTTPException as refused:  # 404, 405, 413 from aiohttp itself
            return _status(refused.status, refused.reason)
        except Exception:
            log.exception("answering %s %s failed", request.method, request.path)
            return _status(500, "the kvtune webhook failed to answer; see its log")
        finally:
            if guarded is not None:
                guarded.busy -= 1
                guarded.served += 1

    async def _answer(self, operation: admission.Operation, request: web.Request) -> web.Response:
        if (request.content_length or 0) > MAX_REVIEW_BYTES:
            return _status(413, f"an AdmissionReview is at most {MAX_REVIEW_BYTES} bytes")
        async with self._gate:
            self._in_flight += 1
            try:
                return await self._decoded(operation, request)
            finally:
                self._in_flight -= 1
                if self._in_flight == 0:
                    self._trim()

    async def _decoded(
        self, operation: admission.Operation, request: web.Request
    ) -> web.Response:
        try:
            raw = await asyncio.wait_for(request.read(), self._settings.idle_timeout_seconds)
        except TimeoutError:
            late = _status(408, "the AdmissionReview did not arrive in time")
            late.force_close()  # the rest of the body may still come: not a request of its own
            return late
        try:
            review = json.loads(raw, parse_constant=_refuse_constant)
        except (ValueError, RecursionError):  # RecursionError: nested past what can be decoded
            return _status(400, f"{_NOT_A_REVIEW}: the body is not JSON")
        asked = review.get("request") if isinstance(review, dict) else None
        problem = _request_problem(asked)
        if problem:
            return _status(400, f"{_NOT_A_REVIEW}: {problem}")
        assert isinstance(asked, dict)  # _request_problem says so
        answer = await self.answer(operation, asked)
        return web.Response(body=json.dumps(answer).encode(), content_type="application/json")

    def _trim(self) -> None:
        """Hand the memory a burst freed back to the system (glibc keeps it otherwise)."""
        now = time.monotonic()
        if now - self._trimmed_at >= TRIM_INTERVAL:
            self._trimmed_at = now
            _malloc_trim()

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


def _status(code: int, message: str) -> web.Response:
    """A metav1.Status as the body of an error answer: JSON, as every answer is."""
    body = {"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": code,
            "message": message}
    return web.Response(status=code, body=json.dumps(body).encode(),
                        content_type="application/json")


def _refuse_constant(name: str) -> Any:
    # json.loads takes NaN and Infinity, which are not JSON, and json.dumps would echo them.
    raise ValueError(f"{name} is not JSON")


def _request_problem(asked: object) -> str:
    """What makes an AdmissionReview's `request` unanswerable; "" when nothing does."""
    if not isinstance(asked, dict):
        return f"its request is {type(asked).__name__}, not an object"
    for key in ("uid", "namespace", "operation"):
        if key in asked and not isinstance(asked[key], str):
            return f"request.{key} is {type(asked[key]).__name__}, not a string"
    if "object" in asked and not isinstance(asked["object"], dict | None):
        return f"request.object is {type(asked['object']).__name__}, not an object"
    return ""


def _malloc_trim() -> None:
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _libc() -> Any:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


_LIBC = _libc()


class _Guarded(asyncio.Protocol):
    """aiohttp's protocol for one connection, with the deadlines aiohttp does not keep.

    aiohttp times out neither a request's headers nor a connection that never sends one, so a
    client that opened a connection and went quiet held it for ever (1,200 of them, in a test).
    Every `idle_timeout_seconds` this checks that the connection answered a request since the
    last check, or is busy with one (`busy`, kept by the server's middleware). One that has not
    answered a single request is closed then; one that has is a keep-alive connection of the
    apiserver, closed only after KEEPALIVE_SECONDS without a request: longer than the
    apiserver's own idle timeout (Go's 90 s), so that the apiserver closes first and never sends
    a call down a connection this side is closing. That grace is for the quiet between requests
    only: bytes of a next request that do not become one (its headers trickling in) within a
    check are cut off as on a new connection, else one answered request bought a slow client
    minutes. `release` gives the connection's slot back to `AdmissionServer._accept` when it
    closes.
    """

    def __init__(
        self,
        inner: asyncio.Protocol,
        registry: dict[asyncio.BaseTransport, _Guarded],
        settings: WebhookSettings,
        on_closed: Callable[[], None],
    ) -> None:
        self._inner = inner
        self._registry = registry
        self._settings = settings
        self._on_closed: Callable[[], None] | None = on_closed
        self._transport: asyncio.BaseTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._seen = 0
        self._idle_since = 0.0
        #: When bytes began to arrive outside any request being answered: the beginning of a
        #: request not handed to the server yet (None: there is none).
        self._begun_at: float | None = None
        self.busy = 0
        self.served = 0

    def release(self) -> None:
        """Give the connection's slot back, once."""
        if self._on_closed is not None:
            self._on_closed()
            self._on_closed = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._registry[transport] = self
        self._inner.connection_made(transport)
        self._arm()

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._settings.idle_timeout_seconds, self._check)

    def _check(self) -> None:
        if self._transport is None:
            return
        now = time.monotonic()
        slow = self._begun_at is not None and (
            now - self._begun_at >= self._settings.idle_timeout_seconds)
        if not self.busy and slow:
            self._transport.abort()  # type: ignore[attr-defined]
            return
        if self.busy or self.served != self._seen:
            self._seen, self._idle_since = self.served, now
        elif self.served == 0 or now - self._idle_since >= KEEPALIVE_SECONDS:
            self._transport.abort()  # type: ignore[attr-defined]
            return
        self._arm()

    def begin(self) -> None:
        """A request was handed to the server: it is no longer a slow one's beginning."""
        self.busy += 1
        self._begun_at = None

    def data_received(self, data: bytes) -> None:
        if not self.busy and self._begun_at is None:
            self._begun_at = time.monotonic()
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.release()
        if self._timer is not None:
            self._timer.cancel()
        if self._transport is None:
            return
        self._registry.pop(self._transport, None)
        self._transport = None
        self._inner.connection_lost(exc)


def _ssl_context(material: configuration.TlsMaterial) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    _load_chain(context, material)
    return context


def _load_chain(context: ssl.SSLContext, material: configuration.TlsMaterial) -> None:
    # The ssl module loads certificates from files only: write them into a private directory
    # for as long as it takes, so the key never stays on disk.
    with tempfile.TemporaryDirectory(prefix="kvtune-tls-") as directory:
        cert, key = Path(directory, "tls.crt"), Path(directory, "tls.key")
        cert.write_bytes(material.cert_pem)
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(material.key_pem)
        context.load_cert_chain(cert, key)
