"""The network rule across pods: which host switch each KubeVirt VM's NICs reach, read from the
host probe of the same tree (veths from each virt-launcher's namespace to host bridges, OVS,
macvtap lower devices, VFs), judged by the audit with each launcher's libvirt asked as usual."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from kvtune_agent.audit import AuditPolicy, audit_node
from kvtune_agent.wiring import probe_host
from kvtune_api.v1alpha1.audit import NodeVmAudit
from support.hosttree import HostTree

from .builders import GOOD, GOOD_NODE1, HOST, STRICT, Sockets, domain_xml, launcher, libvirt_host

#: A VM's NIC as KubeVirt's bridge binding renders it: a tap on the in-pod bridge k6t-net1.
IN_POD = {"nics": [("bridge", "k6t-net1")]}


def pod(tree: HostTree, pid: int, name: str, host_bridge: str | None) -> HostTree:
    """The launcher of VM prod/`name`, with net1 (a veth to the host, on `host_bridge`)
    bridged to the VM's tap0 inside its pod."""
    root = f"/proc/{pid}/root"
    launcher(tree, pid, "prod", name)
    tree.bridge("k6t-net1", root=root).tap("tap0", root=root, master="k6t-net1")
    return tree.veth(f"veth{pid}", "net1", peer_root=root, master=host_bridge,
                     peer_master="k6t-net1")


def audit_pods(
    tree: HostTree, *xmls: str, pids: tuple[int, ...], policy: AuditPolicy = STRICT
) -> NodeVmAudit:
    """The audit of the tree's launchers, each running its domain of `xmls`, on the host the
    tree's probe finds (with the two NUMA nodes the domains are pinned to)."""
    fs = tree.fs()
    processes = fs.processes()
    host = probe_host(fs, processes).model_copy(update={"numa": HOST.numa, "memory": HOST.memory})
    with libvirt_host(*xmls):
        return audit_node(fs, policy, host, processes, connect=Sockets(tree, *pids))


def network_findings(audit: NodeVmAudit) -> dict[str, list[tuple[str, str]]]:
    return {
        vm.name: [(f.severity, f.message) for f in vm.findings if f.rule == "Network"]
        for vm in audit.items
    }


def two_vms(**nics: Any) -> list[str]:
    return [domain_xml("prod_a", **{**GOOD, **nics}),
            domain_xml("prod_b", **{**GOOD_NODE1, **nics})]  # fmt: skip


def test_two_kubevirt_vms_whose_pods_plug_into_one_host_bridge_share_it(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).bridge("br1")
    pod(tree, 4100, "a", "br1")
    pod(tree, 4200, "b", "br1")

    audit = audit_pods(tree, *two_vms(**IN_POD), pids=(4100, 4200))

    assert {vm.name: vm.state for vm in audit.items} == {"a": "Violation", "b": "Violation"}
    found = network_findings(audit)
    assert [severity for severity, _ in found["a"]] == ["Violation"]
    assert "host bridge br1 (shared with VM prod/b)" in found["a"][0][1]
    assert "host bridge br1 (shared with VM prod/a)" in found["b"][0][1]


def test_a_host_bridge_only_one_vms_pod_is_plugged_into_is_not_shared(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).bridge("br1").bridge("br2")
    pod(tree, 4100, "a", "br1")
    pod(tree, 4200, "b", "br2")

    audit = audit_pods(tree, *two_vms(**IN_POD), pids=(4100, 4200))

    assert network_findings(audit) == {"a": [], "b": []}


def test_pods_on_open_vswitch_share_its_datapath(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).ovs("br-int")
    pod(tree, 4100, "a", "ovs-system")
    pod(tree, 4200, "b", "ovs-system")

    found = network_findings(audit_pods(tree, *two_vms(**IN_POD), pids=(4100, 4200)))

    assert "Open vSwitch (br-int) (shared with VM prod/b)" in found["a"][0][1]


def masquerade_pod(tree: HostTree, pid: int, name: str) -> None:
    """A launcher whose VM's tap0 is on an in-pod bridge of its own, NATed to eth0 (KubeVirt's
    masquerade binding), eth0 being a veth to the CNI's cni0."""
    root = f"/proc/{pid}/root"
    launcher(tree, pid, "prod", name)
    tree.bridge("k6t-eth0", root=root).tap("tap0", root=root, master="k6t-eth0")
    tree.veth(f"veth{pid}", "eth0", peer_root=root, master="cni0")


def test_the_pod_network_counts_as_shared_unless_the_profile_says_management_only(
    tmp_path: Path,
) -> None:
    tree = HostTree(tmp_path).bridge("cni0")
    masquerade_pod(tree, 4100, "a")
    masquerade_pod(tree, 4200, "b")
    xmls = two_vms(nics=[("ethernet", "tap0")])

    shared = network_findings(audit_pods(tree, *xmls, pids=(4100, 4200)))
    management = audit_pods(tree, *xmls, pids=(4100, 4200),
                            policy=replace(STRICT, pod_network_shared=False))

    [(severity, message)] = shared["a"]
    assert severity == "Violation"
    assert "the pod network (shared with VM prod/b)" in message
    assert "vmi.podNetwork: ManagementOnly" in message
    assert network_findings(management) == {"a": [], "b": []}


def test_a_pod_network_of_one_vm_is_still_shared_with_every_pod(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    launcher(tree, 4100, "prod", "a")
    tree.veth("cali1", "eth0", peer_root="/proc/4100/root")  # routed: on no bridge

    found = network_findings(audit_pods(
        tree, domain_xml("prod_a", **{**GOOD, "nics": [("user", "")]}), pids=(4100,)
    ))  # fmt: skip

    assert "the pod network, which every pod of the node shares" in found["a"][0][1]


def macvtap_pod(tree: HostTree, pid: int, name: str, lower: str) -> None:
    launcher(tree, pid, "prod", name)
    tree.macvtap("net1", lower, root=f"/proc/{pid}/root")


def test_macvtap_on_a_nic_of_the_vms_own_is_dedicated_and_on_a_shared_one_is_not(
    tmp_path: Path,
) -> None:
    tree = HostTree(tmp_path).nic("ens2f0", "0000:5e:00.0").nic("ens2f1", "0000:5e:00.1")
    macvtap_pod(tree, 4100, "a", "ens2f0")
    macvtap_pod(tree, 4200, "b", "ens2f1")
    macvtap = {"nics": [("ethernet", "net1")]}
    apart = audit_pods(tree, *two_vms(**macvtap), pids=(4100, 4200))
    macvtap_pod(tree, 4300, "c", "ens2f0")
    xmls = [*two_vms(**macvtap), domain_xml("prod_c", **{**GOOD, **macvtap, "pins": ["3"]})]
    together = audit_pods(tree, *xmls, pids=(4100, 4200, 4300))

    assert network_findings(apart) == {"a": [], "b": []}
    found = network_findings(together)
    assert found["b"] == []
    assert "macvtap on ens2f0 (shared with VM prod/c)" in found["a"][0][1]


def test_sriov_vfs_in_the_pod_or_passed_through_are_dedicated(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).bridge("cni0")
    masquerade_pod(tree, 4100, "a")
    masquerade_pod(tree, 4200, "b")
    root = "/proc/4100/root"
    tree.bridge("k6t-net1", root=root).tap("tap1", root=root, master="k6t-net1")
    tree.pod_vf("net1", "0000:3b:02.3", root=root, pf_address="0000:3b:00.0")
    tree.plug("net1", "k6t-net1", root=root)
    xmls = [
        domain_xml("prod_a", **{**GOOD, "nics": [("ethernet", "tap1")]}),
        domain_xml("prod_b", **{**GOOD_NODE1, "nics": [],
                                "hostdevs": [("0000:3b:02.1", "ua-sriov-net1")]}),
    ]  # fmt: skip

    audit = audit_pods(tree, *xmls, pids=(4100, 4200))

    assert network_findings(audit) == {"a": [], "b": []}


def test_a_dedicated_nic_beside_the_shared_pod_network_is_a_warning(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).bridge("cni0")
    masquerade_pod(tree, 4100, "a")
    xml = domain_xml("prod_a", **{**GOOD, "nics": [("ethernet", "tap0")],
                                  "hostdevs": [("0000:3b:02.1", "ua-sriov-net1")]})  # fmt: skip

    [(severity, message)] = network_findings(audit_pods(tree, xml, pids=(4100,)))["a"]

    assert severity == "Warning"
    assert message.startswith("besides SR-IOV VF 0000:3b:02.1, a NIC goes through the pod network")


def test_a_whole_nic_passed_through_is_dedicated_with_a_note_on_live_migration(
    tmp_path: Path,
) -> None:
    tree = HostTree(tmp_path).file("/sys/bus/pci/drivers/vfio-pci/0000:af:00.0/class", "0x020000")
    launcher(tree, 4100, "prod", "a")
    xml = domain_xml("prod_a", **{**GOOD, "nics": [],
                                  "hostdevs": [("0000:af:00.0", "ua-hostdevice-nic")]})  # fmt: skip

    audit = audit_pods(tree, xml, pids=(4100,))

    assert audit.items[0].state == "Compliant"
    [(severity, message)] = network_findings(audit)["a"]
    assert severity == "Info"
    assert "NIC 0000:af:00.0 passed through (PCI passthrough)" in message
    assert "cannot live-migrate" in message
