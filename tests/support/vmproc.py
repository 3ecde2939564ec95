"""Builders of a running VM's /proc as the host shows it: a QEMU process with its vCPU threads and
their scheduler counters, its memory by NUMA node, and the per-CPU files (/proc/interrupts,
/proc/stat). The interference tests and bench/evidence_cost.py lay out hosts with them; a test
moves time on by writing the counters again with larger values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from support.hosttree import HostTree


@dataclass(frozen=True)
class Vcpu:
    """One vCPU thread's counters: run and run-delay ns, the CPU it last ran on."""

    tid: int
    run_ns: int = 0
    wait_ns: int = 0
    cpu: int = 0
    involuntary: int = 0
    migrations: int = 0


def stat_line(pid: int, comm: str, start: int, cpu: int = 0, flags: int = 0x400100) -> str:
    """A /proc/<pid>/stat line: flags are field 9, starttime field 22, processor field 39."""
    fields = ["S", "1", str(pid), str(pid), "0", "-1", str(flags)] + ["0"] * 12
    fields += [str(start)] + ["0"] * 16 + [str(cpu)] + ["0"] * 12
    return f"{pid} ({comm}) " + " ".join(fields) + "\n"


def vcpu_thread(tree: HostTree, pid: int, vcpu: int, thread: Vcpu, *, sched: bool = True) -> None:
    """A vCPU thread's task directory; `sched=False`: a kernel without CONFIG_SCHED_DEBUG."""
    base = f"/proc/{pid}/task/{thread.tid}"
    tree.file(f"{base}/comm", f"CPU {vcpu}/KVM")
    tree.file(f"{base}/schedstat", f"{thread.run_ns} {thread.wait_ns} 10\n")
    tree.file(f"{base}/stat", stat_line(thread.tid, f"CPU {vcpu}/KVM", 100, thread.cpu))
    tree.file(f"{base}/status", f"Name:\tCPU {vcpu}/KVM\nnonvoluntary_ctxt_switches:\t"
                                f"{thread.involuntary}\n")
    if sched:
        tree.file(f"{base}/sched", (
            f"CPU {vcpu}/KVM ({thread.tid}, #threads: 4)\n"
            "-------------------------------------------------------------------\n"
            f"se.sum_exec_runtime                          :        {thread.run_ns / 1e6:.6f}\n"
            f"se.nr_migrations                             :        {thread.migrations}\n"
            f"nr_involuntary_switches                      :        {thread.involuntary}\n"))


def qemu(
    tree: HostTree,
    pid: int,
    domain: str,
    vcpus: Mapping[int, Vcpu],
    *,
    start: int = 1000,
    allowed: str = "0-7",
    swap_kib: int = 0,
    ksm_pages: int | None = 0,
    numa_maps: str = "",
    mnt: str | None = None,
    sched: bool = True,
) -> HostTree:
    """A QEMU process as libvirt starts it (`-name guest=<domain>,debug-threads=on`), its main
    thread allowed on `allowed`, and one thread per vCPU; `mnt`: its mount namespace (a pod's)."""
    tree.process(pid, "qemu-system-x86", "/usr/bin/qemu-system-x86_64", "-name",
                 f"guest={domain},debug-threads=on", "-S", "-machine", "pc")
    tree.file(f"/proc/{pid}/stat", stat_line(pid, "qemu-system-x86", start))
    tree.file(f"/proc/{pid}/status", (
        f"Name:\tqemu-system-x86\nVmSwap:\t{swap_kib} kB\nCpus_allowed_list:\t{allowed}\n"))
    if ksm_pages is not None:
        tree.file(f"/proc/{pid}/ksm_merging_pages", f"{ksm_pages}\n")
    tree.file(f"/proc/{pid}/numa_maps", numa_maps)
    tree.file(f"/proc/{pid}/task/{pid}/comm", "qemu-system-x86")
    if mnt is not None:
        tree.link(f"/proc/{pid}/ns/mnt", mnt, absolute=True)
    for vcpu, thread in vcpus.items():
        vcpu_thread(tree, pid, vcpu, thread, sched=sched)
    return tree


def numa_maps(by_node_pages: Mapping[int, int], *, page_kib: int = 4, huge: bool = False) -> str:
    """One guest-RAM mapping with `by_node_pages` pages on each node, and a small library."""
    nodes = " ".join(f"N{node}={pages}" for node, pages in by_node_pages.items())
    kind = "file=/dev/hugepages/libvirt/qemu/guest huge dirty=1" if huge else "anon=1 dirty=1"
    return (f"7f0000000000 bind:0 {kind} {nodes} kernelpagesize_kB={page_kib}\n"
            "7f1000000000 default file=/usr/lib/libc.so.6 mapped=10 N0=10 kernelpagesize_kB=4\n")


#: A kernel thread's flags: PF_KTHREAD, and PF_NO_SETAFFINITY for those the kernel places.
KTHREAD, NO_SETAFFINITY = 0x00200000, 0x04000000


def process(tree: HostTree, pid: int, comm: str, allowed: str, *, kernel: bool = False,
            placed: bool = False, mnt: str | None = None) -> HostTree:
    """Any other process allowed on `allowed`; `kernel`: a kernel thread (no command line),
    `placed`: one the kernel places itself (per-CPU threads, workqueue workers)."""
    if kernel:
        tree.file(f"/proc/{pid}/comm", comm).file(f"/proc/{pid}/cmdline", b"")
        flags = KTHREAD | (NO_SETAFFINITY if placed else 0)
        tree.file(f"/proc/{pid}/stat", stat_line(pid, comm, 5, flags=flags))
    else:
        tree.process(pid, comm, f"/usr/bin/{comm}")
    if mnt is not None:
        tree.link(f"/proc/{pid}/ns/mnt", mnt, absolute=True)
    return tree.file(f"/proc/{pid}/status", f"Name:\t{comm}\nCpus_allowed_list:\t{allowed}\n")


def interrupts(tree: HostTree, cpus: int, lines: Mapping[str, tuple[Sequence[int], str]]) -> None:
    """/proc/interrupts with `cpus` columns: line -> (count per CPU, description)."""
    header = " " * 11 + "".join(f"CPU{c:<7}" for c in range(cpus)) + "\n"
    body = "".join(
        f"{label:>4}: " + " ".join(f"{n:10}" for n in counts) + f"   {name}\n"
        for label, (counts, name) in lines.items())
    tree.file("/proc/interrupts", header + body + " ERR:          0\n MIS:          0\n")


def proc_stat(tree: HostTree, busy_ticks: Sequence[int], idle_ticks: int = 1000) -> None:
    """/proc/stat with each CPU's busy ticks (as user time) and some idle."""
    lines = [f"cpu  {sum(busy_ticks)} 0 0 {idle_ticks * len(busy_ticks)} 0 0 0 0 0 0"]
    lines += [f"cpu{c} {b} 0 0 {idle_ticks} 0 0 0 0 0 0" for c, b in enumerate(busy_ticks)]
    tree.file("/proc/stat", "\n".join(lines) + "\nbtime 1700000000\n")
