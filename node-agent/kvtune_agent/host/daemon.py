"""Whether a host daemon runs and how systemd is set to start it, without calling systemctl.

numad and ksmtuned both change VM memory behind the kubelet's back. The agent must not depend on
systemd's D-Bus or binaries inside its image, so the answer comes from the processes' comm and
command line (the probe pass's one read of /proc, a `ProcessTable`) and the unit files and
`.wants/` links systemctl itself consults.
"""

from __future__ import annotations

import os

from kvtune_api.v1alpha1.host import DaemonReport, UnitState

from .hostfs import HostFS, ProcessTable

#: Admin and runtime directories first: a unit there overrides (or masks) the packaged one.
UNIT_DIRS = (
    "/etc/systemd/system", "/run/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system",
)
#: A script started as `bash /usr/sbin/ksmtuned` shows the interpreter as its comm.
INTERPRETERS = frozenset({"sh", "bash", "dash", "python", "python3", "perl"})
#: The kernel truncates comm to 15 characters.
COMM_LEN = 15


def _pids(processes: ProcessTable, name: str) -> list[int]:
    return [
        process.pid for process in processes
        if process.comm == name[:COMM_LEN] or (
            process.comm in INTERPRETERS
            and any(os.path.basename(arg) == name for arg in process.argv[1:3]))
    ]


def probe(fs: HostFS, processes: ProcessTable, name: str) -> DaemonReport:
    """The process (from the pass's `processes`) and unit state of the daemon `name` (also its
    unit's name)."""
    unit = f"{name}.service"
    unit_path = next((f"{d}/{unit}" for d in UNIT_DIRS if fs.exists(f"{d}/{unit}")), None)
    wanted_by = [
        os.path.basename(os.path.dirname(link)).removesuffix(".wants")
        for link in fs.glob(f"/etc/systemd/system/*.wants/{unit}")
    ]
    state: UnitState
    if unit_path is not None and fs.readlink(unit_path) == "/dev/null":
        state = "Masked"
    elif unit_path is None:
        state = "NotInstalled"
    else:
        state = "Enabled" if wanted_by else "Disabled"
    pids = _pids(processes, name)
    return DaemonReport(
        name=name, running=bool(pids), pids=pids[:16], unit=state, unit_path=unit_path,
        wanted_by=wanted_by[:16],
    )
