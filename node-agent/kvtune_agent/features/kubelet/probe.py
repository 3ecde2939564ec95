"""The kubelet's resource-manager settings, read as the running kubelet reads them.

KubeVirt's dedicated CPUs need the static CPU manager, and NUMA-local VMs need the topology and
memory managers; kvtune does not rewrite the kubelet's configuration, so it reads what is set
and reports the gaps. The kubelet takes its settings from the file its --config flag names, then
the *.conf files under its --config-dir in lexical order (maps merged key by key, lists and
values replaced), then its command-line flags, which override both (kubernetes.io: "Kubelet
Configuration Directory Merging", "Set Kubelet Parameters Via A Configuration File"). So the
running kubelet's command line says where to look; without a kubelet process, the usual paths
of the distributions are read:

- kubeadm: /var/lib/kubelet/config.yaml (its /etc/kubernetes/kubelet.conf is a kubeconfig);
- OpenShift: /etc/kubernetes/kubelet.conf, a KubeletConfiguration;
- k3s and RKE2 (v1.32 and later): the drop-in directory under /var/lib/rancher/<dist>/agent/etc.

k3s runs the kubelet inside the k3s process, which passes it each `kubelet-arg`: first those of
k3s's own configuration file (K3S_CONFIG_FILE, else its --config/-c flag, else
/etc/rancher/k3s/config.yaml) and of the *.yaml/*.yml drop-ins in `<that file>.d` in name order,
a later file replacing a key unless the key ends in `+` (then appending), and then its
--kubelet-arg flags (k3s's pkg/configfilearg). RKE2 starts the kubelet as a process of its own,
with all those arguments on its command line, so its kubelet is read like any other.

Nothing found means "unknown", not an error: not every host is a Kubernetes node.

Any pod can start a process named kubelet or k3s, so a name alone is not trusted: a process in
a pod's cgroup (kubepods) is never the node's kubelet; of the candidates outside pods, the one
in the cgroup of a kubelet's systemd unit (kubelet.service, k3s, RKE2, MicroK8s) is it, and
otherwise two make the kubelet unknown rather than the lower pid winning. The kubelet's paths
are its own: they are read through its root (/proc/<pid>/root) where that can be entered, else
inside the host root, every link resolved there, never in the agent's container. Its files are
read as hostile: a regular file, size-capped, under a deadline, YAML aliases bounded
(HostFS.read_yaml); what they hold never goes into a message, since status is readable across
the cluster.
"""

from __future__ import annotations

import dataclasses
import os
import typing as t

import pydantic
from kvtune_api.v1alpha1.host import KubeletReport, Problem, ReservedMemory

from ...host.hostfs import HostFS, Process, ProcessTable, UnusableFile
from ...host.paths import CONFIG_PATHS
from ..kubelet_report import known, read_from

#: Drop-in directories k3s and RKE2 always pass as --config-dir, by the process that runs them.
DROP_IN_DIRS = {
    "k3s": "/var/lib/rancher/k3s/agent/etc/kubelet.conf.d",
    "rke2": "/var/lib/rancher/rke2/agent/etc/kubelet.conf.d",
}
KIND = "KubeletConfiguration"
#: k3s's configuration file when neither K3S_CONFIG_FILE nor --config names one.
K3S_CONFIG = "/etc/rancher/k3s/config.yaml"
#: The origin of a kubelet flag given as a `kubelet-arg` in one of k3s's configuration files.
K3S_FILE_ORIGIN = "kubelet-arg in "
#: The origin of a kubelet flag given as --kubelet-arg on k3s's command line.
K3S_FLAG_ORIGIN = "--kubelet-arg"
#: Most flags and drop-in files listed in the report (KubeletReport's bounds).
MAX_LISTED = 32
#: Most drop-in files read from a --config-dir: the kubelet reads all, kvtune refuses more.
MAX_DROP_INS = 256
#: The cgroup of every pod's processes: under it, a process named kubelet is a pod's.
POD_CGROUP = "kubepods"
#: The systemd units that run a node's kubelet: kubeadm's and the distributions' packages,
#: k3s (server, agent), RKE2 (whose kubelet is a child of rke2 in its unit) and MicroK8s.
KUBELET_UNITS = frozenset({"kubelet.service", "k3s.service", "k3s-agent.service",
                           "rke2-server.service", "rke2-agent.service",
                           "snap.microk8s.daemon-kubelite.service"})
#: Policy settings as (KubeletConfiguration key, report field, the kubelet's default).
POLICIES = (
    ("cpuManagerPolicy", "cpu_manager_policy", "none"),
    ("topologyManagerPolicy", "topology_manager_policy", "none"),
    ("topologyManagerScope", "topology_manager_scope", "container"),
    ("memoryManagerPolicy", "memory_manager_policy", "None"),
)
#: The command-line flag of each setting read, and how its value is written there.
FLAGS: dict[str, tuple[str, t.Literal["value", "map", "eviction", "reserved-memory"]]] = {
    "cpuManagerPolicy": ("cpu-manager-policy", "value"),
    "cpuManagerPolicyOptions": ("cpu-manager-policy-options", "map"),
    "topologyManagerPolicy": ("topology-manager-policy", "value"),
    "topologyManagerScope": ("topology-manager-scope", "value"),
    "memoryManagerPolicy": ("memory-manager-policy", "value"),
    "reservedSystemCPUs": ("reserved-cpus", "value"),
    "systemReserved": ("system-reserved", "map"),
    "kubeReserved": ("kube-reserved", "map"),
    "evictionHard": ("eviction-hard", "eviction"),
    "reservedMemory": ("reserved-memory", "reserved-memory"),
}
_KEY_OF_FLAG = {flag: key for key, (flag, _) in FLAGS.items()}


# -- where the kubelet's configuration is ------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Kubelet:
    """The running kubelet: its process and its arguments, and where k3s gave each."""

    process: Process
    #: The kubelet's arguments, in the order given.
    args: list[str]
    #: For k3s, where each argument was given (K3S_FILE_ORIGIN + file, or K3S_FLAG_ORIGIN);
    #: empty for a kubelet process, whose arguments are all its own command line.
    given_in: list[str] = dataclasses.field(default_factory=list)
    #: The distribution's drop-in directory when the kubelet is run without --config-dir.
    default_drop_in_dir: str | None = None
    #: The k3s configuration files read for kubelet-args.
    arg_files: tuple[str, ...] = ()
    #: Where its paths are: its own root (/proc/<pid>/root), or "" for the host root.
    base: str = ""

    def origin(self, flag: str) -> str:
        """Where the flag was last given."""
        if not self.given_in:
            return f"--{flag}"
        last = max(i for i, arg in enumerate(self.args) if arg.partition("=")[0] == f"--{flag}")
        return self.given_in[last]


def _in_pod(fs: HostFS, pid: int) -> bool:
    """The process runs in a pod (its cgroup is under kubepods), or its cgroup cannot be read
    although the process is there: then it is not trusted either."""
    path = f"/proc/{pid}/cgroup"
    text = fs.read_text(path)
    if text is None:
        return fs.exists(path)
    return any(POD_CGROUP in line.partition(":")[2].partition(":")[2]
               for line in text.splitlines())


def _in_kubelet_unit(fs: HostFS, pid: int) -> bool:
    """The process runs in the cgroup of a systemd unit that starts a node's kubelet
    (KUBELET_UNITS): only the host's systemd (PID 1) places processes there."""
    text = fs.read_text(f"/proc/{pid}/cgroup") or ""
    return any(line.rpartition(":")[2].rstrip("/").rpartition("/")[2] in KUBELET_UNITS
               for line in text.splitlines())


def _base(fs: HostFS, pid: int) -> str:
    """The root a process's paths are in: its own /proc/<pid>/root where the agent can enter it
    (the kubelet may run in a root of its own, as in kind's node container), else the host
    root."""
    root = f"/proc/{pid}/root"
    return root if fs.is_dir(f"{root}/") and fs.list_dir(root) else ""


def _candidate(fs: HostFS, process: Process) -> _Kubelet | None:
    name = os.path.basename(process.argv[0]) if process.argv else ""
    if "kubelet" in (process.comm, name):  # RKE2's too: it passes --config-dir itself
        return _Kubelet(process, list(process.argv[1:]), base=_base(fs, process.pid))
    if name == "k3s" or (process.comm or "").startswith("k3s-"):
        argv = list(process.argv[1:])
        given = _values(argv, "kubelet-arg")
        if given or any(a in ("server", "agent") for a in argv[:2]):
            base = _base(fs, process.pid)
            files, from_files = _k3s_kubelet_args(fs, process, base)
            args = from_files + [(f"--{arg}", K3S_FLAG_ORIGIN) for arg in given]
            return _Kubelet(process, [arg for arg, _ in args], [where for _, where in args],
                            DROP_IN_DIRS["k3s"], files, base)
    return None


def _kubelet_process(fs: HostFS, processes: ProcessTable) -> _Kubelet | None:
    """The node's kubelet process; None when none runs. Raises _Unusable when /proc could not
    be read, or when more than one process outside pods looks like a kubelet."""
    if any(issue.path == "/proc" for issue in processes.issues):
        raise _Unusable("the host's processes (/proc) cannot be read, so which kubelet runs "
                        "and what it reserves is unknown; run the agent with hostPID")
    found = [process for process in processes
             if _candidate_name(process) and not _in_pod(fs, process.pid)]
    # Where one of them runs in the service unit that starts the node's kubelet, that one is
    # it: the others (in a container, a systemd-nspawn machine, a login session) cannot make
    # the kubelet unknown just by being there.
    in_unit = [process for process in found if _in_kubelet_unit(fs, process.pid)]
    if len(in_unit) == 1:
        found = in_unit
    if len(found) > 1:
        raise _Unusable(
            f"processes {', '.join(str(p.pid) for p in found[:8])} outside pods all look like "
            "the node's kubelet (or k3s), so which one runs the node is unknown; stop the ones "
            "that are not")
    return _candidate(fs, found[0]) if found else None


def _candidate_name(process: Process) -> bool:
    name = os.path.basename(process.argv[0]) if process.argv else ""
    return "kubelet" in (process.comm, name) or name == "k3s" or (
        process.comm or "").startswith("k3s-")


def _k3s_config_file(fs: HostFS, process: Process) -> str:
    """The configuration file k3s reads: K3S_CONFIG_FILE, else --config/-c, else the default."""
    environ = fs.read_text(f"/proc/{process.pid}/environ") or ""
    for entry in environ.split("\0"):
        name, _, value = entry.partition("=")
        if name == "K3S_CONFIG_FILE" and value:
            return value
    # -c is --config's short form.
    argv = [f"--config{arg[2:]}" if arg == "-c" or arg.startswith("-c=") else arg
            for arg in process.argv[1:]]
    return next(reversed(_values(argv, "config")), K3S_CONFIG)


def _k3s_kubelet_args(
    fs: HostFS, process: Process, base: str
) -> tuple[tuple[str, ...], list[tuple[str, str]]]:
    """The k3s configuration files present, and the kubelet-args they give, each with its file.

    A file that is not a YAML mapping stops k3s itself from starting, so it is an error here too.
    """
    config = _k3s_config_file(fs, process)
    directory = _in(fs, base, f"{config}.d")
    drop_ins = [f"{config}.d/{name}" for name in fs.list_dir(directory)
                if name.lower().endswith((".yaml", ".yml"))
                and not fs.is_dir(f"{directory}/{name}")]
    files = ([config] if fs.exists(_in(fs, base, config)) else []) + drop_ins[:MAX_DROP_INS]
    args: list[tuple[str, str]] = []
    for path in files:
        for key, value in _load(fs, path, "k3s configuration", base).items():
            if str(key).rstrip("+") != "kubelet-arg":
                continue
            values = value if isinstance(value, list) else [] if value is None else [value]
            given = [(f"--{item}", f"{K3S_FILE_ORIGIN}{path}") for item in values]
            args = args + given if str(key).endswith("+") else given
    return tuple(files), args


def _values(args: list[str], flag: str) -> list[str]:
    """Every value given to --flag (one that takes a value), in order, as `--flag=value` or
    `--flag value`."""
    found = []
    for index, arg in enumerate(args):
        name, equals, value = arg.partition("=")
        if name != f"--{flag}":
            continue
        if equals:
            found.append(value)
        elif index + 1 < len(args):
            found.append(args[index + 1])
    return found


def _parse_flag(kind: str, values: list[str]) -> t.Any:
    """A flag's value as the KubeletConfiguration field it overrides."""
    if kind == "value":
        return values[-1]
    if kind == "reserved-memory":  # 0:memory=1Gi,hugepages-1Gi=2Gi;1:memory=2Gi, repeatable
        entries = []
        for value in values:
            for entry in filter(None, value.split(";")):
                node, _, limits = entry.partition(":")
                entries.append({"numaNode": node.strip(), "limits": _pairs(limits, "=")})
        return entries
    return _pairs(values[-1], "<" if kind == "eviction" else "=")


def _pairs(text: str, separator: str) -> dict[str, str]:
    pairs = (item.partition(separator) for item in text.split(",") if item.strip())
    return {key.strip(): value.strip() for key, _, value in pairs}


# -- reading and merging the files -------------------------------------------------------------


class _Unusable(Exception):
    """A file of the configuration cannot be used; the message names it and what is wrong."""


def _in(fs: HostFS, base: str, path: str) -> str:
    """The host path of `path` as the process whose root is `base` sees it, its links
    resolved there (unresolvable: the path as it is, which then reads as absent)."""
    return fs.in_root(base + path, base) or base + path


def _load(fs: HostFS, path: str, kind: str = KIND, base: str = "") -> dict[str, t.Any]:
    try:
        config = fs.read_yaml(base + path, base=base)
    except UnusableFile as err:
        raise _Unusable(str(err).replace(base + path, path, 1)) from err
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise _Unusable(f"{path} is not a {kind} mapping")
    return config


def _merge(into: dict[str, t.Any], config: dict[str, t.Any], origins: dict[str, str],
           source: str) -> None:
    """Merge a drop-in as the kubelet does: maps key by key, anything else replaced."""
    for key, value in config.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            into[key] = {**into[key], **value}
        else:
            into[key] = value
        if key in FLAGS:
            origins[key] = source


def _drop_ins(fs: HostFS, directory: str, base: str = "") -> list[str]:
    """The directory's *.conf files, walked in lexical order as the kubelet walks it (Go's
    filepath.WalkDir: a link to a directory is not entered, so links cannot loop the walk).
    Raises _Unusable beyond MAX_DROP_INS files."""
    found: list[str] = []

    def walk(here: str) -> None:
        real = _in(fs, base, here)
        for name in fs.list_dir(real):
            if fs.readlink(f"{real}/{name}") is None and fs.is_dir(f"{real}/{name}"):
                walk(f"{here}/{name}")
            elif name.endswith(".conf"):
                found.append(f"{here}/{name}")
            if len(found) > MAX_DROP_INS:
                raise _Unusable(f"{directory} holds more than {MAX_DROP_INS} drop-in files; "
                                "kvtune does not read that many")

    walk(directory.rstrip("/"))
    return found


def _is_kubelet_config(fs: HostFS, path: str) -> bool:
    """True unless the file says it is something else (kubeadm's kubelet.conf is a kubeconfig)."""
    try:
        kind = _load(fs, path).get("kind", KIND)
    except _Unusable:
        return True  # reported when read
    return bool(kind == KIND)


# -- the report --------------------------------------------------------------------------------


def _reserved_memory(fs: HostFS, where: str, value: t.Any) -> list[ReservedMemory]:
    entries = []
    for index, item in enumerate(value if isinstance(value, list) else []):
        try:
            limits = item["limits"]
            entries.append(ReservedMemory(
                numa_node=int(item["numaNode"]), limits={str(k): str(v) for k, v in limits.items()}
            ))
        except (KeyError, TypeError, ValueError, AttributeError):
            fs.note(where, f"reservedMemory entry {index} lacks numaNode or limits")
    return entries


def _memory(config: dict[str, t.Any], key: str, signal: str = "memory") -> str | None:
    section = config.get(key)
    value = section.get(signal) if isinstance(section, dict) else None
    return None if value is None else str(value)


def _settings(
    fs: HostFS, config: dict[str, t.Any], origins: dict[str, str], fallback: str
) -> dict[str, t.Any]:
    settings: dict[str, t.Any] = {}
    for key, field, default in POLICIES:
        value = config.get(key, default)
        if isinstance(value, str):
            settings[field] = value
        else:
            fs.note(origins.get(key, fallback),
                    f"{key} should be a string, found a {type(value).__name__}")
    options = config.get("cpuManagerPolicyOptions")
    if isinstance(options, dict):
        settings["cpu_manager_policy_options"] = {str(k): str(v) for k, v in options.items()}
    cpus = config.get("reservedSystemCPUs")
    settings["reserved_system_cpus"] = None if cpus is None else str(cpus)
    settings["system_reserved_memory"] = _memory(config, "systemReserved")
    settings["kube_reserved_memory"] = _memory(config, "kubeReserved")
    settings["eviction_hard_memory"] = _memory(config, "evictionHard", "memory.available")
    settings["reserved_memory"] = _reserved_memory(
        fs, origins.get("reservedMemory", fallback), config.get("reservedMemory"))
    return settings


@dataclasses.dataclass(frozen=True)
class _Sources:
    """Where the kubelet's settings come from, in the order they apply."""

    pid: int | None = None
    config_path: str | None = None
    drop_in_dir: str | None = None
    #: Flag name (without --) to every value given, in order.
    flags: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    #: Flag name to where it was last given (the flag itself, or k3s's kubelet-arg).
    flag_origins: dict[str, str] = dataclasses.field(default_factory=dict)
    #: k3s's configuration files read for kubelet-args.
    arg_files: tuple[str, ...] = ()
    #: Config files present that the kubelet does not read.
    others: tuple[str, ...] = ()
    #: The root its paths are in (see _Kubelet.base).
    base: str = ""


def _sources(fs: HostFS, processes: ProcessTable) -> _Sources | None:
    """What the running kubelet reads, else what the usual paths hold; None: nothing found."""
    kubelet = _kubelet_process(fs, processes)
    if kubelet is None:
        present = [path for path in CONFIG_PATHS
                   if fs.exists(_in(fs, "", path)) and _is_kubelet_config(fs, path)]
        drop_in_dir = next((d for d in DROP_IN_DIRS.values() if fs.is_dir(_in(fs, "", d))),
                           None)
        if not present and drop_in_dir is None:
            return None
        return _Sources(config_path=next(iter(present), None), drop_in_dir=drop_in_dir,
                        others=tuple(present[1:]))
    args = kubelet.args
    drop_in_dir = next(reversed(_values(args, "config-dir")), None)
    if (drop_in_dir is None and kubelet.default_drop_in_dir is not None
            and fs.is_dir(_in(fs, kubelet.base, kubelet.default_drop_in_dir))):
        drop_in_dir = kubelet.default_drop_in_dir  # k3s before v1.32 has none
    flags = {flag: values for flag in _KEY_OF_FLAG if (values := _values(args, flag))}
    return _Sources(kubelet.process.pid, next(reversed(_values(args, "config")), None),
                    drop_in_dir, flags, {flag: kubelet.origin(flag) for flag in flags},
                    kubelet.arg_files, base=kubelet.base)


def probe(fs: HostFS, processes: ProcessTable) -> KubeletReport:
    try:
        sources = _sources(fs, processes)
    except _Unusable as err:  # k3s's own configuration file
        return KubeletReport(error=str(err))
    if sources is None:
        return KubeletReport()
    report: dict[str, t.Any] = {
        "pid": sources.pid, "config_path": sources.config_path,
        "drop_in_dir": sources.drop_in_dir, "other_config_paths": list(sources.others),
        "flags": [f"--{flag}={value}" for flag, values in sources.flags.items()
                  for value in values][:MAX_LISTED],
        "flag_files": list(sources.arg_files)[:MAX_LISTED],
    }
    config: dict[str, t.Any] = {}
    origins: dict[str, str] = {}
    try:
        if sources.config_path is not None:
            _merge(config, _load(fs, sources.config_path, base=sources.base), origins,
                   sources.config_path)
        drop_ins = ([] if sources.drop_in_dir is None
                    else _drop_ins(fs, sources.drop_in_dir, sources.base))
        report["drop_in_paths"] = drop_ins[:MAX_LISTED]
        for path in drop_ins:
            _merge(config, _load(fs, path, base=sources.base), origins, path)
    except _Unusable as err:
        return KubeletReport.model_validate({**report, "error": str(err)})
    for flag, values in sources.flags.items():  # flags override every file
        key = _KEY_OF_FLAG[flag]
        config[key] = _parse_flag(FLAGS[key][1], values)
        origins[key] = sources.flag_origins[flag]
    report["origins"] = origins
    fallback = sources.config_path or sources.drop_in_dir or "the kubelet's command line"
    try:
        return KubeletReport.model_validate({**report, **_settings(fs, config, origins, fallback)})
    except pydantic.ValidationError as err:
        # Which fields, never their values: they come from files the cluster may not read.
        fields = ", ".join(sorted({".".join(map(str, e["loc"])) for e in err.errors()})[:8])
        return KubeletReport(pid=sources.pid, config_path=sources.config_path, error=(
            f"the kubelet's settings ({fields}) do not fit what kvtune can report (too long or "
            f"of another type), read from {fallback}"))


# -- findings ----------------------------------------------------------------------------------


def fix(kubelet: KubeletReport, key: str, value: str, flag_value: str | None = None) -> str:
    """Where and how to set a KubeletConfiguration key to `value` (`flag_value` as a flag, when
    written differently there) so that the kubelet takes it.

    A flag overrides every file, so a setting given as a flag is changed there; otherwise in
    the file that sets it last, else the config file, else a drop-in.
    """
    origin = kubelet.origins.get(key)
    flag = FLAGS[key][0] if key in FLAGS else None
    if flag is not None and origin is not None and origin.startswith(K3S_FILE_ORIGIN):
        return (f"change its kubelet-arg entry to {flag}={flag_value or value} in "
                f"{origin.removeprefix(K3S_FILE_ORIGIN)} and restart k3s")
    if flag is not None and origin == K3S_FLAG_ORIGIN:
        return (f"set --kubelet-arg={flag}={flag_value or value} on the command line of k3s "
                f"(pid {kubelet.pid}) and restart it")
    if flag is not None and (origin == f"--{flag}" or (
            origin is None and kubelet.config_path is None and kubelet.drop_in_dir is None)):
        return (f"set --{flag}={flag_value or value} on the kubelet's command line "
                f"(pid {kubelet.pid})")
    where = origin or kubelet.config_path or f"a new file in {kubelet.drop_in_dir}"
    return f"set {key}: {value} in {where}"


def check(kubelet: KubeletReport) -> list[Problem]:
    """Findings: no or broken config, no static CPU manager, no topology alignment."""
    if kubelet.error is not None:
        return [Problem(
            severity="Error", feature="Kubelet", path=kubelet.config_path or "",
            message=f"cannot use the kubelet's configuration: {kubelet.error}; fix the file",
        )]
    if not known(kubelet):
        return [Problem(
            severity="Info", feature="Kubelet", path=CONFIG_PATHS[0],
            message=f"no kubelet process and no kubelet config at {', '.join(CONFIG_PATHS)} or "
            f"{', '.join(DROP_IN_DIRS.values())}: the kubelet's CPU, topology and memory "
            "manager policies are unknown (not a Kubernetes node, or the agent cannot see the "
            "host's processes)",
        )]
    path = kubelet.config_path or ""
    problems = []
    if kubelet.cpu_manager_policy != "static":
        problems.append(Problem(
            severity="Warning", feature="Kubelet", path=path,
            message=f"cpuManagerPolicy is {kubelet.cpu_manager_policy!r} (read from "
            f"{read_from(kubelet)}): VMIs with dedicatedCpuPlacement stay Pending without the "
            f"static CPU manager; {fix(kubelet, 'cpuManagerPolicy', 'static')} (remove "
            "/var/lib/kubelet/cpu_manager_state and restart the kubelet on a drained node)",
        ))
    if kubelet.topology_manager_policy == "none":
        problems.append(Problem(
            severity="Info", feature="Kubelet", path=path,
            message=f"topologyManagerPolicy is 'none' (read from {read_from(kubelet)}): a VM's "
            "dedicated CPUs, memory and devices may come from different NUMA nodes; "
            "single-numa-node or restricted keeps them together",
        ))
    if kubelet.other_config_paths:
        problems.append(Problem(
            severity="Info", feature="Kubelet", path=kubelet.other_config_paths[0],
            message=f"also found {', '.join(kubelet.other_config_paths)}; values were read from "
            f"{path}, but the kubelet reads only the file its --config flag names",
        ))
    return problems
