"""The network probe on host trees: Linux bridges and their ports, Open vSwitch, veth pairs into
virt-launcher pods (read through each launcher's root), macvtap devices and their lower NICs."""

from __future__ import annotations

from pathlib import Path

from kvtune_agent.features.network import probe as network
from kvtune_agent.report import format_report
from kvtune_agent.wiring import probe_host
from kvtune_api.v1alpha1.host import (
    HostRouting,
    LowerLink,
    NetworkReport,
    PodInterface,
    PodNetwork,
    SoftwareSwitch,
)
from support.hosttree import HostTree

from ..audit.builders import launcher


def probe(tree: HostTree) -> NetworkReport:
    fs = tree.fs()
    return network.probe(fs, fs.processes())


def test_an_empty_host_has_no_switches_and_no_pods_and_unknown_routing(tmp_path: Path) -> None:
    report = probe(HostTree(tmp_path))

    assert report.model_copy(update={"routing": HostRouting()}) == NetworkReport()
    assert report.routing.error is not None


def test_a_linux_bridge_lists_its_ports(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).nic("ens1f0", "0000:3b:00.0").bridge("br0").plug("ens1f0", "br0")
    tree.tap("vnet0", master="br0").veth("veth1", "veth1p")

    assert probe(tree).switches == [
        SoftwareSwitch(name="br0", kind="Bridge", ports=["ens1f0", "vnet0"], port_count=2)
    ]


def test_open_vswitch_is_one_datapath_with_its_bridges_named(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).ovs("br-int", "br-ex").veth("ovn-a", "eth0p", master="ovs-system")

    assert probe(tree).switches == [
        SoftwareSwitch(name="ovs-system", kind="OpenVSwitch", bridges=["br-ex", "br-int"],
                       ports=["ovn-a"], port_count=1),
    ]  # fmt: skip


def test_each_launcher_pods_interfaces_are_followed_to_the_host(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).nic("ens2f0", "0000:5e:00.0").bridge("cni0").bridge("br1")
    launcher(tree, 4100, "prod", "a", netns="net:[4026531001]")
    root = "/proc/4100/root"
    tree.bridge("k6t-eth0", root=root).tap("tap0", root=root, master="k6t-eth0")
    tree.veth("vethpod", "eth0", peer_root=root, master="cni0", peer_master="k6t-eth0")
    tree.veth("vethroute", "net2", peer_root=root)
    tree.macvtap("net1", "ens2f0", root=root).macvtap("net3", "ens2f0", root=root, macvlan=True)
    tree.pod_vf("net4", "0000:3b:02.1", root=root, pf_address="0000:3b:00.0")

    [pod] = probe(tree).pods

    assert (pod.vmi, pod.pid, pod.netns) == ("prod/a", 4100, "net:[4026531001]")
    assert pod.interfaces == [
        PodInterface(name="eth0", kind="Veth", master="k6t-eth0", link="vethpod", switch="cni0"),
        PodInterface(name="k6t-eth0", kind="Bridge"),
        PodInterface(name="net1", kind="Macvtap", link="ens2f0"),
        PodInterface(name="net2", kind="Veth", link="vethroute"),
        PodInterface(name="net3", kind="Macvlan", link="ens2f0"),
        PodInterface(name="net4", kind="VirtualFunction", link="0000:3b:02.1"),
        PodInterface(name="tap0", kind="Tap", master="k6t-eth0"),
    ]


def test_an_l3_tun_device_is_not_a_tap(tmp_path: Path) -> None:
    # The tun driver makes both; only a tap (IFF_TAP in tun_flags) carries a VM's Ethernet.
    # The host's tun has the index of the pod's: unlinked devices of one index are no veth pair.
    tree = HostTree(tmp_path).tap("vnet0").tap("tun9", tun=True)
    launcher(tree, 4100, "prod", "a")
    tree.tap("tap0", root="/proc/4100/root").tap("tun0", root="/proc/4100/root", tun=True)

    [pod] = probe(tree).pods

    assert [(i.name, i.kind) for i in pod.interfaces] == [("tap0", "Tap"), ("tun0", "Other")]


def test_two_pods_index_their_interfaces_apart(tmp_path: Path) -> None:
    # Both pods' eth0 have the same index in their own namespace: only iflink joins them up.
    tree = HostTree(tmp_path).bridge("cni0")
    for pid, name in ((4100, "a"), (4200, "b")):
        launcher(tree, pid, "prod", name)
        tree.veth(f"veth{name}", "eth0", peer_root=f"/proc/{pid}/root", master="cni0")

    report = probe(tree)

    assert [(p.vmi, p.interfaces[0].link) for p in report.pods] == [
        ("prod/a", "vetha"), ("prod/b", "vethb"),
    ]  # fmt: skip
    assert report.switches[0].ports == ["vetha", "vethb"]


def test_host_macvtaps_and_passed_through_nics(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).nic("ens2f0", "0000:5e:00.0").macvtap("macvtap0", "ens2f0")
    tree.macvtap("macvlan0", "ens2f0", macvlan=True)
    for address, pci_class in (("0000:af:00.0", "0x020000"), ("0000:b0:00.0", "0x030000")):
        tree.file(f"/sys/bus/pci/drivers/vfio-pci/{address}/class", pci_class)

    report = probe(tree)

    assert report.macvtaps == [
        LowerLink(name="macvlan0", kind="Macvlan", lower="ens2f0"),
        LowerLink(name="macvtap0", kind="Macvtap", lower="ens2f0"),
    ]
    assert report.passthrough_nics == ["0000:af:00.0"]


def test_the_host_probe_reports_the_network(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).bridge("br0")
    launcher(tree, 4100, "prod", "a")

    report = probe_host(tree.fs())

    assert [s.name for s in report.network.switches] == ["br0"]
    assert report.network.pods == [PodNetwork(vmi="prod/a", pid=4100, netns="net:[402654100]")]
    assert [p for p in report.problems if p.feature == "Network"] == []


def test_the_text_report_shows_each_switch_and_where_each_pod_leads(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).bridge("br1")
    launcher(tree, 4100, "prod", "a")
    tree.veth("veth1", "net1", peer_root="/proc/4100/root", master="br1")

    text = format_report(probe_host(tree.fs()))

    assert "  Bridge br1: 1 port\n" in text
    assert "  pod of VM prod/a (pid 4100): net1 veth -> veth1 on br1\n" in text


def test_the_hosts_routes_and_addresses_name_the_interfaces_it_uses_itself(
    tmp_path: Path,
) -> None:
    tree = HostTree(tmp_path).nic("eno1", "0000:19:00.0").nic("ens1f0", "0000:3b:00.0")
    tree.nic("ens2f0", "0000:5e:00.0").nic("ens3f0", "0000:86:00.0").bridge("br0")
    tree.default_route("eno1").route("eno1").route("br0", "000011AC", "0000FFFF")
    tree.default_route("ens1f0", ipv6=True).default_route("lo", ipv6=True)
    tree.ipv6_address("ens2f0").ipv6_address("ens3f0", "fe80000000000000000000000000abcd", "20")

    assert probe(tree).routing == HostRouting(
        default_route=["eno1", "ens1f0"], ipv4_routes=["br0", "eno1"], ipv6_addresses=["ens2f0"])


def test_a_host_without_route_files_has_unknown_routing_not_none(tmp_path: Path) -> None:
    routing = probe(HostTree(tmp_path).nic("eno1", "0000:19:00.0")).routing

    assert routing.model_copy(update={"error": None}) == HostRouting()
    assert routing.error == ("/proc/1/net/route cannot be read (the agent needs hostPID and the "
                             "host's /proc); which interfaces the node uses itself is unknown")


def test_the_text_report_names_the_nics_the_host_uses_itself(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).nic("eno1", "0000:19:00.0").nic("ens1f0", "0000:3b:00.0")
    tree.default_route("eno1").route("eno1").ipv6_address("ens1f0").bond("bond0", "ens1f0")

    text = format_report(probe_host(tree.fs()))

    assert ("  the host's own traffic: default route via eno1; routes or addresses on eno1, "
            "ens1f0\n") in text
    assert "numa 0  in bond0\n" in text
