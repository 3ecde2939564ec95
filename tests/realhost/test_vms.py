"""The VM audit against real KVM domains under the real libvirt qemu driver.

A libvirtd and virtlogd of the tier's own (started here, stopped by pid) run QEMU/KVM domains
shaped as virt-launcher renders a VMI (vCPU pinned, emulator pinned off it, guest memory in 2Mi
hugepages from a real hugetlbfs mount, a raw block disk from a loop device) and shaped badly
(pinned onto the first one's core, emulator on its own vCPU's core, no hugepages, a file-backed
disk). Their guest is an endless `jmp $` in a boot sector: firmware runs under this nested KVM
where a Linux guest does not, and one busy vCPU is all the audit needs. The audit (and
`kvtune probe --vms`) must report what the domains really got, which /proc shows: each thread's
CPU affinity and the hugepages taken from the host's pool.

The network rule meets real links (netns.py): domains of the host libvirt whose taps libvirt
plugs into one Linux bridge, and KubeVirt VMs whose pods (namespaces flagged as virt-launcher,
their domains found through the host libvirt) reach one host bridge through a veth, as bridge
binding on a bridge-CNI network lays them out; beside each pair, a VM on a bridge of its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest
from kvtune_agent.audit import AuditPolicy, audit_node
from kvtune_agent.host.hostfs import HostFS
from kvtune_agent.wiring import probe_host
from kvtune_api.v1alpha1.audit import NodeVmAudit, VmAudit
from kvtune_cli.localcluster import stop_process
from support.realhost import REALHOST, guarded_tunables

from .netns import Network, Pod, run

pytestmark = REALHOST

URI = "qemu:///system"
SOCKET = "/var/run/libvirt/libvirt-sock"
QEMU_CONF = "/etc/libvirt/qemu.conf"
#: Directories the daemons need (the first two) or make; those that were not there are removed.
DAEMON_DIRS = ("/var/run/libvirt", "/var/log/libvirt", "/var/lib/libvirt", "/var/cache/libvirt",
               "/etc/libvirt/nwfilter", "/etc/libvirt/secrets", "/etc/libvirt/qemu")
POOL = "/sys/devices/system/node/node0/hugepages/hugepages-2048kB"
GUEST_MIB = 32
#: virt-launcher's shape: the profile's promises the good domain keeps.
POLICY = AuditPolicy(dedicated_cpus=True, isolate_emulator_thread=True, hugepage_kib=2048,
                     block_luns=True)
#: A boot sector that jumps to itself (EB FE) forever, with the boot signature at 510.
BOOT_SECTOR = b"\xeb\xfe" + bytes(508) + b"\x55\xaa"


def _run(*argv: str | Path) -> None:
    try:
        subprocess.run([str(a) for a in argv], check=True, capture_output=True, timeout=60)
    except FileNotFoundError:
        pytest.fail(f"{argv[0]} is missing: run `make setup`")


@dataclass(frozen=True)
class Libvirt:
    """The tier's libvirt: its work directory (readable by QEMU), and its loop device."""

    work: Path
    loop: str


def _wait_for_libvirtd(daemon: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert daemon.poll() is None, f"libvirtd exited: {log.read_text()[-2000:]}"
        with contextlib.suppress(libvirt.libvirtError):
            libvirt.open(URI).close()
            return
        assert time.monotonic() < deadline, f"libvirtd did not answer: {log.read_text()[-2000:]}"
        time.sleep(0.2)


@contextlib.contextmanager
def _daemons(work: Path) -> Iterator[None]:
    """virtlogd and libvirtd in the foreground as children of the test, stopped by their pids.

    Without systemd the daemons need their directories made; no dnsmasq and no D-Bus only log
    errors. The qemu driver insists that its built-in user (libvirt-qemu) exists, even when
    qemu.conf runs QEMU as root, which it must here: /dev/kvm is root's alone.
    """
    try:
        os.stat("/usr/sbin/libvirtd")
        import pwd
        pwd.getpwnam("libvirt-qemu")
    except (FileNotFoundError, KeyError):
        pytest.fail("libvirtd or its libvirt-qemu user is missing: run `make setup`")
    if os.path.exists(SOCKET):
        pytest.fail(f"{SOCKET} exists: another libvirtd runs here; the tier starts its own")
    made = [d for d in DAEMON_DIRS if not os.path.exists(d)]
    for directory in DAEMON_DIRS[:2]:  # libvirtd makes the others itself
        os.makedirs(directory, exist_ok=True)
    own_conf = not os.path.exists(QEMU_CONF)
    if own_conf:
        Path(QEMU_CONF).write_text(
            f'# kvtune realhost tier (removed when it stops)\nuser = "root"\ngroup = "root"\n'
            f'security_driver = "none"\nhugetlbfs_mount = "{work / "hugepages"}"\n')
    started: list[subprocess.Popen[bytes]] = []
    try:
        for name in ("virtlogd", "libvirtd"):
            with open(work / f"{name}.log", "wb") as log:
                started.append(subprocess.Popen([f"/usr/sbin/{name}"], stdout=log,
                                                stderr=subprocess.STDOUT))
        _wait_for_libvirtd(started[-1], work / "libvirtd.log")
        yield
    finally:
        for daemon in reversed(started):
            stop_process(daemon, timeout=20)
        if own_conf:
            os.unlink(QEMU_CONF)
        for directory in made:
            shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def host() -> Iterator[Libvirt]:
    """The tier's libvirt with a hugetlbfs mount, a 2Mi pool for the guests and a loop disk."""
    with guarded_tunables(), contextlib.ExitStack() as undo:
        work = Path(tempfile.mkdtemp(prefix="kvtune-realhost-"))
        undo.callback(shutil.rmtree, work, ignore_errors=True)
        work.chmod(0o755)  # QEMU opens the file-backed disk in it
        (work / "hugepages").mkdir()
        _run("mount", "-t", "hugetlbfs", "-o", "pagesize=2M", "none", work / "hugepages")
        undo.callback(_run, "umount", work / "hugepages")
        pool = int(Path(f"{POOL}/nr_hugepages").read_text())
        Path(f"{POOL}/nr_hugepages").write_text(f"{pool + GUEST_MIB // 2}\n")
        undo.callback(Path(f"{POOL}/nr_hugepages").write_text, f"{pool}\n")
        (work / "boot.img").write_bytes(BOOT_SECTOR + bytes((1 << 20) - 512))
        (work / "lun.img").write_bytes(BOOT_SECTOR)
        os.truncate(work / "lun.img", 16 << 20)
        loop = subprocess.run(["losetup", "--find", "--show", str(work / "lun.img")],
                              check=True, capture_output=True, text=True).stdout.strip()
        undo.callback(_run, "losetup", "-d", loop)
        undo.enter_context(_daemons(work))
        yield Libvirt(work, loop)


def _xml(name: str, vcpu: int | None, emulator: int, *, hugepages: bool,
         disk: tuple[str, str | Path], nic: str = "") -> str:
    """A domain with one vCPU pinned to `vcpu` and its emulator to `emulator` (None: unpinned)."""
    kind, source = disk
    pins = ("" if vcpu is None else
            f"<cputune><vcpupin vcpu='0' cpuset='{vcpu}'/><emulatorpin cpuset='{emulator}'/>"
            "</cputune>")
    backing = ("<memoryBacking><hugepages><page size='2048' unit='KiB'/></hugepages>"
               "</memoryBacking>") if hugepages else ""
    attribute = "dev" if kind == "block" else "file"
    return f"""<domain type='kvm'>
  <name>{name}</name>
  <memory unit='MiB'>{GUEST_MIB}</memory>
  {backing}
  <vcpu placement='static'>1</vcpu>
  {pins}
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <cpu mode='custom' match='exact'><model fallback='forbid'>kvm64</model></cpu>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='{kind}' device='disk'>
      <driver name='qemu' type='raw' cache='none'/>
      <source {attribute}='{source}'/><target dev='vda' bus='virtio'/>
    </disk>
    {nic}
    <video><model type='none'/></video>
    <memballoon model='none'/>
  </devices>
</domain>"""


@contextlib.contextmanager
def _running(xml: str) -> Iterator[int]:
    """A transient domain, running until the block ends; yields its QEMU's pid."""
    connection = libvirt.open(URI)
    domain = connection.createXML(xml, 0)
    try:
        name = domain.name()
        pid = int(Path(f"/var/run/libvirt/qemu/{name}.pid").read_text())
        yield pid
    finally:
        domain.destroy()
        connection.close()


def _affinity(pid: int) -> dict[str, str]:
    """Each QEMU thread's CPU affinity as the kernel enforces it, by thread name."""
    threads = {}
    for task in sorted(Path(f"/proc/{pid}/task").iterdir()):
        status = dict(line.split(":\t", 1) for line in (task / "status").read_text().splitlines()
                      if ":\t" in line)
        threads[status["Name"]] = status["Cpus_allowed_list"].strip()
    return threads


def _audit(policy: AuditPolicy = POLICY) -> dict[str, VmAudit]:
    fs = HostFS(Path("/"))
    processes = fs.processes()
    found: NodeVmAudit = audit_node(fs, policy, probe_host(fs, processes), processes,
                                    host_uri=URI)
    return {vm.domain: vm for vm in found.items}


def _rules(vm: VmAudit) -> set[tuple[str, str]]:
    return {(finding.severity, finding.rule) for finding in vm.findings}


@pytest.fixture(scope="module")
def good(host: Libvirt) -> Iterator[int]:
    """The domain shaped as virt-launcher renders a dedicated, hugepage-backed VMI."""
    with _running(_xml("realhost_good", 1, 0, hugepages=True, disk=("block", host.loop))) as pid:
        yield pid


def test_a_domain_shaped_as_virt_launcher_renders_it_is_compliant(
    host: Libvirt, good: int,
) -> None:
    threads = _affinity(good)
    assert threads["CPU 0/KVM"] == "1" and threads["qemu-system-x86"] == "0"
    assert int(Path(f"{POOL}/free_hugepages").read_text()) == 0  # its 16 pages are taken

    vm = _audit()["realhost_good"]

    assert (vm.state, vm.findings) == ("Compliant", []), vm.findings
    assert (vm.namespace, vm.name, vm.cpus, vm.emulator_cpus) == ("realhost", "good", "1", "0")
    assert (vm.hugepage_size, vm.memory_kib) == ("2Mi", GUEST_MIB << 10)
    assert vm.disks == [f"block {host.loop}"]


def test_badly_shaped_domains_are_reported_rule_by_rule(host: Libvirt, good: int) -> None:
    bad_xml = _xml("realhost_bad", 1, 1, hugepages=False, disk=("file", host.work / "boot.img"))
    with _running(bad_xml) as bad:
        assert _affinity(bad)["CPU 0/KVM"] == _affinity(good)["CPU 0/KVM"] == "1"
        assert _affinity(bad)["qemu-system-x86"] == "1"

        vms = _audit()

    assert vms["realhost_good"].state == "Violation"
    assert _rules(vms["realhost_good"]) == {("Violation", "DedicatedCpus")}
    assert _rules(vms["realhost_bad"]) == {
        ("Violation", "DedicatedCpus"), ("Violation", "EmulatorIsolation"),
        ("Violation", "Hugepages"), ("Violation", "Storage")}
    messages = " ".join(f.message for f in vms["realhost_bad"].findings)
    assert "also pinned to VM realhost/good" in messages
    assert str(host.work / "boot.img") in messages


def test_kvtune_probe_vms_reports_the_domains_libvirt_runs(host: Libvirt, good: int) -> None:
    probe = subprocess.run(
        [sys.executable, "-m", "kvtune_cli.main", "probe", "--vms", "--json", "--libvirt-uri",
         URI], check=True, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})

    vms = {vm["domain"]: vm for vm in json.loads(probe.stdout)["vms"]["items"]}
    assert set(vms) == {"realhost_good"}
    good_vm = vms["realhost_good"]
    assert (good_vm["state"], good_vm["cpus"], good_vm["emulatorCpus"]) == ("Compliant", "1", "0")
    assert good_vm["hugepageSize"] == "2Mi"


#: A boot sector that halts (cli; hlt; and back to hlt): the network domains need no busy vCPU.
HALT_SECTOR = b"\xfa\xf4\xeb\xfd" + bytes(506) + b"\x55\xaa"


def _network_findings(vms: dict[str, VmAudit], *domains: str) -> dict[str, list[str]]:
    """Each domain's Network findings (severity: message); the other rules are not judged here."""
    return {domain: [f"{f.severity}: {f.message}" for f in vms[domain].findings
                     if f.rule == "Network"] for domain in domains}  # fmt: skip


@contextlib.contextmanager
def _nic_domains(host: Libvirt, nics: dict[str, str]) -> Iterator[None]:
    """A halting domain per entry of `nics` (domain name -> its <interface>), each on a disk
    image of its own (QEMU locks it), running until the block ends. They are started and
    destroyed side by side: libvirt takes a second or two for each."""
    xmls = []
    for name, nic in nics.items():
        boot = host.work / f"{name}.img"
        boot.write_bytes(HALT_SECTOR)
        xmls.append(_xml(name, None, 0, hugepages=False, disk=("file", str(boot)), nic=nic))
    connection = libvirt.open(URI)
    with ThreadPoolExecutor(len(xmls)) as pool:
        started = [pool.submit(connection.createXML, xml, 0) for xml in xmls]
        try:
            wait(started)
            for domain in started:
                domain.result()
            yield
        finally:
            running = [d.result() for d in started if d.exception() is None]
            list(pool.map(lambda domain: domain.destroy(), running))
            connection.close()
            for name in nics:
                (host.work / f"{name}.img").unlink()


def _bridged(bridge: str) -> str:
    return f"<interface type='bridge'><source bridge='{bridge}'/><model type='virtio'/></interface>"


def test_host_domains_on_one_linux_bridge_share_it_and_one_on_its_own_does_not(
    host: Libvirt, net: Network,
) -> None:
    # Domains of a host libvirt, in the host's namespace: libvirt plugs each one's tap (vnetN)
    # into the bridge its <interface type='bridge'> names.
    shared, own = net.bridge("br0"), net.bridge("br1")
    nics = {"realhost_neta": _bridged(shared), "realhost_netb": _bridged(shared),
            "realhost_netc": _bridged(own)}
    with _nic_domains(host, nics):
        assert [len(os.listdir(f"/sys/class/net/{b}/brif")) for b in (shared, own)] == [2, 1]
        vms = _audit(AuditPolicy())

    found = _network_findings(vms, *nics)
    assert found["realhost_netc"] == [] and vms["realhost_netc"].state == "Compliant"
    for domain, other in (("realhost_neta", "realhost/netb"), ("realhost_netb", "realhost/neta")):
        [message] = found[domain]
        assert message.startswith("Violation: ") and f"host bridge {shared}" in message, message
        assert f"shared with VM {other}" in message, message


def _launched(net: Network, name: str, bridge: str) -> tuple[str, Pod]:
    """A pod laid out as KubeVirt's bridge binding on a secondary network (bridge CNI): net1 a
    veth to the host bridge `bridge` and on the pod's k6t-net1 with the VM's tap. The tap is
    made on the host (libvirt opens it there, managed='no' as virt-launcher renders it) and
    moved into the pod once QEMU holds it."""
    pod = net.pod(name, hide_libvirt=True)
    run("ip", "link", "add", "k6t-net1", "type", "bridge", pid=pod.pid)
    net.veth(f"v{name}", pod, "net1", master=bridge, peer_master="k6t-net1")
    return net.tap(f"t{name}"), pod


def test_kubevirt_vms_whose_pods_reach_one_host_bridge_share_it_and_one_of_its_own_does_not(
    host: Libvirt, net: Network,
) -> None:
    # The launchers' roots have no libvirt socket, so the audit asks the host's libvirt for
    # their domains (namespace_name, as KubeVirt names them) and reads each pod's links.
    shared, own = net.bridge("br0"), net.bridge("br1")
    pods = {name: _launched(net, name, bridge)
            for name, bridge in (("pa", shared), ("pb", shared), ("pc", own))}
    nics = {f"realhost_{name}": f"<interface type='ethernet'><target dev='{tap}' managed='no'/>"
            "<model type='virtio'/></interface>" for name, (tap, _) in pods.items()}
    with _nic_domains(host, nics):
        for tap, pod in pods.values():
            net.move(tap, pod, master="k6t-net1")
        vms = _audit(AuditPolicy())

    found = _network_findings(vms, *nics)
    assert {vms[d].launcher_pid for d in nics} == {pod.pid for _, pod in pods.values()}
    assert found["realhost_pc"] == [] and vms["realhost_pc"].state == "Compliant"
    for domain, other in (("realhost_pa", "realhost/pb"), ("realhost_pb", "realhost/pa")):
        [message] = found[domain]
        assert message.startswith("Violation: ") and f"host bridge {shared}" in message, message
        assert f"shared with VM {other}" in message, message
