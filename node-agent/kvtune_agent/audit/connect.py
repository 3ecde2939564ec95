"""Asking a libvirt daemon what runs, read-only, within a deadline, and closing the connection.

The agent must never change a VM, so connections are opened with `libvirt.openReadOnly` (the
daemon then refuses every call that would). libvirt's own calls have no deadline, and a launcher
whose daemon hangs must not stall the audit of the others, so each daemon is asked on a worker
thread that the audit stops waiting for after `timeout`; a thread that is left behind finishes
on its own and closes its connection then.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import libvirt

from .domains import Domain, read_domain

#: Opens a libvirt connection for a URI; injectable so tests can use `test:///` URIs.
Connect = Callable[[str], Any]
#: Seconds to wait for one libvirt daemon (connect, list, read every domain).
DEFAULT_TIMEOUT = 10.0
#: The running domains of one daemon by name: their facts, or why they could not be read.
Listing = dict[str, Domain | str]


class Unreachable(Exception):
    """A libvirt daemon could not be asked; the message says which and why."""


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


def _message(err: BaseException) -> str:
    if isinstance(err, libvirt.libvirtError):
        return str(err.get_error_message() or err)
    return f"{type(err).__name__}: {err}"


def read_domains(
    uri: str, connect: Connect = open_read_only, timeout: float = DEFAULT_TIMEOUT
) -> Listing:
    """Every running domain behind `uri` by name: its facts, or why they could not be read.

    Raises Unreachable when the daemon cannot be reached or does not answer within `timeout`.
    """
    outcome: list[Listing | BaseException] = []

    def ask() -> None:
        try:
            outcome.append(_read(uri, connect))
        except Exception as err:  # reported to the caller, whatever it is
            outcome.append(err)

    worker = threading.Thread(target=ask, name=f"libvirt {uri}", daemon=True)
    worker.start()
    worker.join(timeout)
    if not outcome:
        raise Unreachable(f"libvirt at {uri} did not answer within {timeout:g}s")
    result = outcome[0]
    if isinstance(result, BaseException):
        raise Unreachable(f"libvirt at {uri}: {_message(result)}") from result
    return result
