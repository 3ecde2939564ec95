"""The kubelet's resource-manager settings, read from its config file.

KubeVirt's dedicated CPUs need the static CPU manager, and NUMA-local VMs need the topology and
memory managers; kvtune does not rewrite the kubelet's configuration, so it reads what is set
and reports the gaps. A missing file means "unknown", not an error: not every host runs a kubelet
configured by file.
"""

from __future__ import annotations

import typing as t

from kvtune_api.v1alpha1.host import KubeletReport, Problem, ReservedMemory

from ..hostfs import HostFS

#: Where kubeadm and most distributions put it; the kubelet reads only the one its --config names.
CONFIG_PATHS = ("/var/lib/kubelet/config.yaml", "/etc/kubernetes/kubelet-config.yaml")
#: Policy settings as (KubeletConfiguration key, report field, the kubelet's default, which
#: applies when the file leaves the key out).
POLICIES = (
    ("cpuManagerPolicy", "cpu_manager_policy", "none"),
    ("topologyManagerPolicy", "topology_manager_policy", "none"),
    ("topologyManagerScope", "topology_manager_scope", "container"),
    ("memoryManagerPolicy", "memory_manager_policy", "None"),
)


def _reserved_memory(fs: HostFS, path: str, value: t.Any) -> list[ReservedMemory]:
    entries = []
    for item in value if isinstance(value, list) else []:
        try:
            limits = item["limits"]
            entries.append(ReservedMemory(
                numa_node=int(item["numaNode"]), limits={str(k): str(v) for k, v in limits.items()}
            ))
        except (KeyError, TypeError, ValueError, AttributeError):
            fs.note(path, f"reservedMemory entry {str(item)[:60]!r} lacks numaNode or limits")
    return entries


def _memory(config: dict[str, t.Any], key: str, signal: str = "memory") -> str | None:
    section = config.get(key)
    value = section.get(signal) if isinstance(section, dict) else None
    return None if value is None else str(value)


def _settings(fs: HostFS, path: str, config: dict[str, t.Any]) -> dict[str, t.Any]:
    settings: dict[str, t.Any] = {}
    for key, field, default in POLICIES:
        value = config.get(key, default)
        if isinstance(value, str):
            settings[field] = value
        else:
            fs.note(path, f"{key} should be a string, found {value!r}")
    cpus = config.get("reservedSystemCPUs")
    settings["reserved_system_cpus"] = None if cpus is None else str(cpus)
    settings["system_reserved_memory"] = _memory(config, "systemReserved")
    settings["kube_reserved_memory"] = _memory(config, "kubeReserved")
    settings["eviction_hard_memory"] = _memory(config, "evictionHard", "memory.available")
    settings["reserved_memory"] = _reserved_memory(fs, path, config.get("reservedMemory"))
    return settings


def probe(fs: HostFS) -> KubeletReport:
    present = [path for path in CONFIG_PATHS if fs.exists(path)]
    if not present:
        return KubeletReport()
    path, others = present[0], present[1:]
    report = {"config_path": path, "other_config_paths": others}
    import yaml  # here, not above: most hosts `kvtune probe` runs on have no kubelet config

    text = fs.read_text(path)
    if text is None:
        return KubeletReport.model_validate({**report, "error": "the file cannot be read"})
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as err:
        return KubeletReport.model_validate({**report, "error": f"invalid YAML: {err}"})
    if not isinstance(config, dict):
        return KubeletReport.model_validate(
            {**report, "error": "not a KubeletConfiguration mapping"}
        )
    return KubeletReport.model_validate({**report, **_settings(fs, path, config)})


def check(kubelet: KubeletReport) -> list[Problem]:
    """Findings: no or broken config, no static CPU manager, no topology alignment."""
    path = kubelet.config_path
    if path is None:
        return [Problem(
            severity="Info", feature="Kubelet", path=CONFIG_PATHS[0],
            message=f"no kubelet config at {' or '.join(CONFIG_PATHS)}: the kubelet's CPU, "
            "topology and memory manager policies are unknown (flags-only kubelet, or not a "
            "Kubernetes node)",
        )]
    if kubelet.error is not None:
        return [Problem(
            severity="Error", feature="Kubelet", path=path,
            message=f"cannot use {path}: {kubelet.error}; fix the file",
        )]
    problems = []
    if kubelet.cpu_manager_policy != "static":
        problems.append(Problem(
            severity="Warning", feature="Kubelet", path=path,
            message=f"cpuManagerPolicy is {kubelet.cpu_manager_policy!r} in {path}: VMIs with "
            "dedicatedCpuPlacement stay Pending without the static CPU manager; set "
            "cpuManagerPolicy: static (remove /var/lib/kubelet/cpu_manager_state and restart "
            "the kubelet on a drained node)",
        ))
    if kubelet.topology_manager_policy == "none":
        problems.append(Problem(
            severity="Info", feature="Kubelet", path=path,
            message=f"topologyManagerPolicy is 'none' in {path}: a VM's dedicated CPUs, memory "
            "and devices may come from different NUMA nodes; single-numa-node or restricted "
            "keeps them together",
        ))
    if kubelet.other_config_paths:
        problems.append(Problem(
            severity="Info", feature="Kubelet", path=kubelet.other_config_paths[0],
            message=f"also found {', '.join(kubelet.other_config_paths)}; values were read from "
            f"{path}, but the kubelet reads only the file its --config flag names",
        ))
    return problems
