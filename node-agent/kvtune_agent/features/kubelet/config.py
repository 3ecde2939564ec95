"""What the kubelet must be told for dedicated CPUs, and in which form it can be told here.

Pure: a function of the profile's spec.cpu.kubelet, the kubelet's settings as the probe read
them (probe/kubelet.py), the host's NUMA nodes and the housekeeping CPUs of the CPU partition.
drop_in.py beside it writes what this decides.

The kubelet refuses to start on a configuration its managers reject, so the rules that decide
whether it starts are taken from its own code (Kubernetes v1.37,
pkg/kubelet/cm/memorymanager/memory_manager.go validateReservedMemory, cmd/kubelet/app/server.go,
pkg/kubelet/cm/helpers.go hardEvictionReservation):

- with memoryManagerPolicy Static, reservedMemory's `memory` summed over the NUMA nodes must
  EQUAL (Quantity.Equal: to the byte) systemReserved.memory + kubeReserved.memory + the hard
  eviction threshold for memory.available, and must not be zero (policy_static.go);
- that threshold is evictionHard's memory.available; when no configuration file sets
  evictionHard the kubelet takes its default (100Mi) only if it was started with --config
  (loadConfigFile), and a flag replaces the whole map; a percentage is taken of the machine's
  memory in float32 arithmetic, which kvtune does not try to match to the byte;
- every reservedMemory entry names an existing NUMA node and is not zero
  (validation_reserved_memory.go);
- reservedSystemCPUs replaces the CPU reserves of kubeReserved and systemReserved.

A drop-in is merged over the kubelet's configuration as a JSON merge patch (maps key by key,
lists replaced), and command-line flags override every file: a setting given as a flag cannot
be changed by a drop-in, so it is reported as the exact flag change instead.
"""

from __future__ import annotations

import typing as t
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kvtune_api import quantity as kvtune_quantity
from kvtune_api.v1alpha1.host import KubeletReport, NumaNode

from ...host import cpulist
from . import probe as kubelet_probe

if t.TYPE_CHECKING:  # `kvtune probe` loads the features, and needs neither (test_probe_host.py)
    from kvtune_api.v1alpha1.profile import KubeletSettings

#: The drop-in kvtune writes into the kubelet's --config-dir; 99 so that it sorts after the
#: distributions' own (the kubelet merges them in lexical order, the last one winning).
DROP_IN_NAME = "99-kvtune.conf"
#: The file kvtune writes into k3s's config.yaml.d, when k3s has no kubelet drop-in directory.
K3S_DROP_IN_NAME = "99-kvtune-kubelet.yaml"
API_VERSION = "kubelet.config.k8s.io/v1beta1"
#: The kubelet's checkpoints of its CPU and memory managers (under its --root-dir): a kubelet
#: whose policy or reserved set differs from its checkpoint refuses to start, so a change of
#: either removes the checkpoint, which the kubelet then writes afresh.
KUBELET_ROOT = "/var/lib/kubelet"
CPU_STATE = f"{KUBELET_ROOT}/cpu_manager_state"
MEMORY_STATE = f"{KUBELET_ROOT}/memory_manager_state"
CPU_KEYS = ("cpuManagerPolicy", "cpuManagerPolicyOptions", "reservedSystemCPUs")
MEMORY_KEYS = ("memoryManagerPolicy", "reservedMemory")
#: The kubelet's hard eviction threshold for memory.available when its --config file sets no
#: evictionHard (pkg/kubelet/eviction/defaults_linux.go).
DEFAULT_EVICTION_MEMORY = "100Mi"
#: OpenShift's kubelet configuration file, which the Machine Config Operator owns.
OPENSHIFT_CONFIG = "/etc/kubernetes/kubelet.conf"
FIELD = "spec.cpu.kubelet"

Distribution = t.Literal["kubelet", "k3s", "rke2", "openshift", "unknown"]
Form = t.Literal["DropIn", "KubeletArg", "Report"]


class Refusal(Exception):
    """What kvtune wants cannot be written so that the kubelet starts; the message says why,
    where it was read, and what to do."""


# -- the reserved memory, to the byte -----------------------------------------------------------


def _bytes(value: str, where: str) -> int:
    try:
        amount = kvtune_quantity.parse(value, where)
    except kvtune_quantity.QuantityError as err:
        raise Refusal(f"{where} is not a Kubernetes quantity; fix it") from err
    if not amount.is_finite() or amount < 0 or amount != amount.to_integral_value():
        raise Refusal(f"{where} is not a whole, non-negative number of bytes; fix it")
    return int(amount)


def _where(kubelet: KubeletReport, key: str) -> str:
    return kubelet.origins.get(key) or kubelet.config_path or "the kubelet's defaults"


def eviction_bytes(kubelet: KubeletReport) -> int:
    """The kubelet's hard eviction threshold for memory.available, in bytes, as the kubelet
    counts it in its node allocatable reservation; raises Refusal where that is not exact."""
    origin = kubelet.origins.get("evictionHard")
    value = kubelet.eviction_hard_memory
    if origin is None:  # no file and no flag sets evictionHard
        if kubelet.config_path is None:
            return 0  # no --config file: the kubelet's default map is never applied
        value = DEFAULT_EVICTION_MEMORY
    elif value is None:
        if origin.startswith("--") or origin.startswith(kubelet_probe.K3S_FILE_ORIGIN):
            return 0  # a flag replaces the whole map: no memory.available, no threshold
        raise Refusal(
            f"evictionHard is set in {origin} without memory.available, so whether the kubelet "
            "adds its default (100Mi, mergeDefaultEvictionSettings) is not known to kvtune, and "
            "reservedMemory must add up with it to the byte; set evictionHard memory.available "
            "explicitly (e.g. 100Mi)")
    if value.endswith("%"):
        raise Refusal(
            f"evictionHard memory.available is {value} ({_where(kubelet, 'evictionHard')}): the "
            "kubelet takes a percentage of the machine's memory in float32 arithmetic, and "
            "reservedMemory must add up with it to the byte; write it as a quantity (e.g. "
            "500Mi)")
    return _bytes(value, f"evictionHard memory.available in {_where(kubelet, 'evictionHard')}")


def reserved_bytes(kubelet: KubeletReport) -> int:
    """systemReserved + kubeReserved memory + the hard eviction threshold, in bytes: what the
    kubelet's node allocatable reservation holds for `memory`, which reservedMemory must equal."""
    total = eviction_bytes(kubelet)
    for key, value in (("systemReserved", kubelet.system_reserved_memory),
                       ("kubeReserved", kubelet.kube_reserved_memory)):
        if value is not None:
            total += _bytes(value, f"{key}.memory in {_where(kubelet, key)}")
    return total


def _quantity(amount: int) -> str:
    """Bytes as the shortest exact binary quantity (the kubelet compares values, not text)."""
    for suffix, power in (("Gi", 30), ("Mi", 20), ("Ki", 10)):
        if amount % 2**power == 0:
            return f"{amount >> power}{suffix}"
    return str(amount)


def split_reserved_memory(total: int, nodes: Sequence[NumaNode]) -> list[dict[str, t.Any]]:
    """reservedMemory entries adding up to `total` bytes exactly: an even split over the NUMA
    nodes with memory (a guaranteed VM's memory is taken from the node of its CPUs, so every
    node keeps its share for the host), the bytes that do not divide on the lowest node.

    Raises Refusal for a total of zero (the Static policy refuses to start without a reserve)
    or a host whose NUMA nodes are unknown."""
    if total <= 0:
        raise Refusal(
            "the kubelet reserves no memory (systemReserved + kubeReserved + evictionHard "
            "memory.available is 0), and its Static memory manager refuses to start without a "
            "reserve; set systemReserved memory (e.g. 1Gi) in the kubelet's configuration")
    ids = sorted(node.id for node in nodes if not node.memoryless and node.memory_total_kib > 0)
    if not ids:
        raise Refusal("the host's NUMA nodes and their memory are unknown (/sys/devices/system/"
                      "node cannot be read), so reservedMemory cannot be split over them")
    share, rest = divmod(total, len(ids))
    if share == 0:  # fewer bytes than nodes: every entry must be non-zero
        return [{"numaNode": ids[0], "limits": {"memory": _quantity(total)}}]
    return [{"numaNode": node, "limits": {"memory": _quantity(share + (rest if i == 0 else 0))}}
            for i, node in enumerate(ids)]


# -- what the kubelet should run -----------------------------------------------------------------


def wanted(
    settings: KubeletSettings,
    topology_policy: str | None,
    kubelet: KubeletReport,
    nodes: Sequence[NumaNode],
    housekeeping: frozenset[int] | None,
) -> dict[str, t.Any]:
    """The KubeletConfiguration keys kvtune sets, in the order written; raises Refusal.

    `housekeeping` is the CPU partition's reserved set (spec.cpu.partition); without one the
    kubelet's own reservedSystemCPUs is kept, and the static CPU manager needs one of the two.
    """
    want: dict[str, t.Any] = {"cpuManagerPolicy": "static"}
    if settings.full_pcpus_only:
        want["cpuManagerPolicyOptions"] = {"full-pcpus-only": "true"}
    if housekeeping:
        want["reservedSystemCPUs"] = cpulist.format_ids(housekeeping)
    elif not kubelet.reserved_system_cpus:
        raise Refusal(
            f"{FIELD} asks for the static CPU manager, but no CPUs are set aside for the host: "
            "give the housekeeping CPUs in spec.cpu.partition (written as the kubelet's "
            "reservedSystemCPUs), or set reservedSystemCPUs in the kubelet's configuration")
    want["memoryManagerPolicy"] = settings.memory_manager_policy
    if settings.memory_manager_policy == "Static":
        want["reservedMemory"] = split_reserved_memory(reserved_bytes(kubelet), nodes)
    if topology_policy is not None:
        want["topologyManagerPolicy"] = topology_policy
    want["topologyManagerScope"] = settings.topology_manager_scope
    return want


def _memory_split(entries: Sequence[Mapping[str, t.Any]], kubelet: KubeletReport) -> dict[int, int]:
    split: dict[int, int] = {}
    for entry in entries:
        memory = entry["limits"].get("memory")
        if memory is not None:
            split[int(entry["numaNode"])] = _bytes(
                str(memory), f"reservedMemory in {_where(kubelet, 'reservedMemory')}")
    return split


def reserved_split(kubelet: KubeletReport) -> dict[int, int]:
    """The kubelet's reservedMemory `memory` per NUMA node, in bytes; raises Refusal."""
    return _memory_split(_current(kubelet, "reservedMemory"), kubelet)


def _current(kubelet: KubeletReport, key: str) -> t.Any:
    return {
        "cpuManagerPolicy": kubelet.cpu_manager_policy,
        "cpuManagerPolicyOptions": kubelet.cpu_manager_policy_options,
        "reservedSystemCPUs": kubelet.reserved_system_cpus,
        "memoryManagerPolicy": kubelet.memory_manager_policy,
        "reservedMemory": [{"numaNode": e.numa_node, "limits": e.limits}
                           for e in kubelet.reserved_memory],
        "topologyManagerPolicy": kubelet.topology_manager_policy,
        "topologyManagerScope": kubelet.topology_manager_scope,
    }[key]


def _same(key: str, want: t.Any, now: t.Any, kubelet: KubeletReport) -> bool:
    if key == "cpuManagerPolicyOptions":
        return all(now.get(k) == v for k, v in want.items())
    if key == "reservedSystemCPUs":
        try:
            return now is not None and cpulist.parse(now) == cpulist.parse(want)
        except ValueError:
            return False
    if key == "reservedMemory":
        try:
            return _memory_split(now, kubelet) == _memory_split(want, kubelet)
        except Refusal:
            return False
    return bool(now == want)


def differing(want: Mapping[str, t.Any], kubelet: KubeletReport) -> list[str]:
    """The keys of `want` the kubelet does not run with now."""
    return [key for key, value in want.items()
            if not _same(key, value, _current(kubelet, key), kubelet)]


def state_files(changed: Sequence[str]) -> tuple[str, ...]:
    """The managers' checkpoints a change of these keys makes the kubelet refuse."""
    return ((CPU_STATE,) if set(changed) & set(CPU_KEYS) else ()) + (
        (MEMORY_STATE,) if set(changed) & set(MEMORY_KEYS) else ())


# -- the form it can be written in ---------------------------------------------------------------


@dataclass(frozen=True)
class Rendering:
    """How the wanted settings reach the kubelet on this host."""

    form: Form
    #: The file kvtune writes (DropIn, KubeletArg); None for Report.
    path: str | None
    #: The file's content; for Report, the change to make by hand.
    content: str
    #: The keys that differ from what the kubelet runs now.
    changed: tuple[str, ...]

    @property
    def state_files(self) -> tuple[str, ...]:
        return state_files(self.changed)


def flag_value(key: str, value: t.Any) -> str:
    """A KubeletConfiguration value as its command-line flag writes it."""
    if key == "cpuManagerPolicyOptions":
        return ",".join(f"{k}={v}" for k, v in value.items())
    if key == "reservedMemory":
        return ";".join(f"{e['numaNode']}:" + ",".join(f"{k}={v}" for k, v in e["limits"].items())
                        for e in value)
    return str(value)


def kubelet_args(want: Mapping[str, t.Any]) -> list[str]:
    """The settings as kubelet flags without their dashes (k3s's kubelet-arg entries)."""
    return [f"{kubelet_probe.FLAGS[key][0]}={flag_value(key, value)}"
            for key, value in want.items()]


def drop_in(want: Mapping[str, t.Any], profile: str) -> str:
    """The KubeletConfiguration drop-in holding `want`."""
    header = (f"# Written by kvtune for HypervisorProfile {profile} ({FIELD}); removed when the "
              "node leaves the profile.\n")
    body = {"apiVersion": API_VERSION, "kind": kubelet_probe.KIND, **want}
    import yaml  # only where something is written (test_probe_host.py)

    return header + yaml.safe_dump(body, sort_keys=False)


def k3s_drop_in(want: Mapping[str, t.Any], profile: str) -> str:
    """k3s's config.yaml.d file appending the settings as kubelet-arg entries (`+`: appended
    after the others, and the kubelet takes the last value of a flag)."""
    header = (f"# Written by kvtune for HypervisorProfile {profile} ({FIELD}); removed when the "
              "node leaves the profile.\n")
    import yaml

    return header + yaml.safe_dump({"kubelet-arg+": kubelet_args(want)}, sort_keys=False)


def k3s_config(kubelet: KubeletReport) -> str:
    """k3s's configuration file, as the probe found it (its drop-ins sit in `<file>.d`)."""
    for path in kubelet.flag_files:
        directory, _, _ = path.rpartition("/")
        if directory.endswith(".d"):
            return directory[:-2]
        return path
    return kubelet_probe.K3S_CONFIG


def _report(want: Mapping[str, t.Any], kubelet: KubeletReport, why: str) -> str:
    fixes = "; ".join(kubelet_probe.fix(kubelet, key, _yaml_value(value), flag_value(key, value))
                      for key, value in want.items())
    return f"{why}: {fixes}"


def _yaml_value(value: t.Any) -> str:
    """A value as one line of YAML, e.g. {full-pcpus-only: 'true'}."""
    if isinstance(value, str):
        return value
    import yaml

    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**6).strip()


def render(
    want: Mapping[str, t.Any], kubelet: KubeletReport, distribution: Distribution, profile: str,
    report_only: bool = False,
) -> Rendering:
    """The form in which `want` reaches this kubelet, and the file or the change by hand.

    A flag overrides every file, and kvtune does not edit service units or command lines: a
    setting given as a flag (or as k3s's --kubelet-arg) leaves the change in Report form. k3s's
    kubelet-arg entries in its configuration files are flags too, so there the settings are
    appended as kubelet-arg entries of a file of kvtune's own, except reservedMemory, whose flag
    adds entries rather than replacing them (two entries for one NUMA node stop the kubelet).
    """
    changed = tuple(differing(want, kubelet))
    todo = {key: want[key] for key in changed}
    origins = {key: kubelet.origins.get(key, "") for key in changed}
    if report_only:
        would = render(want, kubelet, distribution, profile)
        if would.form == "Report":
            return would
        held = ({"kubelet-arg+": kubelet_args(want)} if would.form == "KubeletArg"
                else {"apiVersion": API_VERSION, "kind": kubelet_probe.KIND, **want})
        return Rendering("Report", None, (
            f"{FIELD}.management is Report, so nothing is written; with Enforce kvtune would "
            f"write {would.path} holding {_yaml_value(held)}"), changed)
    if distribution == "openshift":
        return Rendering("Report", None, _report(todo, kubelet, (
            f"{OPENSHIFT_CONFIG} belongs to OpenShift's Machine Config Operator, which would "
            "undo a file written beside it; give these settings in a KubeletConfig (or the "
            "Node Tuning Operator's PerformanceProfile) for the node's pool")), changed)
    if distribution == "unknown":
        return Rendering("Report", None, _report(todo, kubelet, (
            "the kubelet runs outside a systemd unit kvtune knows (kubelet.service, k3s, RKE2), "
            "so kvtune cannot restart it")), changed)
    flags = [key for key, where in origins.items()
             if where.startswith("--") or where == kubelet_probe.K3S_FLAG_ORIGIN]
    if flags:
        return Rendering("Report", None, _report(todo, kubelet, (
            f"{', '.join(flags)} given on the kubelet's command line override every file, and "
            "kvtune does not edit command lines")), changed)
    k3s_args = [key for key, where in origins.items()
                if where.startswith(kubelet_probe.K3S_FILE_ORIGIN)]
    if distribution == "k3s" and (k3s_args or kubelet.drop_in_dir is None):
        if "reservedMemory" in k3s_args:
            return Rendering("Report", None, _report(todo, kubelet, (
                "k3s gives reservedMemory as a kubelet-arg, and a second --reserved-memory adds "
                "entries instead of replacing them")), changed)
        path = f"{k3s_config(kubelet)}.d/{K3S_DROP_IN_NAME}"
        later = _after(path, [where.removeprefix(kubelet_probe.K3S_FILE_ORIGIN)
                              for where in origins.values()])
        if later:
            return Rendering("Report", None, _report(todo, kubelet, _overridden(later, path)),
                             changed)
        return Rendering("KubeletArg", path, k3s_drop_in(want, profile), changed)
    if kubelet.drop_in_dir is None:
        return Rendering("Report", None, _report(todo, kubelet, (
            "the kubelet runs without a drop-in directory (--config-dir) and kvtune does not "
            "rewrite its configuration file; add --config-dir=/etc/kubernetes/kubelet.conf.d "
            "to its command line, or else")), changed)
    path = f"{kubelet.drop_in_dir.rstrip('/')}/{DROP_IN_NAME}"
    later = _after(path, list(origins.values()))
    if later:
        return Rendering("Report", None, _report(todo, kubelet, _overridden(later, path)), changed)
    return Rendering("DropIn", path, drop_in(want, profile), changed)


def _after(path: str, origins: Sequence[str]) -> list[str]:
    """The files among `origins` read after `path` in its directory: the kubelet (and k3s)
    read drop-ins in lexical order, so a later one wins over kvtune's, and writing kvtune's
    again would change nothing but restart the kubelet every cycle."""
    directory = path.rpartition("/")[0] + "/"
    return sorted({where for where in origins if where.startswith(directory) and where > path})


def _overridden(later: Sequence[str], path: str) -> str:
    return f"{', '.join(later)} come(s) after kvtune's {path} and override(s) it"
