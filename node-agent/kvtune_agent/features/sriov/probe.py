"""PCI network interfaces and their SR-IOV virtual functions, as `ip link` and sysfs show them.

VMs should get a VF (or a whole NIC) rather than a port on a shared software bridge, so the
planner needs each NIC's VF capacity, NUMA locality, and which VFs are already passed through.
"""

from __future__ import annotations

from kvtune_api.v1alpha1.host import Nic, Problem, SriovReport, VirtualFunction

from ...host.hostfs import HostFS
from ...host.names import NET, numvfs_path, pci_dir

#: The driver a VF is bound to when it is passed through to a VM.
VFIO_DRIVER = "vfio-pci"
#: The host network driver of each PF driver's VFs. A VF bound to it is a host interface nobody
#: has taken; bound to anything else (vfio-pci, pci-stub, igb_uio, uio_pci_generic, a DPDK
#: driver) something holds it, and a VF count change would pull it away.
VF_NETDEV_DRIVERS = {
    "ice": "iavf", "i40e": "iavf", "ixgbe": "ixgbevf", "igb": "igbvf", "mlx5_core": "mlx5_core",
    "mlx4_core": "mlx4_core", "bnxt_en": "bnxt_en", "qede": "qede", "be2net": "be2net",
    "sfc": "sfc", "nfp": "nfp", "ionic": "ionic", "cxgb4": "cxgb4vf", "enic": "enic",
    "hinic": "hinic", "octeontx2-nicpf": "octeontx2-nicvf", "liquidio": "liquidio_vf",
}
def _hex_id(fs: HostFS, path: str) -> str | None:
    value = fs.read_value(path)
    return None if value is None else value.removeprefix("0x")


def _in_use(pf_driver: str | None, driver: str | None, netdevs: list[str]) -> bool:
    """A bound VF is in use unless its driver is its PF's VF network driver; for a PF driver
    kvtune does not know, unless that driver gave it a host interface (vfio, uio and stub
    drivers never do)."""
    if driver is None:
        return False
    expected = VF_NETDEV_DRIVERS.get(pf_driver or "")
    return driver != expected if expected else not netdevs


def _vfs(fs: HostFS, pci: str) -> list[VirtualFunction]:
    pf_driver = fs.link_name(f"{pci}/driver")
    vfs = []
    for entry in fs.list_dir(pci):
        if not (entry.startswith("virtfn") and entry[6:].isdigit()):
            continue
        link = f"{pci}/{entry}"
        driver = fs.link_name(f"{link}/driver")
        netdevs = fs.list_dir(f"{link}/net")
        vfs.append(VirtualFunction(
            index=int(entry[6:]),
            pci_address=fs.link_name(link) or "",
            driver=driver,
            netdev=netdevs[0] if netdevs else None,
            assigned_to_vm=driver == VFIO_DRIVER,
            in_use=_in_use(pf_driver, driver, netdevs),
        ))
    return sorted(vfs, key=lambda vf: vf.index)


def vfs_in_use(fs: HostFS, numvfs: str) -> list[VirtualFunction]:
    """The VFs something holds now, of the PF whose sriov_numvfs is `numvfs`: read afresh right
    before a write, because a VM may have taken a VF since the plan was made."""
    pci = fs.resolve(numvfs.rsplit("/", 1)[0])
    return [vf for vf in _vfs(fs, pci) if vf.in_use] if pci else []


def held(vfs: list[VirtualFunction]) -> str:
    """The VFs, e.g. "0000:3b:02.1 (vfio-pci), 0000:3b:02.2 (igb_uio)"."""
    return ", ".join(f"{vf.pci_address} ({vf.driver})" for vf in vfs)


def _pci_fields(fs: HostFS, pci: str) -> dict[str, object]:
    numa = fs.read_int(f"{pci}/numa_node")
    return {
        "pci_address": pci.rsplit("/", 1)[1],
        "vendor_id": _hex_id(fs, f"{pci}/vendor"),
        "device_id": _hex_id(fs, f"{pci}/device"),
        # -1: the firmware does not say which node the slot belongs to.
        "numa_node": numa if numa is not None and numa >= 0 else None,
        "sriov_total_vfs": fs.read_int(f"{pci}/sriov_totalvfs"),
        "sriov_num_vfs": fs.read_int(f"{pci}/sriov_numvfs"),
        "vfs": _vfs(fs, pci),
    }


def _nic(fs: HostFS, name: str) -> Nic:
    base = f"{NET}/{name}"
    pci = pci_dir(fs, f"{base}/device")
    return Nic.model_validate({
        "name": name,
        "driver": fs.link_name(f"{base}/device/driver"),
        "operstate": fs.read_value(f"{base}/operstate"),
        "mac": fs.read_value(f"{base}/address"),
        "mtu": fs.read_int(f"{base}/mtu"),
        "master": fs.link_name(f"{base}/master"),
        **(_pci_fields(fs, pci) if pci else {}),
    })


def probe(fs: HostFS) -> SriovReport:
    nics, virtual = [], 0
    for name in fs.list_dir(NET):
        device = f"{NET}/{name}/device"
        if not fs.exists(device):
            virtual += 1
        elif not fs.exists(f"{device}/physfn"):  # a VF's netdev is listed under its PF
            nics.append(_nic(fs, name))
    return SriovReport(nics=nics, virtual_interfaces=virtual)


def check(sriov: SriovReport) -> list[Problem]:
    """Findings: VF counts the device cannot have."""
    return [
        Problem(
            severity="Warning", feature="SRIOV", path=numvfs_path(nic.pci_address or nic.name),
            message=f"{nic.name} reports {nic.sriov_num_vfs} VFs enabled but sriov_totalvfs is "
            f"{nic.sriov_total_vfs}; the driver's view is inconsistent: reset sriov_numvfs to 0",
        )
        for nic in sriov.nics
        if (nic.sriov_num_vfs or 0) > (nic.sriov_total_vfs or 0)
    ]
