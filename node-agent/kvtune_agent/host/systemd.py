"""Starting, stopping, enabling and disabling a systemd unit on the host, from the agent's pod.

numad and ksmtuned are host daemons; only the host's systemd can stop them for good (a killed
process is restarted, a removed `.wants/` link is not a stopped daemon). The agent reaches that
systemd by entering PID 1's namespaces with nsenter (it runs privileged with hostPID), so its image
needs no D-Bus client. The command prefix is a parameter: tests run a fake `systemctl` script that
changes a test tree the way the real one changes a host.

Each call has a deadline and every failure is a `SystemdError` naming the unit and what to do;
a host without systemd is `unsupported`, a result rather than a crash.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from .hostfs import run_bounded

#: Enter the host's mount, UTS, IPC, network and PID namespaces of PID 1 (needs hostPID and
#: privileges), so that `systemctl` talks to the host's systemd over its private socket.
NSENTER = ("nsenter", "--target", "1", "--mount", "--uts", "--ipc", "--net", "--pid", "--")
HOST_SYSTEMCTL = (*NSENTER, "systemctl")
#: What systemctl prints when PID 1 is not systemd (or its bus is unreachable).
_NO_SYSTEMD = ("has not been booted with systemd", "Failed to connect to bus")
#: `is-enabled` answers that mean the unit starts at boot.
_ENABLED = frozenset({"enabled", "enabled-runtime"})
#: Every other unit file state `is-enabled` prints (systemctl(1)); anything else is an error
#: message (a bus timeout, access denied) or garbage, which says nothing about the unit.
_NOT_ENABLED = frozenset({"linked", "linked-runtime", "alias", "masked", "masked-runtime",
                          "static", "indirect", "disabled", "generated", "transient", "bad"})
#: The active states `is-active` prints; only "active" (with exit 0) means it runs.
_ACTIVE_STATES = frozenset({"active", "reloading", "refreshing", "inactive", "failed",
                            "activating", "deactivating", "maintenance"})


class SystemdError(Exception):
    """A systemctl call failed; `unsupported` when the host has no systemd to talk to."""

    def __init__(self, message: str, *, unsupported: bool = False) -> None:
        super().__init__(message)
        self.unsupported = unsupported


@dataclass(frozen=True)
class UnitState:
    """Whether a unit starts at boot and whether it runs now, written "enabled,active"."""

    enabled: bool
    active: bool

    def __str__(self) -> str:
        return (f"{'enabled' if self.enabled else 'disabled'},"
                f"{'active' if self.active else 'inactive'}")

    @classmethod
    def parse(cls, text: str) -> UnitState:
        enabled, _, active = text.partition(",")
        if enabled not in ("enabled", "disabled") or active not in ("active", "inactive"):
            raise ValueError(f"not a unit state: {text!r} (expected e.g. 'disabled,inactive')")
        return cls(enabled == "enabled", active == "active")


class Systemd:
    """The host's systemd, reached by running `command` (nsenter + systemctl by default)."""

    def __init__(self, command: Sequence[str] = HOST_SYSTEMCTL) -> None:
        self.command = tuple(command)

    def _run(self, verb: str, unit: str, timeout: float) -> tuple[int, str]:
        """(exit code, output) of `systemctl <verb> <unit>`."""
        argv = [*self.command, verb, unit]
        try:
            code, output = run_bounded(argv, timeout)
        except OSError as err:
            raise SystemdError(
                f"cannot run {argv[0]} ({err.strerror or err}) to reach the host's systemd; "
                "the agent image needs nsenter (util-linux)", unsupported=True) from err
        except subprocess.TimeoutExpired:
            raise SystemdError(
                f"systemctl {verb} {unit} did not finish within {timeout:g} s; check "
                f"`systemctl status {unit}` on the host") from None
        if any(marker in output for marker in _NO_SYSTEMD):
            raise SystemdError(
                f"the host does not run systemd ({output.splitlines()[0]}), so kvtune cannot "
                f"manage {unit}; set the profile's setting for it to Unmanaged", unsupported=True)
        if "nsenter:" in output:
            raise SystemdError(
                f"cannot enter the host's namespaces to run systemctl {verb} {unit} ({output}); "
                "run the agent privileged with hostPID: true")
        return code, output

    def state(self, unit: str, *, timeout: float) -> UnitState:
        """Whether `unit` is enabled and active, as the host's systemd says."""
        code, output = self._run("is-enabled", unit, timeout)
        if code != 0 and ("No such file" in output or output == "not-found"):
            raise SystemdError(f"{unit} is not installed on the host")
        enabled = _answer(output, _ENABLED | _NOT_ENABLED, "is-enabled", unit)
        code, output = self._run("is-active", unit, timeout)
        active = _answer(output, _ACTIVE_STATES, "is-active", unit)
        return UnitState(enabled=enabled in _ENABLED, active=code == 0 and active == "active")

    def set_state(self, unit: str, want: UnitState, *, timeout: float) -> UnitState:
        """Move `unit` to `want` (stop/disable or enable/start), then check; returns the old state.

        Stopping comes before disabling and enabling before starting, so that a failure half
        way leaves the unit no worse than the admin's own `systemctl disable --now` would.
        """
        before = self.state(unit, timeout=timeout)
        verbs = [
            ("stop", before.active and not want.active),
            ("disable", before.enabled and not want.enabled),
            ("enable", want.enabled and not before.enabled),
            ("start", want.active and not before.active),
        ]
        for verb, needed in verbs:
            if not needed:
                continue
            code, output = self._run(verb, unit, timeout)
            if code != 0:
                raise SystemdError(
                    f"systemctl {verb} {unit} failed (exit {code}): {output or 'no output'}; "
                    f"see `systemctl status {unit}` on the host")
        after = self.state(unit, timeout=timeout)
        if after != want:
            raise SystemdError(
                f"{unit} is {after} after systemctl, not {want}: something else (a dependency, "
                "a timer, another agent) changes it; see `systemctl status` on the host")
        return before

    def restart(self, unit: str, *, timeout: float) -> None:
        """Restart `unit` (the kubelet, to take a new configuration); raises SystemdError."""
        code, output = self._run("restart", unit, timeout)
        if code != 0:
            raise SystemdError(
                f"systemctl restart {unit} failed (exit {code}): {output or 'no output'}; see "
                f"`systemctl status {unit}` and `journalctl -u {unit}` on the host")


def _answer(output: str, states: frozenset[str], verb: str, unit: str) -> str:
    """The state `systemctl <verb> <unit>` printed (its last line); raises SystemdError when it
    printed none: a query that fails means unknown, never disabled or inactive, which would
    be journaled as the admin's own state and restored on revert."""
    answer = output.splitlines()[-1].strip() if output else ""
    if answer not in states:
        raise SystemdError(
            f"systemctl {verb} {unit} answered {output[:200]!r}, not a unit state, so whether "
            f"{unit} is enabled and running is unknown and it is left as it is; check "
            f"`systemctl status {unit}` on the host")
    return answer
