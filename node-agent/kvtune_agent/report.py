"""The text form of a HostReport: what `vmxcap`, `numactl -H`, `lsblk` and `ip link` would say,
on one page, with the problems first and the lines they concern marked.

The gutter of each line carries the worst problem about it: `!!` error, `! ` warning, `. ` info,
so a reader scanning the page sees where to look without reading every line.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable

from kvtune_api.v1alpha1.host import (
    BlockDevice,
    DaemonReport,
    HostReport,
    HugepagePool,
    Nic,
    PleReport,
    Problem,
)

from .features import kubelet_report
from .features.cpu import probe as cpu
from .features.ksm import probe as ksm
from .features.memory import probe as memory
from .features.numa import probe as numa
from .features.page import GUTTER, LABEL_WIDTH, RANK, WIDTH, Page, human, mib, or_dash
from .host import meminfo, names, paths


def _problems(page: Page, problems: list[Problem]) -> None:
    counts = {s: sum(p.severity == s for p in problems) for s in RANK}
    summary = ", ".join(f"{n} {s.lower()}" for s, n in counts.items() if n) or "none"
    page.heading(f"PROBLEMS: {summary}")
    for problem in problems:
        head = f"{GUTTER[problem.severity]}  {problem.severity.upper():<8}{problem.feature:<9}"
        page.lines += textwrap.wrap(
            problem.message, WIDTH, initial_indent=head, subsequent_indent=" " * len(head),
            break_on_hyphens=False,
        )


def _cpu(page: Page, report: HostReport) -> None:
    found, topology = report.cpu, report.numa
    page.heading("CPU (lscpu)", "CPU")
    page.row("Vendor ID:", or_dash(found.vendor))
    page.row("Model name:", f"{or_dash(found.model_name)} (family {or_dash(found.family)}, "
             f"model {or_dash(found.model)}, stepping {or_dash(found.stepping)})")
    threads = (f"{topology.min_threads_per_core}-{topology.threads_per_core}"
               if topology.min_threads_per_core < topology.threads_per_core
               else str(topology.threads_per_core))
    sockets, per_socket, _ = numa.layout(topology)
    # lscpu's figures, the kernel's grouping, so that they multiply out to the CPUs; the
    # kubelet's core count follows where it differs.
    kubelet = (f" (the kubelet counts {topology.cores} cores)"
               if topology.kernel_cores != topology.cores else "")
    page.row("CPU(s):", f"{found.logical_cpus} online; {sockets} socket(s) x "
             f"{per_socket:g} core(s) x {threads} thread(s){kubelet}", f"{numa.CPUS}/cpuN/topology")
    page.row("On-line CPU(s) list:", or_dash(topology.online_cpus))
    page.row("Off-line CPU(s) list:", or_dash(topology.offline_cpus), f"{numa.CPUS}/offline")
    page.row("Isolated CPU(s):", or_dash(topology.isolated_cpus))
    guest = " (this host is a VM guest)" if found.hypervisor_guest else ""
    page.row("Architecture:", or_dash(found.architecture))
    page.row("Virtualization:", f"{found.virtualization}{guest}", cpu.CPUINFO)
    page.row("KVM module:", or_dash(found.kvm_module))
    page.row("/dev/kvm:", "present" if found.kvm_device else "missing", "/dev/kvm")


def _ple(page: Page, ple: PleReport) -> None:
    page.heading("PAUSE-LOOP EXITING (vmxcap)", "PLE")
    if not ple.applicable:
        page.row("Applicable:", "no: PLE belongs to VT-x and AMD-V, which KVM does not use here")
        instead = ple.equivalent or f"nothing: {ple.evidence[0].observed}"
        lines = textwrap.wrap(instead, WIDTH - LABEL_WIDTH - 4)
        for line in lines:
            page.row("Instead:" if line is lines[0] else "", line)
        return
    page.row("Supported:", ple.supported, "PLE")
    page.row("Enabled:", ple.enabled, "PLE")
    params = {k: v for k, v in ple.model_dump(by_alias=False).items()
              if k.startswith(("ple_", "pause_")) and v is not None}
    if params:
        page.row(f"{ple.module} parameters:", " ".join(f"{k}={v}" for k, v in params.items()))
    for evidence in ple.evidence:
        page.row("Evidence:" if evidence is ple.evidence[0] else "", f"{evidence.source}: "
                 f"{evidence.observed}")


def _pools(pools: Iterable[HugepagePool]) -> str:
    text = ", ".join(f"{p.size} {or_dash(p.free)}/{or_dash(p.total)} free"
                     + (f" (+{p.surplus} surplus)" if p.surplus else "") for p in pools)
    return text or "-"


def _numa(page: Page, report: HostReport) -> None:
    nodes = report.numa.nodes
    page.heading("NUMA (numactl -H)", "NUMA")
    ids = [node.id for node in nodes]
    page.line(f"  available: {len(nodes)} nodes ({','.join(map(str, ids))})")
    for node in nodes:
        key = f"{meminfo.NODES}/node{node.id}/meminfo"
        page.line(f"  node {node.id} cpus: {node.cpus or '(none)'}", key)
        kind = " (memoryless)" if node.memoryless else " (memory only)" if node.memory_only else ""
        if node.memory_total_kib or node.memoryless:
            page.line(f"  node {node.id} size: {node.memory_total_kib // 1024} MB{kind}", key)
            page.line(f"  node {node.id} free: {node.memory_free_kib // 1024} MB")
        else:
            page.line(f"  node {node.id} size: unknown (no readable meminfo)", key)
        own = [p for p in report.memory.hugepages_per_node if p.node == node.id]
        page.line(f"  node {node.id} hugepages: {_pools(own)}")
    if nodes:
        page.line("  node distances:")
        page.line("  node " + "".join(f"{i:>4}" for i in ids))
        for node in nodes:
            page.line(f"  {node.id:>3}: " + "".join(f"{d:>4}" for d in node.distances))


def _memory(page: Page, report: HostReport) -> None:
    mem = report.memory
    page.heading("MEMORY", "Memory", "Hugepages")
    page.row("MemTotal:", f"{mib(mem.total_kib)} ({mib(mem.available_kib)} available)",
             paths.MEMINFO)
    page.row("Swap:", "off" if mem.swap_total_kib == 0 else mib(mem.swap_total_kib),
             "/proc/swaps")
    page.row("Transparent hugepages:", f"{or_dash(mem.transparent_hugepage)} (defrag "
             f"{or_dash(mem.transparent_hugepage_defrag)})")
    pools = _pools(mem.hugepages) if mem.hugepage_pools_known else "unknown"
    page.row("Hugepages:", f"{pools} (default {or_dash(mem.default_hugepage_kib)} kB)",
             memory.HUGEPAGES)
    page.row("Kernel args:", " ".join(mem.kernel_args) or "-")


def _daemon(daemon: DaemonReport) -> str:
    running = f"running (pid {', '.join(map(str, daemon.pids))})" if daemon.running else (
        "not running")
    wanted = f" by {', '.join(daemon.wanted_by)}" if daemon.wanted_by else ""
    return f"{running}; unit {daemon.unit}{wanted}"


def _daemons(page: Page, report: HostReport) -> None:
    found = report.ksm
    page.heading("KSM AND NUMAD", "KSM", "Numad")
    page.row("KSM:", f"{found.state} (pages shared {or_dash(found.pages_shared)}, sharing "
             f"{or_dash(found.pages_sharing)}, merge_across_nodes "
             f"{or_dash(found.merge_across_nodes)})", ksm.KSM_RUN)
    page.row("ksmtuned:", _daemon(found.ksmtuned))
    page.row("numad:", _daemon(report.numad), "Numad")


def _nic(page: Page, nic: Nic) -> None:
    ids = f" [{nic.vendor_id}:{nic.device_id}]" if nic.vendor_id else ""
    page.line(f"  {nic.name}: state {or_dash(nic.operstate)} mtu {or_dash(nic.mtu)} "
              f"{or_dash(nic.mac)}  {or_dash(nic.driver)} {or_dash(nic.pci_address)}{ids} "
              f"numa {or_dash(nic.numa_node)}" + (f"  in {nic.master}" if nic.master else ""),
              names.numvfs_path(nic.pci_address or nic.name))
    if nic.sriov_total_vfs is not None:
        page.line(f"      SR-IOV: {or_dash(nic.sriov_num_vfs)} of {nic.sriov_total_vfs} VFs")
    for vf in nic.vfs:
        user = ("  -> VM (vfio-pci)" if vf.assigned_to_vm
                else f"  -> in use ({vf.driver})" if vf.in_use else "")
        page.line(f"      vf {vf.index:<3} {vf.pci_address}  {or_dash(vf.driver):<10} "
                  f"{or_dash(vf.netdev)}{user}")


def _network(page: Page, report: HostReport) -> None:
    page.heading("NETWORK (ip link)", "SRIOV")
    for nic in report.sriov.nics:
        _nic(page, nic)
    page.line(f"  ({report.sriov.virtual_interfaces} interfaces without a device: lo, bridges, "
              "veths...)")
    routing = report.network.routing
    if used := sorted({*routing.ipv4_routes, *routing.ipv6_addresses}):
        page.line(f"  the host's own traffic: default route via "
                  f"{', '.join(routing.default_route) or 'none'}; routes or addresses on "
                  f"{', '.join(used)}")
    for switch in report.network.switches:
        bridges = f" (bridges {', '.join(switch.bridges)})" if switch.bridges else ""
        ports = f"{switch.port_count} port{'' if switch.port_count == 1 else 's'}"
        page.line(f"  {switch.kind} {switch.name}{bridges}: {ports}")
    for pod in report.network.pods:
        paths = ", ".join(
            f"{i.name} {i.kind.lower()}" + (f" -> {i.link}" if i.link else "")
            + (f" on {i.switch}" if i.switch else "")
            for i in pod.interfaces if i.kind not in ("Bridge", "Tap")
        )  # fmt: skip
        page.line(f"  pod of VM {pod.vmi} (pid {pod.pid}): {paths or 'no interfaces'}")


def _disk(page: Page, device: BlockDevice) -> None:
    rota = or_dash(None if device.rotational is None else int(device.rotational))
    page.line(f"  {device.name:<10} {human(device.size_bytes):>6} {rota:>4}  "
              f"{device.kind:<12} {or_dash(device.model or device.dm_name):<16} "
              f"{device.classification:<9}"
              f"{device.reason}", device.path)


def _block(page: Page, report: HostReport) -> None:
    page.heading("BLOCK DEVICES (lsblk)", "Block")
    page.line(f"  {'NAME':<10} {'SIZE':>6} {'ROTA':>4}  {'TYPE':<12} {'MODEL':<16} "
              f"{'CLASS':<9}REASON")
    for device in report.block.devices:
        _disk(page, device)
    skipped = ", ".join(f"{kind} {n}" for kind, n in sorted(report.block.skipped.items()))
    if skipped:
        page.line(f"  (not listed: {skipped})")


def _kubelet(page: Page, report: HostReport) -> None:
    kubelet = report.kubelet
    known = kubelet_report.known(kubelet)
    page.heading(f"KUBELET ({kubelet_report.read_from(kubelet) if known else 'not found'})",
                 "Kubelet")
    if not known:
        return
    rows = {
        "cpuManagerPolicy:": kubelet.cpu_manager_policy,
        "cpuManagerPolicyOptions:": " ".join(
            f"{k}={v}" for k, v in kubelet.cpu_manager_policy_options.items()),
        "topologyManagerPolicy:": kubelet.topology_manager_policy,
        "topologyManagerScope:": kubelet.topology_manager_scope,
        "memoryManagerPolicy:": kubelet.memory_manager_policy,
        "reservedSystemCPUs:": kubelet.reserved_system_cpus,
        "systemReserved memory:": kubelet.system_reserved_memory,
        "kubeReserved memory:": kubelet.kube_reserved_memory,
        "reservedMemory:": "; ".join(
            f"node {r.numa_node} " + " ".join(f"{k}={v}" for k, v in r.limits.items())
            for r in kubelet.reserved_memory),
    }
    for label, value in rows.items():
        page.row(label, or_dash(value))


def format_report(report: HostReport) -> str:
    """The report as one page of text, problems first."""
    page = Page(report.problems)
    page.lines.append("kvtune host probe (read-only)")
    _problems(page, report.problems)
    _cpu(page, report)
    _ple(page, report.cpu.ple)
    _numa(page, report)
    _memory(page, report)
    _daemons(page, report)
    _network(page, report)
    _block(page, report)
    _kubelet(page, report)
    return "\n".join(page.lines)
