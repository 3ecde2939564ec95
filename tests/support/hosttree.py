"""Builders that lay out sysfs/procfs-shaped host trees (files and symlinks) for the probe tests.

Host code is tested against real-looking trees rather than mocks of open(), as the SR-IOV
operator's fakefilesystem does: each builder writes what the kernel would show for one thing (a
NUMA node, a disk, a NIC with VFs), with sysfs' relative symlinks, so a probe reads a test tree
exactly as it reads a host. The ready-made shapes at the bottom compose them into whole hosts.

Tests may run as root, where file permissions do not stop reads, so "unreadable" files are made
as directories: opening one fails with EISDIR, a read error like EACCES would be.
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
import threading
import time
import typing as t
from collections.abc import Iterable, Mapping
from pathlib import Path

from kvtune_agent.host.cpulist import format_ids
from kvtune_agent.host.hostfs import HostFS
from kvtune_agent.host.systemd import Systemd

SECTOR = 512
INTEL_FLAGS = "fpu vme de pse tsc msr pae mce cx8 apic sep pdpe1gb lm constant_tsc"
DEFAULT_DISK_BYTES = 100 * 2**30
MSR_PROCBASED_CTLS2 = 0x48B
#: Open vSwitch's kernel datapath device, the master of every port of every OVS bridge.
OVS_DATAPATH = "ovs-system"
#: The host's routes and IPv6 addresses: PID 1's namespace, whatever the reader's.
ROUTES = "/proc/1/net/route"
IPV6_ROUTES = "/proc/1/net/ipv6_route"
IPV6_ADDRESSES = "/proc/1/net/if_inet6"


def _cpulist(ids: Iterable[int]) -> str:
    return ",".join(str(i) for i in sorted(ids))


def _cpumask(ids: Iterable[int], width: int = 128) -> str:
    """A cpumask as sysfs prints it: 32-bit hex words, most significant first, `width` bits
    (NR_CPUS on old kernels, so wider than the host)."""
    value = sum(1 << i for i in set(ids))
    bits = max(width, value.bit_length())
    words = [(value >> shift) & 0xFFFFFFFF for shift in range(0, bits, 32)]
    return ",".join(f"{word:08x}" for word in reversed(words))


def vf_address(pf: str, index: int) -> str:
    """The PCI address `HostTree.nic` gives VF `index` of the PF at `pf`: 8 per device number
    from 02 on its bus (0000:3b:00.0 -> 0000:3b:02.0, 0000:3b:02.1, ...)."""
    bus, _, _ = pf.rpartition(":")
    return f"{bus}:{2 + index // 8:02x}.{index % 8}"


def kernel_mask(ids: Iterable[int], cpus: int) -> str:
    """A cpumask as the kernel prints one for `cpus` possible CPUs (lib/vsprintf.c
    bitmap_string): 32-bit chunks, most significant first, the first only as many hex digits as
    its bits need (2 CPUs: "3"; 40 CPUs: "ff,ffffffff")."""
    value = sum(1 << i for i in set(ids))
    chunks = (cpus + 31) // 32
    first = ((cpus - 1) % 32 + 1 + 3) // 4
    words = [(value >> (32 * i)) & 0xFFFFFFFF for i in reversed(range(chunks))]
    return ",".join(f"{word:0{first if i == 0 else 8}x}" for i, word in enumerate(words))


class HostTree:
    """A host laid out under `root`; every method returns self so that calls chain."""

    def __init__(self, root: Path, *, nul_terminated: bool = False) -> None:
        self.root = root
        #: CPU masks and lists of topology and NUMA nodes end in "\n\0", as kernels that serve
        #: them as binary attributes and copy a byte past the text write them (about 5.15 on).
        self.nul_terminated = nul_terminated
        self._appended: dict[str, list[str]] = {}
        #: Interface indexes by network namespace (the root its sysfs is under, "" for the host).
        self._ifindexes: dict[str, dict[str, int]] = {}
        #: NUMA nodes built so far, and those whose distances the tree keeps consistent.
        self._nodes: list[int] = []
        self._default_distances: list[int] = []
        #: IOMMU groups made so far (`iommu_group`).
        self._iommu_groups = 0

    def fs(self) -> HostFS:
        return HostFS(self.root, command_prefix=fake_chroot(self.root))

    def kernel(self, **behaviour: t.Any) -> KernelFS:
        """A HostFS whose writes act like the kernel's (see KernelFS)."""
        return KernelFS(self.root, **behaviour)

    def systemd(self) -> Systemd:
        """The host's systemd as the agent reaches it: here, the fake from `systemctl()`."""
        return Systemd([str(self.root / FAKE_SYSTEMCTL.lstrip("/"))])

    def systemctl_calls(self) -> list[str]:
        """"verb unit" of every call the fake systemctl received, oldest first."""
        log = self.root / SYSTEMCTL_LOG.lstrip("/")
        return log.read_text().splitlines() if log.exists() else []

    # -- primitives -------------------------------------------------------------------------

    def file(self, path: str, content: str | bytes | int) -> HostTree:
        """A file at the host path, with sysfs' trailing newline for text values."""
        real = self.root / path.lstrip("/")
        real.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            real.write_bytes(content)
        else:
            real.write_text(f"{content}\n")
        return self

    def cpu_set(self, path: str, text: str) -> HostTree:
        """A CPU mask or list file of topology or a NUMA node, NUL-terminated where the tree
        is (see `nul_terminated`)."""
        return self.file(path, f"{text}\n\0".encode() if self.nul_terminated else text)

    def link(self, path: str, target: str, *, absolute: bool = False) -> HostTree:
        """A symlink to the host path `target`, relative like sysfs' unless `absolute`.

        The relative target is computed from where the link really lands, since its directory
        may itself be reached through a link (/sys/block/sda/holders is in /sys/devices/...).
        """
        real = self.root / path.lstrip("/")
        real.parent.mkdir(parents=True, exist_ok=True)
        landed = "/" + str(real.parent.resolve().relative_to(self.root.resolve()))
        real.symlink_to(target if absolute else os.path.relpath(target, landed))
        return self

    def unreadable(self, path: str) -> HostTree:
        """An entry that exists but cannot be read (see the module docstring)."""
        (self.root / path.lstrip("/")).mkdir(parents=True, exist_ok=True)
        return self

    def append_line(self, path: str, line: str, header: str = "") -> HostTree:
        """Add a line to a table-like file (/proc/1/mounts, /proc/swaps), keeping the others."""
        lines = self._appended.setdefault(path, [header] if header else [])
        lines.append(line)
        return self.file(path, "\n".join(lines))

    # -- CPU --------------------------------------------------------------------------------

    def cpuinfo(
        self,
        cpus: int,
        *,
        vendor: str = "GenuineIntel",
        model_name: str = "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz",
        family: int = 6,
        model: int = 106,
        flags: str = INTEL_FLAGS,
        vmx_flags: str | None = None,
    ) -> HostTree:
        """/proc/cpuinfo with `cpus` identical processor blocks."""
        vmx = f"vmx flags\t: {vmx_flags}\n" if vmx_flags is not None else ""
        blocks = [
            f"processor\t: {i}\nvendor_id\t: {vendor}\ncpu family\t: {family}\nmodel\t\t: "
            f"{model}\nmodel name\t: {model_name}\nstepping\t: 6\nflags\t\t: {flags}\n{vmx}"
            for i in range(cpus)
        ]
        return self.file("/proc/cpuinfo", "\n".join(blocks))

    def kvm_module(self, name: str, **params: int) -> HostTree:
        """A loaded kvm_intel/kvm_amd module with its parameters."""
        self.file(f"/sys/module/{name}/initstate", "live")
        for key, value in params.items():
            self.file(f"/sys/module/{name}/parameters/{key}", value)
        return self.file("/dev/kvm", b"")

    def msr(self, procbased_ctls2: int) -> HostTree:
        """/dev/cpu/0/msr holding IA32_VMX_PROCBASED_CTLS2 at its offset."""
        data = bytes(MSR_PROCBASED_CTLS2) + procbased_ctls2.to_bytes(8, "little")
        return self.file("/dev/cpu/0/msr", data)

    def cpu(
        self,
        cpu: int,
        *,
        package: int,
        core: int,
        siblings: Iterable[int],
        die: int = 0,
        cluster: int | None = None,
        book: int | None = None,
        drawer: int | None = None,
        online: bool = True,
        lists: bool = True,
        topology: bool = True,
        core_cpus: bool = False,
        thread_siblings: bool = True,
    ) -> HostTree:
        """One CPU's cpuN directory: its online file (none for cpu0, which x86 cannot unplug)
        and, when online, its topology; `lists=False` gives only the sibling mask, as kernels
        before the *_list files did. `book` and `drawer` add s390's book_id and drawer_id;
        `topology=False` leaves the topology directory out, as kernels that export none do.
        `core_cpus` adds core_cpus(_list), the name since 5.4; `thread_siblings=False` leaves
        the deprecated thread_siblings(_list) out, as a kernel that drops them would."""
        base = f"/sys/devices/system/cpu/cpu{cpu}"
        (self.root / base.lstrip("/")).mkdir(parents=True, exist_ok=True)
        if cpu:
            self.file(f"{base}/online", int(online))
        if not online or not topology:  # the kernel removes an offline CPU's topology
            return self
        top = f"{base}/topology"
        self.file(f"{top}/physical_package_id", package).file(f"{top}/core_id", core)
        self.file(f"{top}/die_id", die)
        for name, value in (("cluster_id", cluster), ("book_id", book), ("drawer_id", drawer)):
            if value is not None:
                self.file(f"{top}/{name}", value)
        names = [name for name, wanted in (("core_cpus", core_cpus),
                                           ("thread_siblings", thread_siblings)) if wanted]
        for name in names:
            if lists:
                self.cpu_set(f"{top}/{name}_list", _cpulist(siblings))
            else:
                self.cpu_set(f"{top}/{name}", _cpumask(siblings))
        return self

    def cpus(
        self,
        sockets: int,
        cores_per_socket: int,
        threads_per_core: int = 1,
        *,
        offline: Iterable[int] = (),
        isolated: Iterable[int] = (),
        online_file: bool = True,
        lists: bool = True,
        core_cpus: bool = False,
        possible: int | None = None,
    ) -> HostTree:
        """/sys/devices/system/cpu: Linux numbering (all first threads, then the siblings).

        `online_file=False` leaves out possible, present, online and offline, as old kernels
        do: only the cpuN directories and their online files say which CPUs are up.
        `possible` CPU slots (more than the CPUs, as firmware often declares) make `offline`
        name the empty slots too, as the kernel's offline is possible minus online.
        """
        base = "/sys/devices/system/cpu"
        cores = sockets * cores_per_socket
        total = cores * threads_per_core
        down = set(offline)
        if online_file:
            slots = set(range(possible or total))
            self.file(f"{base}/possible", _cpulist(slots))
            self.file(f"{base}/present", f"0-{total - 1}")
            self.file(f"{base}/online", _cpulist(set(range(total)) - down))
            self.file(f"{base}/offline", _cpulist(slots - (set(range(total)) - down)))
        self.file(f"{base}/isolated", _cpulist(isolated))
        for cpu in range(total):
            core = cpu % cores
            self.cpu(cpu, package=core // cores_per_socket, core=core % cores_per_socket,
                     siblings=[core + t * cores for t in range(threads_per_core)],
                     online=cpu not in down, lists=lists, core_cpus=core_cpus)
        return self

    # -- memory and NUMA --------------------------------------------------------------------

    def meminfo(
        self, total_kib: int, *, free_kib: int | None = None, swap_kib: int = 0,
        hugepage_kib: int = 2048, hugetlb: bool = True,
    ) -> HostTree:
        """/proc/meminfo and, as a kernel with hugetlbfs always has, the (empty) pool of the
        default hugepage size unless one is built; `hugetlb=False`: a kernel without
        hugetlbfs, with neither the Hugepage lines nor /sys/kernel/mm/hugepages."""
        free = total_kib // 2 if free_kib is None else free_kib
        pages = (f"\nHugePages_Total:       0\nHugepagesize:       {hugepage_kib} kB"
                 if hugetlb else "")
        pool = self.root / f"sys/kernel/mm/hugepages/hugepages-{hugepage_kib}kB"
        if hugetlb and not pool.exists():
            self.hugepages(hugepage_kib, 0, 0)
        return self.file("/proc/meminfo", (
            f"MemTotal:       {total_kib} kB\nMemFree:        {free} kB\n"
            f"MemAvailable:   {free} kB\nSwapTotal:      {swap_kib} kB\n"
            f"SwapFree:       {swap_kib} kB{pages}"
        ))

    def hugepages(
        self, size_kib: int, total: int, free: int, *, reserved: int = 0, surplus: int = 0,
        node: int | None = None,
    ) -> HostTree:
        """A hugepage pool, system-wide or (with `node`) on one NUMA node."""
        base = ("/sys/kernel/mm/hugepages" if node is None
                else f"/sys/devices/system/node/node{node}/hugepages")
        pool = f"{base}/hugepages-{size_kib}kB"
        self.file(f"{pool}/nr_hugepages", total).file(f"{pool}/free_hugepages", free)
        self.file(f"{pool}/surplus_hugepages", surplus)
        return self.file(f"{pool}/resv_hugepages", reserved) if node is None else self

    def numa_node(
        self,
        node: int,
        cpus: Iterable[int],
        mem_kib: int,
        *,
        distances: Iterable[int] | None = None,
        hugepages: Mapping[int, tuple[int, int]] | None = None,
        cpumap_only: bool = False,
        free_kib: int | None = None,
        meminfo: bool = True,
    ) -> HostTree:
        """/sys/devices/system/node/nodeN; `hugepages` maps page KiB to (total, free); half the
        memory is free unless `free_kib` says otherwise. Without `distances` the node is 10
        from itself and 20 from every other node, as the kernel writes one per online node
        (the files of such nodes are rewritten as nodes are added).

        The node may list offline CPUs, as POWER kernels do. `cpumap_only` gives its CPUs as a
        cpumap alone, as kernels before node/cpulist did. `meminfo=False` leaves the node's
        meminfo out (a /sys only partly there, or a read that fails).
        """
        base = f"/sys/devices/system/node/node{node}"
        free = mem_kib // 2 if free_kib is None else free_kib
        if cpumap_only:
            self.cpu_set(f"{base}/cpumap", _cpumask(cpus))
        else:
            self.cpu_set(f"{base}/cpulist", _cpulist(cpus))
        self._nodes = sorted({*self._nodes, node})
        if distances is None:
            self._default_distances.append(node)
        else:
            self.file(f"{base}/distance", " ".join(map(str, distances)))
        for own in self._default_distances:
            self.file(f"/sys/devices/system/node/node{own}/distance",
                      " ".join("10" if other == own else "20" for other in self._nodes))
        if meminfo:
            self.file(f"{base}/meminfo", (
                f"Node {node} MemTotal:       {mem_kib} kB\n"
                f"Node {node} MemFree:        {free} kB\n"
                f"Node {node} MemUsed:        {mem_kib - free} kB"
            ))
        for size_kib, (total, free) in (hugepages or {}).items():
            self.hugepages(size_kib, total, free, node=node)
        return self

    def thp(self, enabled: str = "madvise", defrag: str = "madvise") -> HostTree:
        modes = ("always", "madvise", "never")
        base = "/sys/kernel/mm/transparent_hugepage"
        for name, chosen in (("enabled", enabled), ("defrag", defrag)):
            self.file(f"{base}/{name}", " ".join(f"[{m}]" if m == chosen else m for m in modes))
        return self

    def cmdline(self, text: str) -> HostTree:
        return self.file("/proc/cmdline", text)

    def ksm(self, run: int, *, shared: int = 0, sharing: int = 0, across: int = 1) -> HostTree:
        base = "/sys/kernel/mm/ksm"
        self.file(f"{base}/run", run).file(f"{base}/pages_shared", shared)
        return self.file(f"{base}/pages_sharing", sharing).file(
            f"{base}/merge_across_nodes", across)

    # -- CPU isolation: IRQs, workqueues, NUMA balancing, kernel threads -------------------

    def irq(
        self, irq: int, affinity: Iterable[int], *, name: str = "", settable: bool = True
    ) -> HostTree:
        """/proc/irq/N with its smp_affinity_list (and, as the kernel has it, a directory per
        handler when `name` is given); `settable=False`: read-only, as kernels since 6.12 make
        it for an IRQ userspace may not move (a managed one)."""
        self.file(f"/proc/irq/{irq}/smp_affinity_list", format_ids(affinity))
        if not settable:
            (self.root / f"proc/irq/{irq}/smp_affinity_list").chmod(0o444)
        if name:
            (self.root / f"proc/irq/{irq}/{name}").mkdir(parents=True, exist_ok=True)
        return self

    def irqs(
        self, affinities: Mapping[int, Iterable[int]], *, default: Iterable[int], cpus: int
    ) -> HostTree:
        """/proc/irq: each IRQ's affinity, and default_smp_affinity as a mask as wide as the
        kernel prints it for `cpus` possible CPUs (nr_cpu_ids)."""
        for irq, affinity in affinities.items():
            self.irq(irq, affinity)
        return self.file("/proc/irq/default_smp_affinity", kernel_mask(default, cpus))

    def workqueue(self, cpumask: Iterable[int], *, cpus: int) -> HostTree:
        """/sys/devices/virtual/workqueue/cpumask, as wide as the kernel prints it."""
        return self.file("/sys/devices/virtual/workqueue/cpumask", kernel_mask(cpumask, cpus))

    def cpufreq(self, cpu: int, governor: str,
                offered: Iterable[str] = ("performance", "powersave")) -> HostTree:
        """A CPU's cpufreq policy: its scaling_governor and the governors it offers."""
        base = f"/sys/devices/system/cpu/cpu{cpu}/cpufreq"
        self.file(f"{base}/scaling_available_governors", " ".join(offered))
        return self.file(f"{base}/scaling_governor", governor)

    def idle_states(self, cpu: int, *states: tuple[str, int]) -> HostTree:
        """A CPU's cpuidle states (name, exit latency in us), all enabled, in order."""
        for index, (name, latency) in enumerate(states):
            base = f"/sys/devices/system/cpu/cpu{cpu}/cpuidle/state{index}"
            self.file(f"{base}/name", name).file(f"{base}/latency", latency)
            self.file(f"{base}/disable", 0)
        return self

    def numa_balancing(self, value: int) -> HostTree:
        return self.file("/proc/sys/kernel/numa_balancing", value)

    def kernel_thread(
        self, pid: int, comm: str, affinity: Iterable[int], *, bound: bool = False
    ) -> HostTree:
        """A kernel thread: no command line, PF_KTHREAD in its stat flags, PF_NO_SETAFFINITY
        too when `bound` (per-CPU threads, workqueue rescuers), and its Cpus_allowed_list."""
        flags = 0x00208040 | (0x04000000 if bound else 0)
        self.file(f"/proc/{pid}/comm", comm)
        self.file(f"/proc/{pid}/cmdline", b"")
        self.file(f"/proc/{pid}/stat", f"{pid} ({comm}) S 2 0 0 0 -1 {flags} 0 0 0 0 0 0")
        return self.file(f"/proc/{pid}/status", (
            f"Name:\t{comm}\nCpus_allowed:\t{kernel_mask(affinity, 64)}\n"
            f"Cpus_allowed_list:\t{format_ids(affinity)}"))

    # -- processes and units ----------------------------------------------------------------

    def process(self, pid: int, comm: str, *argv: str) -> HostTree:
        self.file(f"/proc/{pid}/comm", comm)
        return self.file(f"/proc/{pid}/cmdline", "\0".join(argv or (comm,)).encode() + b"\0")

    def unit(
        self, name: str, *, wanted_by: Iterable[str] = (), masked: bool = False,
        directory: str = "/usr/lib/systemd/system",
    ) -> HostTree:
        """A packaged systemd unit, enabled via `.wants/` links or masked via /dev/null."""
        self.file(f"{directory}/{name}", "[Service]\nExecStart=/usr/sbin/x")
        if masked:
            self.link(f"/etc/systemd/system/{name}", "/dev/null", absolute=True)
        for target in wanted_by:
            self.link(f"/etc/systemd/system/{target}.wants/{name}", f"{directory}/{name}",
                      absolute=True)
        return self

    def systemctl(self, *, booted_with_systemd: bool = True) -> HostTree:
        """A fake systemctl (see `systemd()`) that changes this tree as systemd changes a host.

        enable/disable add or remove the multi-user.target.wants/ link, start/stop add or remove
        a /proc/<pid> for the daemon, is-enabled/is-active answer from the tree; every call is
        logged (`systemctl_calls`). Without systemd it fails the way systemctl does in a
        container whose PID 1 is not systemd.
        """
        script = FAKE_SYSTEMCTL_SCRIPT if booted_with_systemd else NO_SYSTEMD_SCRIPT
        self.file(FAKE_SYSTEMCTL, f"#!{sys.executable}\n"
                  + script.replace("ROOT_DIR", repr(str(self.root))))
        (self.root / FAKE_SYSTEMCTL.lstrip("/")).chmod(0o755)
        return self

    # -- network ----------------------------------------------------------------------------

    def _netdev(self, name: str, pci_dir: str, *, operstate: str = "up", root: str = "") -> None:
        netdir = f"{pci_dir}/net/{name}"
        self.file(f"{netdir}/operstate", operstate).file(f"{netdir}/mtu", 1500)
        self.file(f"{netdir}/address", "3c:fd:fe:00:00:01")
        self.link(f"{netdir}/device", pci_dir)
        self._index(netdir, name, root)
        self.link(f"{root}/sys/class/net/{name}", netdir)

    def _index(self, netdir: str, name: str, root: str, iflink: int | None = None) -> int:
        """The next interface index of the namespace whose sysfs is under `root`, written with
        `iflink` (the device's own index unless it is linked to another: a veth's peer, a
        macvtap's lower device)."""
        indexes = self._ifindexes.setdefault(root, {})
        index = indexes[name] = len(indexes) + 2  # 1 is lo
        self.file(f"{netdir}/ifindex", index).file(f"{netdir}/iflink", iflink or index)
        return index

    def ifindex(self, name: str, root: str = "") -> int:
        """The index an earlier builder gave interface `name` in the namespace under `root`."""
        return self._ifindexes[root][name]

    def _pci(
        self, address: str, driver: str | None, numa_node: int, *, device: str = "0x159b",
        iommu: bool = True,
    ) -> str:
        """A PCI function: ids, NUMA node, its driver_override ("(null)": none), its own IOMMU
        group where the IOMMU is on, and its driver's link."""
        pci = f"/sys/devices/pci0000:00/{address}"
        self.file(f"{pci}/vendor", "0x8086").file(f"{pci}/device", device)
        self.file(f"{pci}/numa_node", numa_node).file(f"{pci}/driver_override", "(null)")
        self.link(f"/sys/bus/pci/devices/{address}", pci)
        self.file("/sys/bus/pci/drivers_probe", "")
        if iommu:
            self.iommu_group(address)
        if driver:
            self.driver(driver)
            self.link(f"{pci}/driver", f"/sys/bus/pci/drivers/{driver}")
        return pci

    def driver(self, name: str) -> HostTree:
        """A loaded PCI driver: its directory under /sys/bus/pci/drivers, with bind and unbind."""
        return self.file(f"/sys/bus/pci/drivers/{name}/bind", "").file(
            f"/sys/bus/pci/drivers/{name}/unbind", "")

    def iommu_group(self, address: str) -> HostTree:
        """The PCI function in an IOMMU group of its own, linked both ways as the kernel does."""
        group = f"/sys/kernel/iommu_groups/{self._iommu_groups}"
        self._iommu_groups += 1
        self.link(f"{group}/devices/{address}", f"/sys/devices/pci0000:00/{address}")
        return self.link(f"/sys/devices/pci0000:00/{address}/iommu_group", group)

    def open_file(self, pid: int, fd: int, target: str) -> HostTree:
        """Process `pid` holds `target` (a host path, e.g. /dev/vfio/12) open as fd `fd`."""
        return self.link(f"/proc/{pid}/fd/{fd}", target, absolute=True)

    def nic(
        self,
        name: str,
        address: str,
        *,
        driver: str = "ice",
        numa_node: int = 0,
        total_vfs: int | None = None,
        vf_drivers: Iterable[str | None] = (),
        operstate: str = "up",
        iommu: bool = True,
    ) -> HostTree:
        """A PCI NIC; each entry of `vf_drivers` adds a VF bound to that driver (None: unbound).

        VFs bound to a network driver (iavf) get their own netdev, as on a host, down. With
        `iommu` every function has an IOMMU group of its own. The PF says its VFs' device id
        (sriov_vf_device: 1889, an E810's iavf VF).
        """
        pci = self._pci(address, driver, numa_node, iommu=iommu)
        self._netdev(name, pci, operstate=operstate)
        vf_drivers = list(vf_drivers)
        if total_vfs is not None:
            self.file(f"{pci}/sriov_totalvfs", total_vfs)
            self.file(f"{pci}/sriov_numvfs", len(vf_drivers))
            self.file(f"{pci}/sriov_vf_device", "1889")
        for index, vf_driver in enumerate(vf_drivers):
            vf = self._pci(vf_address(address, index), vf_driver, numa_node, device="0x1889",
                           iommu=iommu)
            self.link(f"{vf}/physfn", pci).link(f"{pci}/virtfn{index}", vf)
            if vf_driver == "iavf":
                self._netdev(f"{name}v{index}", vf, operstate="down")
                self.file(f"{vf}/net/{name}v{index}/flags", "0x1002")
        return self

    def virtual_nic(self, name: str) -> HostTree:
        """An interface with no device behind it (lo, a bridge, a veth)."""
        netdir = f"/sys/devices/virtual/net/{name}"
        self.file(f"{netdir}/operstate", "unknown")
        return self.link(f"/sys/class/net/{name}", netdir)

    # -- software switches and the interfaces plugged into them ------------------------------
    # `root` is where a namespace's sysfs is seen: "" for the host's, /proc/<pid>/root for a pod
    # (a container's /sys shows the interfaces of its own network namespace).

    def _virtual(
        self, name: str, *, root: str = "", iflink: int | None = None, devtype: str | None = None,
        master: str | None = None,
    ) -> str:
        netdir = f"{root}/sys/devices/virtual/net/{name}"
        self.file(f"{netdir}/operstate", "up")
        index = self._index(netdir, name, root, iflink)
        kind = f"DEVTYPE={devtype}\n" if devtype else ""
        self.file(f"{netdir}/uevent", f"{kind}INTERFACE={name}\nIFINDEX={index}")
        self.link(f"{root}/sys/class/net/{name}", netdir)
        if master is not None:
            self.plug(name, master, root=root)
        return netdir

    def plug(self, port: str, master: str, *, root: str = "") -> HostTree:
        """Enslave `port` to `master`: a Linux bridge (brif/ and brport/ links) or Open
        vSwitch's datapath `ovs-system` (a master link only: OVS keeps its bridges in userspace)."""
        net = f"{root}/sys/class/net"
        self.link(f"{net}/{port}/master", f"{net}/{master}")
        self.link(f"{net}/{port}/upper_{master}", f"{net}/{master}")
        self.link(f"{net}/{master}/lower_{port}", f"{net}/{port}")
        if master != OVS_DATAPATH:
            self.file(f"{net}/{port}/brport/state", 3)
            self.link(f"{net}/{master}/brif/{port}", f"{net}/{port}/brport")
        return self

    def bridge(self, name: str, *, root: str = "") -> HostTree:
        """A Linux bridge (its bridge/ directory and DEVTYPE=bridge), with no ports yet."""
        netdir = self._virtual(name, root=root, devtype="bridge")
        self.file(f"{netdir}/bridge/stp_state", 0)
        (self.root / f"{netdir}/brif".lstrip("/")).mkdir()
        return self

    def bond(self, name: str, *slaves: str) -> HostTree:
        """A bonding device and its slaves (each with a master link and bonding_slave/)."""
        netdir = self._virtual(name, devtype="bond")
        self.file(f"{netdir}/bonding/mode", "802.3ad 4")
        net = "/sys/class/net"
        for slave in slaves:
            self.link(f"{net}/{slave}/master", f"{net}/{name}")
            self.file(f"{net}/{slave}/bonding_slave/state", "active")
        return self

    def ovs(self, *bridges: str) -> HostTree:
        """Open vSwitch's kernel datapath `ovs-system` and the internal port named after each
        of its bridges (the devices OVS creates, DEVTYPE=openvswitch)."""
        self._virtual(OVS_DATAPATH, devtype="openvswitch")
        for name in bridges:
            self._virtual(name, devtype="openvswitch", master=OVS_DATAPATH)
        return self

    def veth(
        self, name: str, peer: str, *, peer_root: str = "", master: str | None = None,
        peer_master: str | None = None,
    ) -> HostTree:
        """A veth pair: `name` on the host (plugged into `master`), `peer` in the namespace
        under `peer_root` (a pod's eth0 or net1); each one's iflink is the other's index."""
        here = self._virtual(name, master=master)
        self._virtual(peer, root=peer_root, iflink=self.ifindex(name), master=peer_master)
        return self.file(f"{here}/iflink", self.ifindex(peer, peer_root))

    def tap(
        self, name: str, *, root: str = "", master: str | None = None, tun: bool = False
    ) -> HostTree:
        """A tap device (tun_flags marks the tun driver: IFF_TAP|IFF_NO_PI), plugged into
        `master`; with `tun`, an L3 tun device (IFF_TUN|IFF_NO_PI) instead."""
        netdir = self._virtual(name, root=root, master=master)
        self.file(f"{netdir}/tun_flags", "0x1001" if tun else "0x1002")
        return self

    def macvtap(
        self, name: str, lower: str, *, root: str = "", macvlan: bool = False
    ) -> HostTree:
        """A macvtap (or, with `macvlan`, a macvlan) device on the host's `lower` interface, in
        the namespace under `root`; its iflink is the lower device's index, and only in the
        lower device's own namespace does sysfs link the two (lower_<name>)."""
        netdir = self._virtual(name, root=root, iflink=self.ifindex(lower))
        if not macvlan:
            index = self.ifindex(name, root)
            self.file(f"{netdir}/macvtap/tap{index}/dev", f"237:{index}")
        if not root:
            self.link(f"{netdir}/lower_{lower}", f"/sys/class/net/{lower}")
        return self

    def vlan(self, name: str, lower: str) -> HostTree:
        """An 802.1Q VLAN device on the host's `lower` interface (DEVTYPE=vlan, its iflink the
        lower device's index), linked both ways as the kernel links stacked devices."""
        netdir = self._virtual(name, iflink=self.ifindex(lower), devtype="vlan")
        self.link(f"{netdir}/lower_{lower}", f"/sys/class/net/{lower}")
        return self.link(f"/sys/class/net/{lower}/upper_{name}", f"/sys/class/net/{name}")

    # -- the host's own addresses and routes (PID 1's network namespace) ---------------------

    def route(
        self, device: str, destination: str = "0001A8C0", mask: str = "00FFFFFF"
    ) -> HostTree:
        """An IPv4 route of the main table through `device`, as /proc/net/route writes it
        (little-endian hex; the default: 192.168.1.0/24). `default_route` has both at 0."""
        return self.append_line(
            ROUTES, f"{device}\t{destination}\t00000000\t0001\t0\t0\t0\t{mask}\t0\t0\t0",
            header="Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU"
            "\tWindow\tIRTT")

    def default_route(self, device: str, *, ipv6: bool = False) -> HostTree:
        """The default route through `device`: IPv4 in /proc/net/route, IPv6 in ipv6_route."""
        if not ipv6:
            return self.route(device, "00000000", "00000000")
        zero = "0" * 32
        return self.append_line(
            IPV6_ROUTES, f"{zero} 00 {zero} 00 fe800000000000000000000000000001 00000400 "
            f"00000001 00000000 00000003 {device:>8}")

    def ipv6_address(
        self, device: str, address: str = "20010db8000000000000000000000001", scope: str = "00"
    ) -> HostTree:
        """An IPv6 address of `device` in /proc/net/if_inet6 (scope 00 global, 20 link)."""
        return self.append_line(IPV6_ADDRESSES, f"{address} 02 40 {scope} 80 {device:>8}")

    def pod_vf(self, name: str, address: str, *, root: str, pf_address: str) -> HostTree:
        """An SR-IOV VF's netdev moved into the namespace under `root` (SR-IOV CNI with a
        kernel driver); its device is a PCI function with a physfn link."""
        pci = f"{root}/sys/devices/pci0000:00/{address}"
        self.link(f"{pci}/physfn", f"{root}/sys/devices/pci0000:00/{pf_address}")
        self._netdev(name, pci, root=root)
        return self

    # -- block ------------------------------------------------------------------------------

    def disk(
        self,
        name: str,
        *,
        size_bytes: int = DEFAULT_DISK_BYTES,
        model: str = "PERC H755",
        rotational: bool = False,
        wwid: str | None = None,
        content: bytes | None = bytes(4096),
        tail: bytes = b"",
        dm: tuple[str, str] | None = None,
        read_only: bool = False,
    ) -> HostTree:
        """A whole disk in /sys/block and its /dev node (None: unreadable), with udev's by-id
        links: wwn- for a `wwid`, dm-name- and dm-uuid- for a device-mapper device.

        The node is a sparse file of `size_bytes`, as long as the disk, holding `content` at its
        start and `tail` at its end. `dm` = (name, uuid) makes it a device-mapper device, e.g.
        ("mpatha", "mpath-3600...").
        """
        parent = "/sys/devices/virtual/block" if dm else "/sys/devices/pci0000:00/0000:00:17.0"
        sysdir = f"{parent}/{name}"
        self.file(f"{sysdir}/size", size_bytes // SECTOR)
        self.file(f"{sysdir}/ro", int(read_only))
        self.file(f"{sysdir}/queue/rotational", int(rotational))
        (self.root / sysdir.lstrip("/") / "holders").mkdir(parents=True, exist_ok=True)
        links = []
        if dm:
            self.file(f"{sysdir}/dm/name", dm[0]).file(f"{sysdir}/dm/uuid", dm[1])
            self.link(f"/dev/mapper/{dm[0]}", f"/dev/{name}")
            links += [f"dm-name-{dm[0]}", f"dm-uuid-{dm[1]}"]
        else:
            self.file(f"{sysdir}/device/model", model).file(f"{sysdir}/device/vendor", "DELL")
        if wwid:
            self.file(f"{sysdir}/device/wwid", wwid)
            links.append("wwn-" + (f"0x{wwid[4:]}" if wwid.startswith("naa.") else wwid))
        for link in links:  # several paths of one LUN: udev links one of them, here the first
            if not os.path.lexists(self.root / "dev/disk/by-id" / link):
                self.link(f"/dev/disk/by-id/{link}", f"/dev/{name}")
        self.link(f"/sys/block/{name}", sysdir)
        if content is None:
            return self.unreadable(f"/dev/{name}")
        self.file(f"/dev/{name}", content)
        with open(self.root / "dev" / name, "r+b") as node:
            node.truncate(max(size_bytes, len(content)))
            node.seek(size_bytes - len(tail))
            node.write(tail)
        return self

    def partition(self, disk: str, part: str) -> HostTree:
        base = f"/sys/block/{disk}/{part}"
        (self.root / base.lstrip("/") / "holders").mkdir(parents=True, exist_ok=True)
        return self.file(f"{base}/partition", part.removeprefix(disk).lstrip("p"))

    def holder(self, device: str, holder: str) -> HostTree:
        """`holder` (e.g. dm-0) is built on `device` (a disk, or disk/partition)."""
        base = f"/sys/block/{device}"
        return self.link(f"{base}/holders/{holder}", f"/sys/block/{holder}")

    def mount(self, device: str, target: str, fstype: str = "ext4") -> HostTree:
        """`device` (a /dev path) mounted at `target`, as the host's init sees it."""
        return self.append_line("/proc/1/mounts", f"{device} {target} {fstype} rw,relatime 0 0")

    def swap(self, device: str) -> HostTree:
        return self.append_line(
            "/proc/swaps", f"{device} partition 8388604 0 -2",
            header="Filename\tType\tSize\tUsed\tPriority",
        )

    # -- kubelet ----------------------------------------------------------------------------

    def kubelet_config(self, text: str, path: str = "/var/lib/kubelet/config.yaml") -> HostTree:
        return self.file(path, text)


# -- host commands -----------------------------------------------------------------------------

#: Stands in for `chroot <root>`: runs the tree's own executable (a fake grubby or update-grub,
#: see boottree.py) instead of the machine's, which finds the tree through the root baked into it.
_FAKE_CHROOT = "import os, sys; os.execv(sys.argv[1] + sys.argv[2], sys.argv[2:])"


def fake_chroot(root: Path) -> tuple[str, ...]:
    """The command prefix under which a HostFS of this tree runs host commands."""
    return (sys.executable, "-c", _FAKE_CHROOT, str(root).rstrip("/"))


# -- writes as the kernel takes them ---------------------------------------------------------


class KernelFS(HostFS):
    """A HostFS whose writes to a test tree behave like the kernel's for the files kvtune writes.

    Choice files ("always [madvise] never") move their brackets and refuse other values;
    nr_hugepages keeps pages in use or reserved (as surplus pages when the count asked is below
    them), updates free_hugepages, surplus_hugepages and the system-wide pool, and
    allocates at most `hugepage_limit` pages per pool; sriov_numvfs refuses a change between two
    non-zero counts (EBUSY) and counts above sriov_totalvfs (ERANGE); KSM's run=2 unmerges
    (pages_shared and pages_sharing drop to 0). Tests make a write fail with
    `refuse` (path -> errno), or `refuse_value` ((path, value) -> errno), and see every write in
    `writes`. A write to a path in `hang` blocks until `release()`, and so does every read of
    that file meanwhile, as with a driver stuck in sriov_numvfs (the kernel serialises them).

    PCI drivers as the driver core binds them: driver_override takes a driver's name ("" clears
    it, which reads "(null)"); a PCI address written to /sys/bus/pci/drivers/<d>/unbind unbinds
    the device from <d> (ENODEV when <d> is not its driver), taking its netdevs away;
    /sys/bus/pci/drivers_probe binds an unbound device to its driver_override, when that driver
    is loaded (its directory exists), else to its `default_driver`, else to nothing. A driver's
    probe that fails (`refuse_bind`: (address, driver) pairs) leaves the device unbound and the
    write succeeds, as the kernel's does: only reading the driver link back shows it.
    """

    def __init__(
        self, root: Path, *, hugepage_limit: int | None = None,
        refuse: Mapping[str, int] | None = None,
        refuse_value: Mapping[tuple[str, str], int] | None = None,
        hang: Iterable[str] = (),
        refuse_bind: Iterable[tuple[str, str]] = (),
        default_driver: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(root, command_prefix=fake_chroot(root))
        self.refuse_bind = set(refuse_bind)
        self.default_driver = dict(default_driver or {})
        self.hugepage_limit = hugepage_limit
        self.refuse = dict(refuse or {})
        # By real path: the agent may reach a sysfs file through another link than the test.
        self.refuse_value = {(self._resolved(path), value): code
                             for (path, value), code in (refuse_value or {}).items()}
        self.hang = set(hang)
        self.released = threading.Event()
        self.writes: list[tuple[str, str]] = []

    def _resolved(self, path: str) -> str:
        return os.path.realpath(self.root / path.lstrip("/"))

    def release(self) -> None:
        """Let hung writes return; readers blocked behind them get the old value."""
        self.released.set()

    def _hang(self, path: str) -> None:
        # A FIFO in place of the file blocks every open() for reading, as the kernel's lock does.
        real = self.root / path.lstrip("/")
        old = real.read_bytes()
        real.unlink()
        os.mkfifo(real)
        self.released.wait()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # feed each blocked reader, then restore the file
            try:
                fd = os.open(real, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: no reader waits any more
                break
            os.write(fd, old)
            os.close(fd)
            time.sleep(0.01)
        real.unlink()
        real.write_bytes(old)

    def _store(self, path: str, value: str) -> None:
        self.writes.append((path, value))
        if path in self.hang:
            self._hang(path)
        code = self.refuse_value.get((self._resolved(path), value))
        if code:
            raise OSError(code, os.strerror(code), path)
        if path in self.refuse:
            code = self.refuse[path]
            raise OSError(code, os.strerror(code), path)
        real = self.root / path.lstrip("/")
        if not real.is_file():
            return super()._store(path, value)
        old = real.read_text().strip()
        if "[" in old:
            choices = old.replace("[", "").replace("]", "").split()
            if value not in choices:
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), path)
            real.write_text(" ".join(f"[{c}]" if c == value else c for c in choices) + "\n")
        elif path.endswith("/nr_hugepages"):
            self._resize_pool(real, int(value))
        elif path.endswith("/sriov_numvfs"):
            total = int((real.parent / "sriov_totalvfs").read_text())
            if int(value) > total:
                raise OSError(errno.ERANGE, os.strerror(errno.ERANGE), path)
            if int(old) and int(value) and int(old) != int(value):
                raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), path)
            real.write_text(f"{value}\n")
        elif path.endswith("/driver_override"):
            real.write_text(f"{value or '(null)'}\n")
        elif path.startswith("/sys/bus/pci/drivers/") and path.endswith("/unbind"):
            self._unbind(path.split("/")[5], value)
        elif path == "/sys/bus/pci/drivers_probe":
            self._probe(value)
        elif path == "/sys/kernel/mm/ksm/run" and value == "2":  # unmerges every shared page
            for name in ("run", "pages_shared", "pages_sharing"):
                (real.parent / name).write_text(f"{value if name == 'run' else 0}\n")
        else:
            super()._store(path, value)
        return None

    def _device(self, address: str) -> Path:
        device = self.root / "sys/bus/pci/devices" / address
        if not device.exists():
            raise OSError(errno.ENODEV, os.strerror(errno.ENODEV), address)
        return device.resolve()

    def _unbind(self, driver: str, address: str) -> None:
        device = self._device(address)
        if not (device / "driver").is_symlink() or (device / "driver").resolve().name != driver:
            raise OSError(errno.ENODEV, os.strerror(errno.ENODEV), address)
        (device / "driver").unlink()
        for netdev in list((device / "net").glob("*")) if (device / "net").is_dir() else []:
            shutil.rmtree(netdev)
            (self.root / "sys/class/net" / netdev.name).unlink(missing_ok=True)

    def _probe(self, address: str) -> None:
        device = self._device(address)
        if (device / "driver").is_symlink():
            return
        override = (device / "driver_override").read_text().strip()
        driver = self.default_driver.get(address) if override == "(null)" else override
        loaded = driver is not None and (self.root / "sys/bus/pci/drivers" / driver).is_dir()
        if driver is None or not loaded or (address, driver) in self.refuse_bind:
            return
        relative = os.path.relpath(self.root / "sys/bus/pci/drivers" / driver, device)
        (device / "driver").symlink_to(relative)

    def _resize_pool(self, nr: Path, wanted: int) -> None:
        """As the kernel's set_max_huge_pages: the pool never drops below the pages in use, nor
        below what the host's reserved pages need beyond the other nodes' free pages; the pages
        kept beyond the count asked become surplus, freed to the host once released (as a real
        kernel showed, tests/realhost)."""
        pool = nr.parent
        system = self.root / "sys/kernel/mm/hugepages" / pool.name
        total, free, surplus = (self._count(pool / f"{n}_hugepages") for n in (
            "nr", "free", "surplus"))
        host_total, host_free, reserved = (self._count(system / f"{n}_hugepages", default)
                                           for n, default in (("nr", total), ("free", free),
                                                              ("resv", 0)))
        others_free = host_free - free
        new = max(wanted, total - free, reserved - others_free + total - free)
        if new > total and self.hugepage_limit is not None:
            new = max(total, min(new, self.hugepage_limit))
        new_surplus = max(0, new - wanted)
        writes = {pool / "nr_hugepages": new, pool / "free_hugepages": free + new - total,
                  pool / "surplus_hugepages": new_surplus}
        if nr.parent != system:
            writes |= {system / "nr_hugepages": host_total + new - total,
                       system / "free_hugepages": host_free + new - total,
                       system / "surplus_hugepages": (
                           self._count(system / "surplus_hugepages") + new_surplus - surplus)}
        for path, count in writes.items():
            if path.exists():
                path.write_text(f"{count}\n")

    @staticmethod
    def _count(path: Path, default: int = 0) -> int:
        return int(path.read_text()) if path.exists() else default


FAKE_SYSTEMCTL = "/usr/local/sbin/fake-systemctl"
SYSTEMCTL_LOG = "/var/log/fake-systemctl.log"
FAKE_SYSTEMCTL_SCRIPT = """
import glob, os, pathlib, shutil, sys

ROOT = pathlib.Path(ROOT_DIR)
DIRS = ("etc/systemd/system", "run/systemd/system", "usr/lib/systemd/system", "lib/systemd/system")
verb, unit = sys.argv[1], sys.argv[2]
(ROOT / "var/log").mkdir(parents=True, exist_ok=True)
with open(ROOT / "var/log/fake-systemctl.log", "a") as log:
    log.write(f"{verb} {unit}\\n")
name = unit.removesuffix(".service")
found = [ROOT / d / unit for d in DIRS if os.path.lexists(ROOT / d / unit)]
etc = ROOT / "etc/systemd/system"
masked = os.path.islink(etc / unit) and os.readlink(etc / unit) == "/dev/null"
# glob.glob, not pathlib: the .wants/ links are absolute and dangle outside the host root
wants = [pathlib.Path(p) for p in sorted(glob.glob(f"{etc}/*.wants/{unit}"))]


def processes():
    for pid in sorted((ROOT / "proc").glob("[0-9]*")):
        comm = (pid / "comm").read_text().strip() if (pid / "comm").exists() else ""
        argv = (pid / "cmdline").read_bytes().split(b"\\0") if (pid / "cmdline").exists() else []
        if comm == name or any(os.path.basename(a.decode()) == name for a in argv[1:3]):
            yield pid


if not found:
    if verb == "is-active":
        print("inactive")
        sys.exit(3)
    print(f"Failed to get unit file state for {unit}: No such file or directory", file=sys.stderr)
    sys.exit(1 if verb == "is-enabled" else 5)
if verb == "is-enabled":
    state = "masked" if masked else "enabled" if wants else "disabled"
    print(state)
    sys.exit(0 if state == "enabled" else 1)
if verb == "is-active":
    active = any(processes())
    print("active" if active else "inactive")
    sys.exit(0 if active else 3)
if masked and verb in ("enable", "start"):
    print(f"Failed to {verb} {unit}: Unit {unit} is masked.", file=sys.stderr)
    sys.exit(1)
if verb == "enable":
    link = etc / "multi-user.target.wants" / unit
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to("/" + str(found[-1].relative_to(ROOT)))
elif verb == "disable":
    for link in wants:
        link.unlink()
elif verb == "start":
    if not any(processes()):
        pid = ROOT / "proc" / str(40000 + len(list((ROOT / "proc").glob("[0-9]*"))))
        pid.mkdir(parents=True)
        (pid / "comm").write_text(name + "\\n")
        (pid / "cmdline").write_bytes(f"/usr/sbin/{name}".encode() + b"\\0")
elif verb == "stop":
    for pid in list(processes()):
        shutil.rmtree(pid)
elif verb == "restart":
    pass  # the unit's processes stay as the test laid them out; the call is in the log
else:
    print(f"Unknown command verb {verb}.", file=sys.stderr)
    sys.exit(1)
"""
NO_SYSTEMD_SCRIPT = """
import sys
import threading
import time

print("System has not been booted with systemd as init system (PID 1). Can't operate.")
print("Failed to connect to bus: Host is down", file=sys.stderr)
sys.exit(1)
"""


# -- ready-made hosts -----------------------------------------------------------------------


def vm_guest(root: Path) -> HostTree:
    """A small cloud VM: 2 vCPUs, no vmx flag but the hypervisor flag, one node, one disk."""
    tree = HostTree(root).cpuinfo(2, model_name="Intel(R) Xeon(R) Processor",
                                  flags=f"{INTEL_FLAGS} hypervisor")
    tree.cpus(1, 2).numa_node(0, range(2), 8 * 2**20).meminfo(8 * 2**20)
    return tree.disk("vda", content=None).mount("/dev/vda", "/")


def intel_two_socket(root: Path) -> HostTree:
    """A 2-socket Intel host with PLE on: 2 x 16 cores x 2 threads, 2 nodes, hugepages."""
    tree = HostTree(root).cpuinfo(64, flags=f"{INTEL_FLAGS} vmx", vmx_flags="vnmi ept ple")
    tree.kvm_module("kvm_intel", ple_gap=128, ple_window=4096, ple_window_grow=2,
                    ple_window_shrink=0, ple_window_max=4294967295)
    tree.cpus(2, 16, 2).meminfo(512 * 2**20).thp("never").ksm(0)
    for node in (0, 1):
        cpus = [c for c in range(64) if (c % 32) // 16 == node]
        tree.numa_node(node, cpus, 256 * 2**20, distances=(10, 21) if node == 0 else (21, 10),
                       hugepages={2048: (1024, 1024), 1048576: (16, 8)})
    tree.hugepages(2048, 2048, 2048).hugepages(1048576, 32, 16, reserved=4)
    return tree.cmdline("BOOT_IMAGE=/vmlinuz root=/dev/sda2 default_hugepagesz=1G "
                        "hugepagesz=1G hugepages=32 hugepagesz=2M hugepages=2048")


def amd_eight_node(root: Path) -> HostTree:
    """A 1-socket AMD EPYC in NPS4 with 8 nodes (2 CCDs each), pause filter on."""
    tree = HostTree(root).cpuinfo(
        64, vendor="AuthenticAMD", model_name="AMD EPYC 7543 32-Core Processor", family=25,
        model=1, flags=f"{INTEL_FLAGS} svm npt pausefilter pfthreshold",
    )
    tree.kvm_module("kvm_amd", pause_filter_count=3000, pause_filter_thresh=128)
    tree.cpus(1, 32, 2).meminfo(1024 * 2**20)
    for node in range(8):
        distances = [10 if other == node else 12 for other in range(8)]
        tree.numa_node(node, [*range(node * 4, node * 4 + 4), *range(32 + node * 4, 36 + node * 4)],
                       128 * 2**20, distances=distances)
    return tree


def large_host(root: Path, *, cpus: int = 256, nodes: int = 8, disks: int = 64,
               nics: int = 8, vfs: int = 16) -> HostTree:
    """A big Intel host for timing: cpus / nodes per node, disks raw LUNs, NICs with VFs."""
    tree = HostTree(root).cpuinfo(cpus, flags=f"{INTEL_FLAGS} vmx", vmx_flags="ept ple")
    tree.kvm_module("kvm_intel", ple_gap=128, ple_window=4096)
    tree.cpus(nodes // 2 or 1, cpus // 2 // (nodes // 2 or 1), 2).meminfo(2048 * 2**20)
    # Linux numbering: the first threads of all cores, then their siblings; a node holds its
    # cores with both their threads.
    per_node, first_threads = cpus // nodes, cpus // 2
    for node in range(nodes):
        tree.numa_node(
            node, [c for c in range(cpus) if (c % first_threads) // (per_node // 2) == node],
            256 * 2**20,
            distances=[10 if o == node else 20 for o in range(nodes)],
            hugepages={2048: (512, 512), 1048576: (8, 8)},
        )
    tree.disk("sda").partition("sda", "sda1").partition("sda", "sda2")
    tree.mount("/dev/sda2", "/").mount("/dev/sda1", "/boot")
    for index in range(1, disks):
        tree.disk(f"sd{chr(ord('a') + index // 26)}{chr(ord('a') + index % 26)}",
                  wwid=f"0x5000c500{index:08x}")
    for index in range(nics):
        tree.nic(f"ens{index}f0", f"0000:{0x3b + index:02x}:00.0", numa_node=index % nodes,
                 total_vfs=64, vf_drivers=["vfio-pci"] * (vfs // 2) + ["iavf"] * (vfs // 2))
    return tree.virtual_nic("lo")


# -- kernel and topology forms the probe must read as the kernel means them -------------------


def old_kernel(root: Path) -> HostTree:
    """A 2-socket host on a kernel from before the *_list files and cpu/online (RHEL 5 era):
    node CPUs as cpumap only, thread siblings as masks, online state in cpuN/online alone."""
    tree = HostTree(root).cpus(2, 4, 2, online_file=False, lists=False).meminfo(64 * 2**20)
    for node in (0, 1):
        cpus = [c for c in range(16) if (c % 8) // 4 == node]
        tree.numa_node(node, cpus, 32 * 2**20, distances=(10, 20) if node == 0 else (20, 10),
                       cpumap_only=True)
    return tree


def power_smt4(root: Path) -> HostTree:
    """A 2-socket POWER9 with SMT8 cores run at SMT4 (ppc64_cpu --smt=4): threads 4-7 of each
    core are offline, yet each node's cpulist still lists all eight."""
    tree = HostTree(root)
    base = "/sys/devices/system/cpu"
    online = [c for c in range(64) if c % 8 < 4]
    tree.file(f"{base}/online", _cpulist(online))
    tree.file(f"{base}/offline", _cpulist(set(range(64)) - set(online)))
    for cpu in range(64):
        first = cpu - cpu % 8
        tree.cpu(cpu, package=cpu // 32, core=first, siblings=range(first, first + 4),
                 online=cpu % 8 < 4)
    for node in (0, 1):
        tree.numa_node(node, range(node * 32, node * 32 + 32), 128 * 2**20,
                       distances=(10, 40) if node == 0 else (40, 10),
                       hugepages={2048: (0, 0)})
    return tree.meminfo(256 * 2**20)


def memory_tiers(root: Path) -> HostTree:
    """2 CPU nodes, a CXL memory expander (node 2) and GPU memory nodes far from them
    (250-255, as coherent GPU memory is numbered), all with memory and no CPUs."""
    tree = HostTree(root).cpus(2, 8, 2).meminfo(1024 * 2**20)
    ids = [0, 1, 2, *range(250, 256)]
    for node in ids:
        cpus = [c for c in range(32) if (c % 16) // 8 == node] if node < 2 else []
        distances = [10 if other == node else 20 if max(node, other) < 2 else 80 for other in ids]
        tree.numa_node(node, cpus, (256 if node < 3 else 16) * 2**20, distances=distances,
                       hugepages={2048: (0, 0)})
    return tree


def hybrid(root: Path) -> HostTree:
    """An Intel hybrid CPU (Alder Lake-S): 8 P-cores with SMT (CPUs 0-15, siblings adjacent,
    core_id 0, 4, ... 28) and 8 E-cores without (CPUs 16-23, core_id 32-39), one node."""
    tree = HostTree(root)
    base = "/sys/devices/system/cpu"
    tree.file(f"{base}/online", "0-23").file(f"{base}/offline", "")
    for cpu in range(16):
        first = cpu - cpu % 2
        tree.cpu(cpu, package=0, core=first * 2, siblings=[first, first + 1])
    for cpu in range(16, 24):
        tree.cpu(cpu, package=0, core=cpu + 16, siblings=[cpu], cluster=8 + (cpu - 16) // 4)
    return tree.numa_node(0, range(24), 64 * 2**20).meminfo(64 * 2**20)


def multi_die(root: Path) -> HostTree:
    """One package of two dies, each die its own NUMA node, 8 SMT-2 cores per die, core_id
    numbered per die (as kernels do for AMD's multi-node packages)."""
    tree = HostTree(root)
    base = "/sys/devices/system/cpu"
    tree.file(f"{base}/online", "0-31").file(f"{base}/offline", "")
    for cpu in range(32):
        core = cpu % 16  # first threads 0-15, their siblings 16-31
        tree.cpu(cpu, package=0, die=core // 8, core=core % 8, siblings=[core, core + 16])
    for node in (0, 1):
        tree.numa_node(node, [*range(node * 8, node * 8 + 8), *range(16 + node * 8, 24 + node * 8)],
                       64 * 2**20, distances=(10, 12) if node == 0 else (12, 10))
    return tree.meminfo(128 * 2**20)


def clustered(root: Path) -> HostTree:
    """An Arm host described by a device tree: one package, one node, 4 clusters of 4 cores
    without SMT, core_id numbered per cluster, as such kernels number it."""
    tree = HostTree(root)
    base = "/sys/devices/system/cpu"
    tree.file(f"{base}/online", "0-15").file(f"{base}/offline", "")
    for cpu in range(16):
        tree.cpu(cpu, package=0, cluster=cpu // 4, core=cpu % 4, siblings=[cpu])
    return tree.numa_node(0, range(16), 32 * 2**20).meminfo(32 * 2**20)


def without_numa(root: Path) -> HostTree:
    """A 2-socket host on a kernel built without NUMA (CONFIG_NUMA=n): no
    /sys/devices/system/node at all, one memory pool in /proc/meminfo and the system-wide
    hugepage pools."""
    tree = HostTree(root).cpus(2, 4, 2).meminfo(64 * 2**20)
    return tree.hugepages(2048, 16, 16)


def no_cpu_topology(root: Path) -> HostTree:
    """A kernel that exports no cpuN/topology directory (architectures or kernels without
    topology support): the CPUs are online, their grouping into cores and sockets is unknown."""
    tree = HostTree(root)
    base = "/sys/devices/system/cpu"
    tree.file(f"{base}/online", "0-7").file(f"{base}/present", "0-7")
    for cpu in range(8):
        tree.cpu(cpu, package=0, core=cpu, siblings=[cpu], topology=False)
    return tree.numa_node(0, range(8), 32 * 2**20).meminfo(32 * 2**20)


def compute_units(root: Path) -> HostTree:
    """An AMD family 15h host (Bulldozer/Piledriver): each compute unit holds two integer
    cores with their own core_id that share a front end, FPU and L2, and the kernel lists
    both as thread siblings. 2 NUMA nodes of 4 units, core_id 0-7 per node."""
    tree = HostTree(root)
    base = "/sys/devices/system/cpu"
    tree.file(f"{base}/online", "0-15").file(f"{base}/offline", "")
    for cpu in range(16):
        first = cpu - cpu % 2
        tree.cpu(cpu, package=0, core=cpu % 8, siblings=[first, first + 1])
    for node in (0, 1):
        tree.numa_node(node, range(node * 8, node * 8 + 8), 32 * 2**20,
                       distances=(10, 16) if node == 0 else (16, 10))
    return tree.meminfo(64 * 2**20)


def s390_books(root: Path) -> HostTree:
    """An s390x LPAR: 1 drawer of 2 books, 2 sockets per book, 2 SMT-2 cores per socket.
    The machine's topology list numbers each container within its parent, so socket ids
    (physical_package_id) and core ids repeat from book to book; only book_id and drawer_id
    tell them apart. One NUMA node, as s390 kernels have."""
    tree = HostTree(root)
    base = "/sys/devices/system/cpu"
    tree.file(f"{base}/online", "0-15").file(f"{base}/offline", "")
    for cpu in range(16):
        book, in_book = divmod(cpu, 8)
        core = in_book // 2
        first = cpu - cpu % 2
        tree.cpu(cpu, package=core // 2, core=core, siblings=[first, first + 1], book=book,
                 drawer=0)
    return tree.numa_node(0, range(16), 64 * 2**20).meminfo(64 * 2**20)


def no_node_hugepages(root: Path) -> HostTree:
    """A 2-node host on a kernel before per-node hugepage pools (2.6.33): the pools exist
    system-wide only, no nodeN/hugepages directory."""
    tree = HostTree(root).cpus(2, 4).meminfo(64 * 2**20).hugepages(2048, 512, 512)
    for node in (0, 1):
        tree.numa_node(node, range(node * 4, node * 4 + 4), 32 * 2**20,
                       distances=(10, 20) if node == 0 else (20, 10))
    return tree


# -- other architectures, and KVM without VT-x or AMD-V ---------------------------------------

ARM64_FEATURES = ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid "
                  "asimdrdm lrcpc dcpop asimddp ssbs")
S390_FEATURES = ("esan3 zarch stfle msa ldisp eimm dfp edat etf3eh highgprs te vx vxd vxe gs "
                 "vxe2 vxp sort dflt sie")


def arm64_cpuinfo(tree: HostTree, cpus: int) -> HostTree:
    """/proc/cpuinfo as arm64 kernels write it: Features, implementer and part, no flags."""
    blocks = [
        f"processor\t: {i}\nBogoMIPS\t: 50.00\nFeatures\t: {ARM64_FEATURES}\nCPU implementer\t"
        ": 0x41\nCPU architecture: 8\nCPU variant\t: 0x3\nCPU part\t: 0xd0c\nCPU revision\t: 1\n"
        for i in range(cpus)
    ]
    return tree.file("/proc/cpuinfo", "\n".join(blocks))


def builtin_kvm(tree: HostTree, name: str = "kvm", **params: int) -> HostTree:
    """KVM built into the kernel (arm64, kvm_pvm): /sys/module/<name> holds parameters only,
    no initstate; /dev/kvm exists."""
    for key, value in (params or {"halt_poll_ns": 200000}).items():
        tree.file(f"/sys/module/{name}/parameters/{key}", value)
    return tree.file("/dev/kvm", b"")


def arm64_server(root: Path) -> HostTree:
    """A 2-socket Arm Neoverse N1 server (Ampere Altra style, 32 cores per socket, no SMT) on a
    kernel that serves CPU masks and lists as binary attributes ending in "\\n\\0" and has
    core_cpus_list; ACPI declares 256 possible CPUs for 64 present; KVM built in (booted at
    EL2)."""
    tree = HostTree(root, nul_terminated=True)
    arm64_cpuinfo(tree, 64)
    builtin_kvm(tree)
    tree.cpus(2, 32, core_cpus=True, possible=256).meminfo(512 * 2**20, hugepage_kib=2048)
    for node in (0, 1):
        tree.numa_node(node, range(node * 32, node * 32 + 32), 256 * 2**20,
                       distances=(10, 20) if node == 0 else (20, 10),
                       hugepages={2048: (0, 0), 1048576: (0, 0)})
    return tree.hugepages(1048576, 0, 0).thp("madvise").ksm(0)


def s390_lpar(root: Path) -> HostTree:
    """An s390x LPAR running KVM: the s390_books topology, cpuinfo whose features list sie,
    the kvm module loaded, 1 MiB hugepages."""
    tree = s390_books(root)
    header = (f"vendor_id       : IBM/S390\n# processors    : 16\nbogomips per cpu: 3241.00\n"
              f"max thread id   : 1\nfeatures\t: {S390_FEATURES}\n")
    cpus = "".join(f"processor {i}: version = 00,  identification = 0133E8,  machine = 8561\n"
                   for i in range(16))
    tree.file("/proc/cpuinfo", header + cpus)
    tree.kvm_module("kvm", halt_poll_ns=50000)
    # s390's hugepages are 1 MiB (the segment size), not the 2 MiB x86 default s390_books has.
    shutil.rmtree(root / "sys/kernel/mm/hugepages/hugepages-2048kB")
    return tree.meminfo(64 * 2**20, hugepage_kib=1024)


def power9_host(root: Path) -> HostTree:
    """A POWER9 PowerNV host running KVM-HV: the power_smt4 topology, cpuinfo naming the CPU
    and platform, kvm_hv loaded."""
    tree = power_smt4(root)
    blocks = [f"processor\t: {i}\ncpu\t\t: POWER9, altivec supported\nclock\t\t: 3800.000000MHz"
              "\nrevision\t: 2.2 (pvr 004e 1202)\n" for i in range(64) if i % 8 < 4]
    tail = "timebase\t: 512000000\nplatform\t: PowerNV\nmodel\t\t: 9006-22P\nfirmware\t: OPAL\n"
    tree.file("/proc/cpuinfo", "\n".join([*blocks, tail]))
    tree.kvm_module("kvm_hv", dynamic_mt_modes=6)
    return tree.meminfo(256 * 2**20, hugepage_kib=2048)


def pvm_guest(root: Path) -> HostTree:
    """A cloud VM like the machines the suite runs on: an Intel vCPU without vmx (the
    hypervisor flag set), KVM served by the built-in kvm_pvm, one node."""
    tree = HostTree(root).cpuinfo(2, model_name="Intel(R) Xeon(R) Processor",
                                  flags=f"{INTEL_FLAGS} hypervisor")
    builtin_kvm(tree, "kvm", halt_poll_ns=200000)
    builtin_kvm(tree, "kvm_pvm", pvm_debug=0)
    return tree.cpus(1, 2).numa_node(0, range(2), 8 * 2**20).meminfo(8 * 2**20)


RISCV_ISA = ("rv64imafdch_zicbom_zicboz_zicntr_zicsr_zifencei_zihintpause_zihpm_zba_zbb_zbs_"
             "sstc_svinval_svnapot_svpbmt")


def riscv64_host(root: Path) -> HostTree:
    """A RISC-V server (8 harts with the H extension, one node) running KVM from the kvm
    module: cpuinfo as riscv64 kernels write it (isa, mmu, the machine ids; no vendor)."""
    tree = HostTree(root)
    blocks = [f"processor\t: {i}\nhart\t\t: {i}\nisa\t\t: {RISCV_ISA}\nmmu\t\t: sv39\n"
              f"uarch\t\t: sifive,p550\nmvendorid\t: 0x489\nmarchid\t\t: 0x8000000000000008\n"
              f"mimpid\t\t: 0x0\nhart isa\t: {RISCV_ISA}\n" for i in range(8)]
    tree.file("/proc/cpuinfo", "\n".join(blocks)).kvm_module("kvm", halt_poll_ns=200000)
    return tree.cpus(1, 8).numa_node(0, range(8), 32 * 2**20).meminfo(32 * 2**20)


def loongarch64_host(root: Path) -> HostTree:
    """A Loongson 3C5000 server (16 cores, one node) running KVM from the kvm module: cpuinfo
    as loongarch64 kernels write it, a `system type` block first, then processors whose
    Features (arm64's key too) list lvz."""
    tree = HostTree(root)
    blocks = [f"processor\t\t: {i}\npackage\t\t\t: 0\ncore\t\t\t: {i}\nglobal_id\t\t: {i}\n"
              "CPU Family\t\t: Loongson-64bit\nModel Name\t\t: Loongson-3C5000\nCPU Revision"
              "\t\t: 0x11\nFPU Revision\t\t: 0x00\nCPU MHz\t\t\t: 2200.00\nBogoMIPS\t\t: "
              "4400.00\nTLB Entries\t\t: 2112\nAddress Sizes\t\t: 48 bits physical, 48 bits "
              "virtual\nISA\t\t\t: loongarch32 loongarch64\nFeatures\t\t: cpucfg lam ual fpu "
              "lsx lasx crc32 complex crypto lvz lbt_x86 lbt_arm lbt_mips\nHardware Watchpoint\t:"
              " yes, iwatch count: 8, dwatch count: 8\n" for i in range(16)]
    header = "system type\t\t: generic-loongson-machine\n\n"
    tree.file("/proc/cpuinfo", header + "\n".join(blocks)).kvm_module("kvm", halt_poll_ns=200000)
    tree.cpus(1, 16).numa_node(0, range(16), 64 * 2**20)
    return tree.meminfo(64 * 2**20, hugepage_kib=32768)  # 16 KiB base pages: 32 MiB hugepages


# -- firmware and kernel forms that must not read as something they are not -----------------


def overlapping_nodes(root: Path, *, linked_everywhere: bool = False) -> HostTree:
    """Buggy firmware: 4 NUMA nodes each listing every CPU, every distance equal. The kernel
    links each CPU under one node (cpu_to_node: 4 CPUs each), or, `linked_everywhere`, under
    every node as its lists say."""
    tree = HostTree(root).cpus(1, 8, 2).meminfo(64 * 2**20)
    for node in range(4):
        tree.numa_node(node, range(16), 16 * 2**20, distances=[10] * 4)
        for cpu in range(16):
            if linked_everywhere or cpu // 4 == node:
                tree.link(f"/sys/devices/system/node/node{node}/cpu{cpu}",
                          f"/sys/devices/system/cpu/cpu{cpu}")
    return tree


def no_package_id(root: Path) -> HostTree:
    """An Arm board described by a device tree on a kernel that gives every CPU
    physical_package_id -1: 8 cores, no SMT, one node."""
    tree = HostTree(root)
    base = "/sys/devices/system/cpu"
    tree.file(f"{base}/online", "0-7").file(f"{base}/offline", "").file(f"{base}/present", "0-7")
    for cpu in range(8):
        tree.cpu(cpu, package=-1, core=cpu, siblings=[cpu])
    return tree.numa_node(0, range(8), 16 * 2**20).meminfo(16 * 2**20)


def amd_old_kernel(root: Path) -> HostTree:
    """An AMD Opteron 6300 (family 15h, which has the pause filter; compute_units' topology)
    on a kernel that printed svm but none of the SVM feature flags (pausefilter among them)."""
    tree = compute_units(root).cpuinfo(
        16, vendor="AuthenticAMD", model_name="AMD Opteron(tm) Processor 6376", family=21,
        model=2, flags=f"{INTEL_FLAGS} svm",
    )
    return tree.kvm_module("kvm_amd", pause_filter_count=3000, pause_filter_thresh=128)
