"""Finding the running KubeVirt VMs of this host in its /proc, and the libvirt that runs each one.

KubeVirt runs one libvirt daemon per VM, inside the VM's virt-launcher pod, so there is no host
libvirt to ask. Its virt-handler reaches each one through the launcher's root:
`/proc/<pid>/root/var/run/libvirt/virtqemud-sock` (`libvirt-sock` before modular daemons). The
agent does the same, reading /proc only through HostFS, so a test tree of fake pids stands in for
a host. The launcher is recognised in the host's process table (the probe pass's one read of
/proc, a `ProcessTable`) by its command line, which virt-controller renders as
`virt-launcher-monitor --qemu-timeout .. --name <vmi> --uid <uid> --namespace <ns> ...`; the
monitor starts `virt-launcher` with the same arguments, so both are seen and merged into one VM.

What libvirt alone cannot tell is also read here: the launcher's network namespace (a bridge of
the same name in two pods is two bridges) and the NUMA nodes its cgroup lets it allocate from.
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from . import cpulist
from .daemon import COMM_LEN, INTERPRETERS
from .hostfs import HostFS, Process, ProcessTable

#: Launcher executables (the monitor's comm is cut to 15 characters by the kernel).
LAUNCHERS = frozenset({"virt-launcher-monitor", "virt-launcher"})
#: The libvirt sockets inside a launcher's root, newest name first.
SOCKETS = ("/var/run/libvirt/virtqemud-sock", "/var/run/libvirt/libvirt-sock")
#: How KubeVirt names a VMI's domain: VMINamespaceKeyFunc joins namespace and name with "_".
DOMAIN_SEPARATOR = "_"
#: What Kubernetes allows as a namespace (a DNS-1123 label) and a VMI name (a DNS-1123
#: subdomain): anything else on a command line is no KubeVirt launcher's, and never reaches status.
NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
NAME = re.compile(r"(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


@dataclass(frozen=True)
class Launcher:
    """The virt-launcher of one VMI, as seen from the host."""

    pid: int
    name: str
    namespace: str
    uid: str
    #: Host path of its libvirt socket; None when neither socket name exists in its root.
    socket: str | None
    #: Its network namespace ("net:[4026532451]"); None when unreadable.
    netns: str | None
    #: NUMA nodes its cgroup allows memory from (Mems_allowed_list); None when unreadable.
    mems_allowed: frozenset[int] | None
    #: Set when processes of different pods claim this VM: which, and that none is trusted.
    conflict: str | None = None

    @property
    def domain(self) -> str:
        """The libvirt domain name KubeVirt gives the VMI."""
        return f"{self.namespace}{DOMAIN_SEPARATOR}{self.name}"


def _is_launcher(process: Process) -> bool:
    comm, argv = process.comm, process.argv
    if comm in {name[:COMM_LEN] for name in LAUNCHERS}:
        return True
    if not argv:
        return False
    # Distributions wrap the monitor in a script (`bash /usr/bin/virt-launcher-monitor ...`).
    program = argv[1] if comm in INTERPRETERS and len(argv) > 1 else argv[0]
    return os.path.basename(program) in LAUNCHERS


def _flags(argv: tuple[str, ...]) -> dict[str, str]:
    """`--flag value` and `--flag=value` pairs (Go's flag package takes both)."""
    flags: dict[str, str] = {}
    for index, arg in enumerate(argv):
        if not arg.startswith("--"):
            continue
        key, eq, value = arg[2:].partition("=")
        if eq:
            flags[key] = value
        elif index + 1 < len(argv):
            flags[key] = argv[index + 1]
    return flags


def _mems_allowed(fs: HostFS, pid: int) -> frozenset[int] | None:
    path = f"/proc/{pid}/status"
    for line in (fs.read_text(path) or "").splitlines():
        key, _, value = line.partition(":")
        if key == "Mems_allowed_list":
            try:
                return frozenset(cpulist.parse(value))
            except ValueError:
                fs.note(path, f"Mems_allowed_list is not a node list: {value.strip()[:40]!r}")
    return None


def _launcher(fs: HostFS, process: Process) -> Launcher | None:
    if not _is_launcher(process):
        return None
    pid, flags = process.pid, _flags(process.argv)
    name, namespace = flags.get("name", ""), flags.get("namespace", "")
    if not name or not namespace:
        fs.note(
            f"/proc/{pid}/cmdline",
            "a virt-launcher without --name and --namespace; not "
            "audited (a KubeVirt version kvtune does not know?)",
        )
        return None
    if not NAME.fullmatch(name) or not NAMESPACE.fullmatch(namespace):
        fs.note(
            f"/proc/{pid}/cmdline",
            f"a virt-launcher whose --namespace {namespace[:64]!r} or --name {name[:64]!r} "
            "no Kubernetes object can have; not audited (not KubeVirt's)",
        )
        return None
    return Launcher(
        pid=pid,
        name=name,
        namespace=namespace,
        uid=flags.get("uid", "")[:64],
        socket=_socket(fs, pid),
        netns=fs.readlink(f"/proc/{pid}/ns/net"),
        mems_allowed=_mems_allowed(fs, pid),
    )


def _socket(fs: HostFS, pid: int) -> str | None:
    """The host path of the launcher's libvirt socket with its links followed inside the
    launcher's root, if it is a socket there.

    The pod owns its root: a link there is followed by the kernel against the agent's own root
    when libvirt connects, so it is followed here within the pod's root instead and the result is
    what libvirt is given. A FIFO or a regular file there is refused before libvirt sees it (it
    would fail or wait on it); a socket that never answers is bounded by the audit's deadline.
    """
    root = f"/proc/{pid}/root"
    for name in SOCKETS:
        path = fs.in_root(root + name, base=root)
        try:
            mode = None if path is None else os.lstat(Path(fs.root, path.lstrip("/"))).st_mode
        except FileNotFoundError:
            if not fs.exists(root + name):  # absent, not a link leading nowhere in its root
                continue
            mode = None
        except OSError:
            mode = None
        if mode is not None and stat.S_ISSOCK(mode):
            return path
        fs.note(root + name, "not a socket inside the launcher's root; its libvirt is not asked")
        return None
    return None


def discover(fs: HostFS, processes: ProcessTable) -> list[Launcher]:
    """One launcher per running VMI among `processes`, by namespace and name; the lowest pid (the
    monitor) wins, since the monitor and the launcher it starts share the pod's root and
    namespaces. Only the launchers' own /proc entries are read here."""
    claims: dict[tuple[str, str], list[Launcher]] = {}
    for process in processes:
        launcher = _launcher(fs, process)
        if launcher is not None:
            claims.setdefault((launcher.namespace, launcher.name), []).append(launcher)
    return [_one(fs, claims[key]) for key in sorted(claims)]


def _one(fs: HostFS, claimants: list[Launcher]) -> Launcher:
    """The launcher of one VM among the processes claiming it (by their command line, which any
    pod can write): the monitor and its launcher share one pod, so one network and one mount
    namespace. Claimants from different pods (or whose namespaces cannot be read) are a conflict:
    none is trusted, and the VM is reported as such rather than audited from either."""
    first = claimants[0]
    pods = {(c.netns, fs.readlink(f"/proc/{c.pid}/ns/mnt")) for c in claimants}
    if len(pods) == 1 and None not in next(iter(pods)):
        return first
    if len(claimants) == 1:
        return first
    pids = ", ".join(str(c.pid) for c in claimants[:8])
    more = f" and {len(claimants) - 8} more" if len(claimants) > 8 else ""
    return dataclasses.replace(
        first,
        conflict=f"processes of different pods (pids {pids}{more}) claim to be the launcher of "
        f"{first.namespace}/{first.name}; none is trusted",
    )


def session_uri(fs: HostFS, socket: str) -> str:
    """The libvirt URI of a launcher's socket, as virt-handler uses it.

    libvirt opens the socket itself, so the URI carries the path as this process sees it (under
    the HostFS root, e.g. /proc/1/root/proc/<pid>/root/...), not the host path.
    """
    local = str(Path(fs.root, socket.lstrip("/")))
    return f"qemu+unix:///session?socket={urllib.parse.quote(local, safe='/')}"
