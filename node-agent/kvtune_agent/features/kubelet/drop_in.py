"""The kubelet feature: its CPU, memory and topology managers set for dedicated CPUs, on a
drained node, journaled, and taken back when the kubelet does not come back healthy.

What to write, and in which form, is decided in config.py (pure). This module reads
the little the probe does not (which systemd unit runs the kubelet, kvtune's own file), plans
the one NeedsDrain step, and carries it out: the original file is journaled, the file written,
the managers' checkpoints removed (a kubelet whose checkpoint names another policy or reserved
set refuses to start), the kubelet restarted and asked for its healthz. A kubelet that is not
healthy within READY_SECONDS gets its old file back (checkpoints removed again, restarted), and
the step fails with the kubelet's own error, so the node is Degraded rather than NotReady.

Host access only through HostFS (files, the journal, journalctl in the host root) and Systemd
(restart); the healthz call is a parameter (`Health`), the kubelet's port being in the host's
network namespace, not the agent's pod.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import typing as t
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kvtune_api.features import ConditionFeature
from kvtune_api.v1alpha1.host import KubeletReport, NumaNode

from ...host.hostfs import HostCommandError, HostFS, HostWriteError, run_bounded
from ...host.systemd import NSENTER, Systemd, SystemdError
from .. import kubelet_report
from ..base import Draft
from . import config
from . import probe as kubelet_probe

if t.TYPE_CHECKING:  # `kvtune probe` loads the features, and needs it not (test_probe_host.py)
    from kvtune_api.v1alpha1.profile import KubeletSettings

FEATURE: ConditionFeature = "Kubelet"
STEP_ID = "kubelet/config"
#: How long a restarted kubelet has to answer healthz: it reads its checkpoints, asks the
#: container runtime for every pod and rebuilds its managers, tens of seconds on a busy node.
READY_SECONDS = 120.0
#: How often healthz is asked meanwhile.
POLL_SECONDS = 2.0
#: The systemd units that run a node's kubelet, and the distribution each means.
UNITS: dict[str, config.Distribution] = {
    "kubelet.service": "kubelet",
    "k3s.service": "k3s", "k3s-agent.service": "k3s",
    "rke2-server.service": "rke2", "rke2-agent.service": "rke2",
}
#: The kubelet's healthz where its configuration leaves healthzBindAddress and healthzPort
#: at their defaults.
HEALTHZ_URL = "http://127.0.0.1:10248/healthz"
#: The kubelet's last words before it exits: `"command failed" err="..."` (cmd/kubelet run.go).
_FATAL = re.compile(r'"command failed" err="((?:[^"\\]|\\.)*)"')

#: Asks the kubelet's healthz; None when it answers ok, else what it answered or why not.
Health = Callable[[float], str | None]


@dataclass(frozen=True)
class Observed:
    """The kubelet as this feature sees it: the probe's report and what the probe does not
    read."""

    kubelet: KubeletReport
    #: The systemd unit whose cgroup holds the kubelet (None: none kvtune knows).
    unit: str | None
    distribution: config.Distribution
    #: kvtune's own files now (path -> content), those the renderings may write.
    files: dict[str, str | None]
    #: One of kvtune's files is newer than the running kubelet: written, but the kubelet was
    #: not restarted since (the agent stopped in between), so it does not run it yet.
    restart_pending: bool = False


def _unit(fs: HostFS, pid: int | None) -> str | None:
    if pid is None:
        return None
    for line in (fs.read_text(f"/proc/{pid}/cgroup") or "").splitlines():
        name = line.rpartition(":")[2].rstrip("/").rpartition("/")[2]
        if name in UNITS:
            return name
    return None


def _started(fs: HostFS, pid: int | None) -> float | None:
    """When the process started (seconds since the epoch): its starttime in /proc/<pid>/stat,
    clock ticks after the host's boot; None when unknown."""
    stat = fs.read_text(f"/proc/{pid}/stat") if pid is not None else None
    booted = fs.boot_time()
    fields = (stat or "").rpartition(")")[2].split()
    if booted is None or len(fields) < 20 or not fields[19].isdigit():
        return None
    return booted + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def observe(fs: HostFS, kubelet: KubeletReport) -> Observed:
    """Which unit runs the kubelet, which distribution that is, and kvtune's files now."""
    unit = _unit(fs, kubelet.pid)
    distribution: config.Distribution = UNITS[unit] if unit else "unknown"
    if kubelet.config_path == config.OPENSHIFT_CONFIG:
        distribution = "openshift"
    paths = [f"{config.k3s_config(kubelet)}.d/{config.K3S_DROP_IN_NAME}"]
    if kubelet.drop_in_dir:
        paths.append(f"{kubelet.drop_in_dir.rstrip('/')}/{config.DROP_IN_NAME}")
    started = _started(fs, kubelet.pid)
    written = [fs.modified(path) for path in paths if fs.has_file(path)]
    pending = started is not None and any(w is not None and w > started for w in written)
    return Observed(kubelet, unit, distribution, {path: fs.read_file(path) for path in paths},
                    pending)


# -- the plan ----------------------------------------------------------------------------------


def plan(
    settings: KubeletSettings,
    topology_policy: str | None,
    observed: Observed,
    nodes: Sequence[NumaNode],
    housekeeping: frozenset[int] | None,
    profile: str,
    out: Draft,
) -> None:
    """The step that brings the kubelet to `settings`, or the findings that say why not."""
    if settings.management == "Unmanaged":
        return
    kubelet = observed.kubelet
    if not kubelet_report.known(kubelet):
        out.warn(FEATURE, "KubeletConfigUnknown", (
            f"{config.FIELD}.management is {settings.management}, but the kubelet's "
            f"configuration is unknown ({kubelet.error or 'no kubelet process or config found'})"
            ", so nothing is written"))
        return
    try:
        want = config.wanted(settings, topology_policy, kubelet, nodes, housekeeping)
    except config.Refusal as err:
        out.error(FEATURE, "KubeletConfigRefused", str(err))
        return
    rendering = config.render(want, kubelet, observed.distribution, profile,
                              report_only=settings.management == "Report")
    if not rendering.changed:
        if observed.restart_pending and settings.management == "Enforce":
            _restart_step(observed, out)
        return
    changed = ", ".join(rendering.changed)
    if rendering.form == "Report":
        out.find(settings.management == "Enforce", FEATURE, "KubeletChangeByHand", (
            f"the kubelet runs with other {changed} than {config.FIELD} asks (it reads "
            f"{kubelet_report.read_from(kubelet)}); {rendering.content}; then remove "
            f"{' and '.join(rendering.state_files) or 'nothing'} and restart the kubelet on a "
            "drained node"))
        return
    assert rendering.path is not None
    out.step("file", STEP_ID, FEATURE, rendering.path, observed.files.get(rendering.path) or "",
             rendering.content, (
                 f"{config.FIELD} asks for other {changed} than the kubelet runs with; written "
                 f"as {'a drop-in' if rendering.form == 'DropIn' else 'kubelet-arg entries'}, "
                 f"then the managers' checkpoints removed and {observed.unit} restarted"),
             "NeedsDrain")


def _restart_step(observed: Observed, out: Draft) -> None:
    """The kubelet's files say what is wanted, but the kubelet started before kvtune wrote them:
    the same step again, whose write changes nothing and whose restart is what is missing."""
    path = next(p for p, text in observed.files.items() if text is not None)
    text = observed.files[path] or ""
    out.step("file", STEP_ID, FEATURE, path, text, text, (
        f"{path} was written after the kubelet started, which has not been restarted since "
        f"(kvtune stopped in between): restart {observed.unit} without the managers' "
        "checkpoints"), "NeedsDrain")


# -- carrying it out ---------------------------------------------------------------------------


def healthz(url: str = HEALTHZ_URL, prefix: Sequence[str] = (*NSENTER[:3], "--net", "--")
            ) -> Health:
    """The kubelet's healthz asked from the host's network namespace (the agent's pod has its
    own): the agent's own Python, entered into PID 1's network namespace only."""
    script = ("import sys, urllib.request\n"
              "try:\n"
              "    print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode()[:200])\n"
              "except Exception as err:\n"
              "    print(f'{type(err).__name__}: {err}'[:200])\n")

    def ask(timeout: float) -> str | None:
        try:
            _, output = run_bounded([*prefix, sys.executable, "-c", script, url], timeout)
        except (OSError, subprocess.TimeoutExpired) as err:
            return f"cannot ask {url} ({err})"
        return None if output.strip() == "ok" else (output.strip() or "no answer")
    return ask


def kubelet_error(log: str) -> str | None:
    """The kubelet's fatal error in its log (the last `"command failed" err=...`)."""
    found = _FATAL.findall(log)
    return found[-1].replace('\\"', '"') if found else None


def _journal_error(fs: HostFS, unit: str, since: float, timeout: float) -> str:
    journalctl = fs.executable("/usr/bin/journalctl", "/bin/journalctl")
    if journalctl is None:
        return f"the host has no journalctl to read {unit}'s log"
    try:
        result = fs.run([journalctl, "-u", unit, "--since", f"@{int(since)}", "-o", "cat",
                         "--no-pager", "-n", "400"], timeout=timeout)
    except HostCommandError as err:
        return f"its log could not be read ({err})"
    return kubelet_error(result.output) or f"see `journalctl -u {unit}` on the host"


def _wait_healthy(health: Health, seconds: float, sleep: Callable[[float], None]) -> str | None:
    deadline = time.monotonic() + seconds
    why: str | None = "not asked"
    while time.monotonic() < deadline:
        why = health(min(10.0, seconds))
        if why is None:
            return None
        sleep(POLL_SECONDS)
    return why


def _restart(fs: HostFS, systemd: Systemd, unit: str, files: Sequence[str], health: Health,
             timeout: float, ready_seconds: float, sleep: Callable[[float], None]) -> str | None:
    """Remove the checkpoints, restart the kubelet, wait for its healthz; None when healthy,
    else the kubelet's own error."""
    started = time.time()
    try:
        for path in files:
            fs.remove(path)
        systemd.restart(unit, timeout=timeout)
    except (HostWriteError, SystemdError) as err:
        return str(err)
    why = _wait_healthy(health, ready_seconds, sleep)
    if why is None:
        return None
    return f"{_journal_error(fs, unit, started - 1, timeout)} (healthz: {why})"


def settle(
    fs: HostFS, systemd: Systemd, path: str, health: Health, *, timeout: float,
    ready_seconds: float = READY_SECONDS, sleep: Callable[[float], None] = time.sleep,
) -> str | None:
    """Once `path` is written or restored: when it is one of kvtune's kubelet files, remove the
    managers' checkpoints, restart the unit that runs the kubelet and wait for its healthz.
    None when there was nothing to do or the kubelet is healthy; else why not, with the
    kubelet's own error. The unit is found afresh (a restart since the plan changes the pid)."""
    if path.rpartition("/")[2] not in (config.DROP_IN_NAME, config.K3S_DROP_IN_NAME):
        return None
    unit = _unit(fs, kubelet_probe.probe(fs, fs.processes()).pid)
    if unit is None:
        return (f"no kubelet runs in a systemd unit kvtune knows ({', '.join(UNITS)}), so it was "
                f"not restarted to take {path}; restart it by hand")
    return _restart(fs, systemd, unit, (config.CPU_STATE, config.MEMORY_STATE), health,
                    timeout, ready_seconds, sleep)


def hold_restore(path: str, approved: bool) -> str | None:
    """Why restoring kvtune's kubelet file must wait: it restarts the kubelet with other
    managers, which needs a drained node, as writing it did."""
    if approved or path.rpartition("/")[2] not in (config.DROP_IN_NAME,
                                                   config.K3S_DROP_IN_NAME):
        return None
    return ("restoring the kubelet's configuration restarts it with other CPU and memory "
            "managers: waiting for the node to be drained (spec.disruption.approved)")
