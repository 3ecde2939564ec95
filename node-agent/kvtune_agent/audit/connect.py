"""Asking a libvirt daemon what runs, read-only, within a deadline, and closing the connection.

The agent must never change a VM, so connections are opened with `libvirt.openReadOnly` (the
daemon then refuses every call that would). libvirt's own calls have no deadline, and a launcher
whose daemon hangs (any pod can pose as one) must not stall the audit of the others, so daemons
are asked on worker threads, a few at once, that the audit stops waiting for after `timeout`, and
the whole audit stops asking after `budget`; a thread left behind finishes on its own and closes
its connection then, and the agent keeps only so many of them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import libvirt

from .domains import Domain, read_domain

#: Opens a libvirt connection for a URI; injectable so tests can use `test:///` URIs.
Connect = Callable[[str], Any]
#: Seconds to wait for one libvirt daemon (connect, list, read every domain).
DEFAULT_TIMEOUT = 10.0
#: Seconds the whole audit waits for all daemons together; those not asked by then are not.
DEFAULT_BUDGET = 30.0
#: Daemons asked at once.
PARALLEL = 8
#: libvirt calls still running after their timeout that the agent keeps at most (each a thread
#: that ends only when its daemon answers or hangs up); past that no daemon is asked.
MAX_LEFT_BEHIND = 32
_LEFT_BEHIND = threading.BoundedSemaphore(MAX_LEFT_BEHIND)
#: The running domains of one daemon by name: their facts, or why they could not be read.
Listing = dict[str, Domain | str]
#: What asking one daemon gave: its running domains, or why it could not be asked.
Answer = Listing | str


def _ignore_error(_context: Any, _error: Any) -> None:
    """libvirt's default handler prints every error to stderr; they are raised and reported."""


def open_read_only(uri: str) -> Any:
    """A read-only connection to `uri`."""
    libvirt.registerErrorHandler(_ignore_error, None)
    return libvirt.openReadOnly(uri)


def _read(uri: str, connect: Connect) -> Listing:
    conn = connect(uri)
    try:
        found: Listing = {}
        for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            # One domain that cannot be read must not hide the others behind a host-level URI.
            try:
                found[dom.name()] = read_domain(dom)
            except (libvirt.libvirtError, ValueError) as err:
                found[dom.name()] = f"its domain could not be read: {_message(err)}"
        return found
    finally:
        conn.close()


#: Characters of a daemon's error message kept: a launcher's daemon is any pod's, and what it
#: says is copied into status.
MAX_MESSAGE = 200


def _message(err: BaseException) -> str:
    if isinstance(err, libvirt.libvirtError):
        text = str(err.get_error_message() or err)
    else:
        text = f"{type(err).__name__}: {err}"
    return text if len(text) <= MAX_MESSAGE else f"{text[:MAX_MESSAGE]}... (cut)"


class _Ask:
    """One daemon asked on its own thread, which holds a slot of `_LEFT_BEHIND` until libvirt
    returns (libvirt's calls cannot be interrupted, so the thread may outlive the audit)."""

    def __init__(self, uri: str, connect: Connect, slot: threading.Semaphore) -> None:
        self.uri, self.connect, self.slot = uri, connect, slot
        self.done = threading.Event()
        self.outcome: Listing | BaseException | None = None
        threading.Thread(target=self._run, name=f"libvirt {uri}", daemon=True).start()

    def _run(self) -> None:
        try:
            self.outcome = _read(self.uri, self.connect)
        except Exception as err:  # reported to the caller, whatever it is
            self.outcome = err
        finally:
            self.slot.release()
            self.done.set()

    def answer(self, until: float, timeout: float) -> Answer:
        if not self.done.wait(max(0.0, until - time.monotonic())) or self.outcome is None:
            return f"libvirt at {self.uri} did not answer within {timeout:g}s"
        if isinstance(self.outcome, BaseException):
            return f"libvirt at {self.uri}: {_message(self.outcome)}"
        return self.outcome


def _start(uri: str, connect: Connect) -> _Ask | str:
    slot = _LEFT_BEHIND
    if not slot.acquire(blocking=False):
        return (
            f"libvirt at {uri} was not asked: {MAX_LEFT_BEHIND} libvirt calls (of this audit or "
            "earlier ones) have still not returned (daemons that accept and never answer?)"
        )
    return _Ask(uri, connect, slot)


def ask_all(
    uris: Sequence[str],
    connect: Connect = open_read_only,
    timeout: float = DEFAULT_TIMEOUT,
    budget: float = DEFAULT_BUDGET,
) -> dict[str, Answer]:
    """What each libvirt daemon behind `uris` runs (see `Answer`), asking `PARALLEL` at once.

    Any pod can start a process that looks like a launcher with a socket that never answers, so
    neither one daemon (`timeout`) nor all of them (`budget`) may hold the audit longer; the
    daemons not asked when the budget is spent get that as their answer.
    """
    deadline = time.monotonic() + budget
    todo = list(dict.fromkeys(uris))
    answers: dict[str, Answer] = {}
    while todo and time.monotonic() < deadline:
        batch, todo = todo[:PARALLEL], todo[PARALLEL:]
        until = min(time.monotonic() + timeout, deadline)
        asks = [(uri, _start(uri, connect)) for uri in batch]
        for uri, ask in asks:
            answers[uri] = ask if isinstance(ask, str) else ask.answer(until, timeout)
    for uri in todo:
        answers[uri] = (
            f"libvirt at {uri} was not asked: the audit gives all {len(uris)} libvirt daemons "
            f"{budget:g}s together, and it was spent before {len(todo)} of them were asked"
        )
    return answers
