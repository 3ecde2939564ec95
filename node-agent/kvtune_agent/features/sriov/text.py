"""The SR-IOV section of `kvtune probe`'s text report (Feature.report)."""

from __future__ import annotations

from kvtune_api.v1alpha1.host import (
    HostReport,
    Nic,
)

from ...host import names
from ..page import Page, or_dash


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


def section(page: Page, report: HostReport) -> None:
    """Write the section on `page`."""
    _network(page, report)
