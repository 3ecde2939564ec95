"""The tier's own libvirt: libvirtd and virtlogd started here (stopped by pid), a hugetlbfs mount
with a 2Mi pool for the guests, a loop device for a raw disk, and QEMU/KVM domains shaped as
virt-launcher renders a VMI or not at all. The realhost tier's VM audit tests (test_vms.py),
its interference tests (test_interference.py) and bench/interference.py run their domains here.

The guests are an endless `jmp $` in a boot sector: firmware runs under this nested KVM where a
Linux guest does not, and one busy vCPU is what the tests need.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest
from kvtune_cli.localcluster import stop_process

from support.realhost import guarded_tunables

URI = "qemu:///system"
SOCKET = "/var/run/libvirt/libvirt-sock"
QEMU_CONF = "/etc/libvirt/qemu.conf"
#: Directories the daemons need (the first two) or make; those that were not there are removed.
DAEMON_DIRS = ("/var/run/libvirt", "/var/log/libvirt", "/var/lib/libvirt", "/var/cache/libvirt",
               "/etc/libvirt/nwfilter", "/etc/libvirt/secrets", "/etc/libvirt/qemu")
POOL = "/sys/devices/system/node/node0/hugepages/hugepages-2048kB"
GUEST_MIB = 32
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


@contextlib.contextmanager
def libvirt_host() -> Iterator[Libvirt]:
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


def domain_xml(name: str, vcpu: int | None, emulator: int, *, hugepages: bool,
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
def running(xml: str) -> Iterator[int]:
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
