"""The SR-IOV probe: PCI NICs, their VF capacity and locality, and who holds each VF."""

from __future__ import annotations

from pathlib import Path

from kvtune_agent.features.sriov import probe as sriov
from support.hosttree import HostTree


def test_a_pf_lists_its_vfs_and_which_one_a_vm_holds(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).nic("ens1f0", "0000:3b:00.0", numa_node=1, total_vfs=64,
                                  vf_drivers=["vfio-pci", "iavf", "igb_uio", None])

    [nic] = sriov.probe(tree.fs()).nics

    assert (nic.name, nic.pci_address, nic.vendor_id, nic.device_id, nic.driver) == (
        "ens1f0", "0000:3b:00.0", "8086", "159b", "ice")
    assert (nic.numa_node, nic.operstate, nic.mtu) == (1, "up", 1500)
    assert (nic.sriov_total_vfs, nic.sriov_num_vfs) == (64, 4)
    assert [(vf.index, vf.pci_address, vf.driver, vf.netdev, vf.assigned_to_vm, vf.in_use)
            for vf in nic.vfs] == [
        (0, "0000:3b:02.0", "vfio-pci", None, True, True),
        (1, "0000:3b:02.1", "iavf", "ens1f0v1", False, False),
        (2, "0000:3b:02.2", "igb_uio", None, False, True),
        (3, "0000:3b:02.3", None, None, False, False),
    ]


def test_vf_netdevs_are_listed_under_their_pf_and_virtual_ones_only_counted(
    tmp_path: Path,
) -> None:
    tree = HostTree(tmp_path).nic("ens1f0", "0000:3b:00.0", total_vfs=8, vf_drivers=["iavf"])
    tree.virtual_nic("lo").virtual_nic("cni0")

    found = sriov.probe(tree.fs())

    assert [nic.name for nic in found.nics] == ["ens1f0"]
    assert found.virtual_interfaces == 2


def test_a_nic_without_sriov_or_numa_locality_reports_them_absent(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).nic("eno1", "0000:01:00.0", driver="tg3", numa_node=-1)

    [nic] = sriov.probe(tree.fs()).nics

    assert (nic.sriov_total_vfs, nic.sriov_num_vfs, nic.vfs, nic.numa_node) == (
        None, None, [], None)
    assert sriov.check(sriov.probe(tree.fs())) == []


def test_more_vfs_than_the_device_can_have_is_warned_about(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).nic("ens1f0", "0000:3b:00.0", total_vfs=2)
    tree.file("/sys/devices/pci0000:00/0000:3b:00.0/sriov_numvfs", 4)

    [warning] = sriov.check(sriov.probe(tree.fs()))

    assert warning.path == "/sys/bus/pci/devices/0000:3b:00.0/sriov_numvfs"


def test_a_nic_names_the_bridge_or_bond_it_is_enslaved_to(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).nic("ens1f0", "0000:3b:00.0").nic("ens1f1", "0000:3b:00.1")
    tree.nic("ens2f0", "0000:5e:00.0").bridge("br0").plug("ens1f0", "br0").bond("bond0", "ens1f1")

    assert {nic.name: nic.master for nic in sriov.probe(tree.fs()).nics} == {
        "ens1f0": "br0", "ens1f1": "bond0", "ens2f0": None}
