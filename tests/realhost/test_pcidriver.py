"""PCI driver bindings against this machine's kernel: how sysfs shows a binding, why
`unbind` and `drivers_probe` are written without HostFS.write's read-back, and what an empty
/sys/kernel/iommu_groups means. Read-only but for one write the kernel ignores: the address of a
device that is bound already, given to drivers_probe (the driver core probes unbound devices
only)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from kvtune_agent.host import pcidriver
from kvtune_agent.host.hostfs import HostFS
from support.realhost import REALHOST

pytestmark = REALHOST
DEVICES = sorted(os.listdir("/sys/bus/pci/devices")) if os.path.isdir("/sys/bus/pci") else []
BOUND = [d for d in DEVICES if os.path.islink(f"/sys/bus/pci/devices/{d}/driver")]


@pytest.mark.skipif(not DEVICES, reason="this machine has no PCI bus")
def test_a_binding_reads_as_the_kernel_shows_it() -> None:
    fs = HostFS(Path("/"))

    for device in DEVICES:
        link = f"/sys/bus/pci/devices/{device}/driver"
        driver = os.path.basename(os.readlink(link)) if os.path.islink(link) else None
        override = Path(f"/sys/bus/pci/devices/{device}/driver_override").read_text().strip()
        assert pcidriver.binding(fs, device) == pcidriver.Binding(
            driver, None if override == "(null)" else override)


def test_the_iommu_groups_are_counted_as_the_kernel_lists_them() -> None:
    listed = os.listdir(pcidriver.IOMMU_GROUPS) if os.path.isdir(pcidriver.IOMMU_GROUPS) else []

    assert pcidriver.iommu_groups(HostFS(Path("/"))) == len(listed)


@pytest.mark.skipif(not BOUND, reason="this machine has no PCI device bound to a driver")
def test_drivers_probe_is_write_only_so_it_is_written_without_a_read_back() -> None:
    fs = HostFS(Path("/"))
    device = BOUND[0]
    before = pcidriver.binding(fs, device)

    with pytest.raises(PermissionError):
        Path(pcidriver.DRIVERS_PROBE).read_text()
    assert pcidriver._poke(fs, pcidriver.DRIVERS_PROBE, device, timeout=5) == ""
    assert pcidriver.binding(fs, device) == before
