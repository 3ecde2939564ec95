"""The network probe against the real kernel's links, judged by `ip -d link` and `bridge link`.

Linux bridges, taps, a macvlan and veth pairs into network namespaces standing in for
virt-launcher pods (see netns.py), laid out as KubeVirt and its CNIs lay out a node: a pod's
eth0 on a host bridge and on the pod's own k6t-eth0 bridge with the VM's tap (bridge binding),
a second network through another host bridge, a macvlan on a host link moved into a pod (as
macvtap-cni moves its macvtap). The probe reads sysfs; iproute2 asks netlink: the report must
say what iproute2 says (which port is on which bridge, where each pod's interface leads).
"""

from __future__ import annotations

import json
import os
import typing as t
from pathlib import Path

from kvtune_agent.features.network import probe as network
from kvtune_agent.host.hostfs import HostFS
from kvtune_api.v1alpha1.host import (
    InterfaceKind,
    LowerLink,
    NetworkReport,
    PodInterface,
    PodNetwork,
    SoftwareSwitch,
)
from support.realhost import REALHOST

from .netns import PREFIX, Network, Pod, links, run

pytestmark = REALHOST

#: iproute2's link kinds (linkinfo.info_kind) -> the probe's; a tun device is a Tap in tap mode.
KINDS: dict[str, InterfaceKind] = {"bridge": "Bridge", "veth": "Veth", "macvlan": "Macvlan",
                                   "macvtap": "Macvtap", "openvswitch": "OpenVSwitch"}


def _kind(link: dict[str, t.Any]) -> InterfaceKind:
    info = link.get("linkinfo", {})
    if info.get("info_kind") == "tun":
        return "Tap" if info["info_data"]["type"] == "tap" else "Other"
    return KINDS.get(info.get("info_kind", ""), "Other")


def _by_ip(pods: list[Pod]) -> NetworkReport:
    """What iproute2 says of this run's links and pods, in the probe's terms. It names a link's
    link (a veth's peer, a macvlan's lower device) when both are in one namespace, and gives
    its index and namespace id when they are not."""
    host = [link for link in links() if link["ifname"].startswith(PREFIX)]
    by_index = {link["ifindex"]: link for link in links()}
    ports = [(port["master"], port["ifname"])
             for port in json.loads(run("bridge", "-j", "link", "show")) if "master" in port]
    switches = []
    for link in host:
        if _kind(link) == "Bridge":
            on = sorted(port for master, port in ports if master == link["ifname"])
            switches.append(SoftwareSwitch(name=link["ifname"], kind="Bridge", ports=on,
                                           port_count=len(on)))
    reported = []
    for pod in pods:
        interfaces = []
        for link in links(pod.pid):
            if link["ifname"] == "lo":
                continue
            kind, peer = _kind(link), None
            if "link_netnsid" in link:  # its link is in another namespace: here, the host's
                peer = by_index[link["link_index"]]
            interfaces.append(PodInterface(
                name=link["ifname"], kind=kind, master=link.get("master"),
                link=None if peer is None else peer["ifname"],
                switch=peer.get("master") if peer is not None and kind == "Veth" else None,
            ))  # fmt: skip
        reported.append(PodNetwork(vmi=pod.vmi, pid=pod.pid,
                                   netns=os.readlink(f"/proc/{pod.pid}/ns/net"),
                                   interfaces=sorted(interfaces, key=lambda i: i.name)))
    lowers = [LowerLink(name=link["ifname"], kind=_kind(link),
                        lower=link["link"])
              for link in host if _kind(link) in ("Macvlan", "Macvtap")]  # fmt: skip
    return NetworkReport(switches=sorted(switches, key=lambda s: s.name), pods=reported,
                         macvtaps=lowers)


def _probed(pods: list[Pod]) -> NetworkReport:
    """The probe's report of the real host, cut to this run's links and pods (others share it)."""
    fs = HostFS(Path("/"))
    report = network.probe(fs, fs.processes())
    assert fs.take_issues() == []
    ours = {pod.pid for pod in pods}
    return NetworkReport(
        switches=[s for s in report.switches if s.name.startswith(PREFIX)],
        pods=[p for p in report.pods if p.pid in ours],
        macvtaps=[m for m in report.macvtaps if m.name.startswith(PREFIX)],
    )


def test_the_probe_reports_bridges_pods_and_where_each_pod_leads_as_iproute2_does(
    net: Network,
) -> None:
    shared, second = net.bridge("br0"), net.bridge("br1")
    net.tap("tap0", master=shared)
    a, b = net.pod("a"), net.pod("b")
    # a: KubeVirt's bridge binding on the pod network, and a macvlan on a host link.
    run("ip", "link", "add", "k6t-eth0", "type", "bridge", pid=a.pid)
    run("ip", "tuntap", "add", "tap0", "mode", "tap", pid=a.pid)
    run("ip", "link", "set", "tap0", "master", "k6t-eth0", pid=a.pid)
    net.veth("va0", a, "eth0", master=shared, peer_master="k6t-eth0")
    net.add(net.name("mv0"), "link", second, "type", "macvlan", "mode", "bridge")
    net.move(net.name("mv0"), a)
    net.add(net.name("mv1"), "link", second, "type", "macvlan", "mode", "bridge")
    # b: the pod network on the same bridge, a second network whose two ends have one index,
    # a tun device in L3 mode (no tap), and a vxlan of the index of one on the host (no pair).
    net.veth("vb0", b, "eth0", master=shared)
    index = 4000 + os.getpid() % 20000
    net.veth("vb1", b, "net1", master=second, index=index)
    run("ip", "tuntap", "add", "tun0", "mode", "tun", pid=b.pid)
    vxlan = ("type", "vxlan", "id", 42, "dstport", 4789)
    net.add(net.name("vx0"), "index", index + 1, *vxlan)
    run("ip", "link", "add", "vx0", "index", index + 1, *vxlan, pid=b.pid)

    expected = _by_ip([a, b])

    assert _probed([a, b]) == expected
    assert [s.ports for s in expected.switches] == [
        [net.name("tap0"), net.name("va0"), net.name("vb0")], [net.name("vb1")]]
    assert [i.kind for p in expected.pods for i in p.interfaces] == [
        "Veth", "Bridge", "Macvlan", "Tap", "Veth", "Veth", "Other", "Other"]
