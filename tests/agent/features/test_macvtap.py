"""NICs dedicated to VMs through macvtap: which lower devices a node offers macvtap-cni's device
plugin, which it refuses and why, and how the node reports them (status.macvtap, the Macvtap
condition, the kvtune.io/macvtap-nics feature label)."""

from __future__ import annotations

import datetime
import json
import typing as t
from pathlib import Path

import pytest
from kvtune_agent import nfd
from kvtune_agent.engine.status import node_status
from kvtune_agent.features import FEATURES
from kvtune_agent.features.base import Finding, Plan
from kvtune_agent.wiring import plan, probe_host
from kvtune_api import conditions as cond
from kvtune_api.v1alpha1.nodestate import HypervisorNodeStateSpec, HypervisorNodeStateStatus
from kvtune_api.v1alpha1.profile import MacvtapResource
from support.hosttree import HostTree

from ..specs import node_spec

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def _host(tmp_path: Path) -> HostTree:
    """eno1 carries the node (default route and address); ens2f0 and ens2f1 are free."""
    tree = HostTree(tmp_path).nic("eno1", "0000:19:00.0").default_route("eno1").route("eno1")
    return tree.nic("ens2f0", "0000:5e:00.0").nic("ens2f1", "0000:5e:00.1")


def _spec(*rules: dict[str, t.Any], **network: t.Any) -> HypervisorNodeStateSpec:
    return node_spec(network={"macvtap": list(rules), **network})


def _rule(name: str = "dataplane", **selector: t.Any) -> dict[str, t.Any]:
    return {"name": name, "nicSelector": selector or {"names": ["ens2f0"]}}


def _plan(tree: HostTree, spec: HypervisorNodeStateSpec) -> Plan:
    return plan(spec, probe_host(tree.fs()))


def _finding(found: Plan, reason: str) -> Finding:
    [finding] = [f for f in found.findings if f.reason == reason]
    return finding


def _status(tree: HostTree, spec: HypervisorNodeStateSpec) -> HypervisorNodeStateStatus:
    host = probe_host(tree.fs())
    return node_status(FEATURES, spec, 1, host, plan(spec, host), None, HypervisorNodeStateStatus(),
                       NOW)


def test_a_free_nic_is_offered_in_the_device_plugins_own_shape(tmp_path: Path) -> None:
    spec = _spec({**_rule(), "mode": "vepa"})

    status = _status(_host(tmp_path), spec)

    assert json.loads(json.dumps(status.model_dump(mode="json", by_alias=True)["macvtap"])) == [
        {"name": "dataplane", "lowerDevice": "ens2f0", "mode": "vepa", "capacity": 1}]
    condition = cond.find(status.conditions, "Macvtap")
    assert condition is not None
    assert (condition.status, condition.reason, condition.message) == (
        "True", "AsSpecified", "offers dataplane on ens2f0")


def test_one_resource_name_follows_the_nic_whatever_each_node_calls_it(tmp_path: Path) -> None:
    spec = _spec(_rule(names=["ens2f1", "ens7"]))

    assert _plan(_host(tmp_path), spec).published.get("macvtap", ()) == (
        MacvtapResource(name="dataplane", lower_device="ens2f1", mode="bridge", capacity=1),)


def _refusal(tree: HostTree, spec: HypervisorNodeStateSpec) -> str:
    found = _plan(tree, spec)
    assert found.published.get("macvtap", ()) == ()
    finding = _finding(found, "MacvtapLowerDeviceInUse")
    assert finding.severity == "Error"
    return finding.message


@pytest.mark.parametrize(("build", "why"), [
    pytest.param(lambda t: t.default_route("ens2f0"), "the node's default route leaves through it",
                 id="the default route"),
    pytest.param(lambda t: t.default_route("ens2f0", ipv6=True),
                 "the node's default route leaves through it", id="the IPv6 default route"),
    pytest.param(lambda t: t.route("ens2f0"), "it carries the node's own address",
                 id="an IPv4 subnet route"),
    pytest.param(lambda t: t.ipv6_address("ens2f0"), "it carries the node's own address",
                 id="a global IPv6 address"),
    pytest.param(lambda t: t.bridge("br0").plug("ens2f0", "br0"), "it is enslaved to br0",
                 id="a bridge port"),
    pytest.param(lambda t: t.bond("bond0", "ens2f0"), "it is enslaved to bond0", id="a bond slave"),
])
def test_a_nic_the_node_uses_itself_is_refused_naming_node_nic_and_fix(
    tmp_path: Path, build: t.Callable[[HostTree], HostTree], why: str
) -> None:
    tree = _host(tmp_path)
    build(tree)

    message = _refusal(tree, _spec(_rule()))

    assert message.startswith(
        "NIC ens2f0 of node n1, selected by spec.host.network.macvtap[0] for "
        "macvtap.network.kubevirt.io/dataplane, is not offered to VMs: ")
    assert why in message
    assert message.endswith("Select a NIC the node does not use otherwise, or free this one")


def test_a_link_local_ipv6_address_does_not_count_as_the_nodes_own(tmp_path: Path) -> None:
    tree = _host(tmp_path).ipv6_address("ens2f0", "fe80000000000000000000000000abcd", "20")

    offered = _plan(tree, _spec(_rule())).published.get("macvtap", ())
    assert [r.lower_device for r in offered] == ["ens2f0"]


def test_an_sriov_pf_the_profile_manages_is_refused(tmp_path: Path) -> None:
    spec = _spec(_rule(), sriov=[{"pfSelector": {"names": ["ens2f0"]}, "numVfs": 0}])

    assert "an SR-IOV PF whose VFs spec.host.network.sriov[0] manages" in _refusal(
        _host(tmp_path), spec)


def test_a_selector_matching_two_nics_offers_neither(tmp_path: Path) -> None:
    found = _plan(_host(tmp_path), _spec(_rule(names=["ens2f0", "ens2f1"])))

    assert found.published.get("macvtap", ()) == ()
    assert "matches NICs ens2f0, ens2f1 on node n1" in (
        _finding(found, "MacvtapRuleMatchesSeveral").message)


def test_two_resources_on_one_nic_offer_only_the_first(tmp_path: Path) -> None:
    found = _plan(_host(tmp_path), _spec(_rule("a"), _rule("b", vendor="8086", device="159b",
                                                            names=["ens2f0"])))

    assert [r.name for r in found.published.get("macvtap", ())] == ["a"]
    assert _finding(found, "MacvtapRulesConflict").severity == "Error"


def test_a_selector_matching_nothing_here_is_a_warning_not_a_failure(tmp_path: Path) -> None:
    status = _status(_host(tmp_path), _spec(_rule(names=["ens9"])))

    assert status.macvtap == []
    condition = cond.find(status.conditions, "Macvtap")
    assert condition is not None and condition.status == "True"
    assert "matches no NIC on node n1 (NICs here: eno1, ens2f0, ens2f1)" in condition.message


@pytest.mark.parametrize(("capacity", "shared"), [(1, False), (8, True)])
def test_a_capacity_above_one_is_offered_with_a_warning_that_vms_share_the_nic(
    tmp_path: Path, capacity: int, shared: bool
) -> None:
    found = _plan(_host(tmp_path), _spec({**_rule(), "capacity": capacity}))

    assert [r.capacity for r in found.published.get("macvtap", ())] == [capacity]
    assert any(f.reason == "MacvtapShared" for f in found.findings) is shared


def test_a_refused_nic_makes_the_node_degraded_with_the_macvtap_reason(tmp_path: Path) -> None:
    status = _status(_host(tmp_path), _spec(_rule(names=["eno1"])))

    assert [(c.type, c.status, c.reason) for c in status.conditions
            if c.type in (cond.DEGRADED, "Macvtap")] == [
        (cond.DEGRADED, "True", "MacvtapLowerDeviceInUse"),
        ("Macvtap", "False", "MacvtapLowerDeviceInUse"),
    ]


def test_a_profile_without_macvtap_leaves_it_unmanaged_and_unlabelled(tmp_path: Path) -> None:
    spec = node_spec()
    status = _status(_host(tmp_path), spec)

    condition = cond.find(status.conditions, "Macvtap")
    assert condition is not None and (condition.status, condition.reason) == ("True", "NotManaged")
    assert "kvtune.io/macvtap-nics" not in nfd.features(spec, status)


def test_the_feature_label_counts_offered_nics_and_ignores_running_vms(tmp_path: Path) -> None:
    spec = _spec(_rule("a"), _rule("b", names=["ens2f1"]), _rule("c", names=["eno1"]))
    tree = _host(tmp_path)
    before = nfd.features(spec, _status(tree, spec))["kvtune.io/macvtap-nics"]
    # A VM starts on ens2f0: macvtap-cni creates its device on the host, then moves it to the pod.
    tree.macvtap("dataplaneMvp0", "ens2f0")

    assert before == nfd.features(spec, _status(tree, spec))["kvtune.io/macvtap-nics"] == "2"


# -- stacked devices: a NIC is the node's own if anything stacked on it carries its traffic ---


@pytest.mark.parametrize(("build", "above"), [
    pytest.param(lambda t: t.vlan("ens2f0.100", "ens2f0").default_route("ens2f0.100"),
                 "ens2f0.100", id="a VLAN with the default route"),
    pytest.param(lambda t: t.vlan("ens2f0.100", "ens2f0").route("ens2f0.100"),
                 "ens2f0.100", id="a VLAN with the node's address"),
    pytest.param(lambda t: t.vlan("ens2f0.100", "ens2f0").ipv6_address("ens2f0.100"),
                 "ens2f0.100", id="a VLAN with a global IPv6 address"),
    pytest.param(lambda t: t.macvtap("mv0", "ens2f0", macvlan=True).route("mv0"),
                 "mv0", id="a host macvlan with the node's address"),
    pytest.param(lambda t: t.vlan("ens2f0.100", "ens2f0").vlan("ens2f0.100.7", "ens2f0.100")
                 .default_route("ens2f0.100.7"), "ens2f0.100.7", id="a VLAN on a VLAN (QinQ)"),
    pytest.param(lambda t: t.bond("bond0", "ens2f0").vlan("bond0.10", "bond0")
                 .default_route("bond0.10"), "bond0.10", id="a VLAN on a bond of it"),
    pytest.param(lambda t: t.bridge("br0").plug("ens2f0", "br0").route("br0"), "br0",
                 id="a bridge with the node's address"),
    pytest.param(lambda t: t.ovs("br-ex").plug("ens2f0", "ovs-system").default_route("br-ex"),
                 "br-ex", id="an Open vSwitch bridge with the default route"),
    pytest.param(lambda t: t.bond("team0", "ens2f0").ipv6_address("team0"), "team0",
                 id="a team (a master link only) with only an IPv6 address"),
    pytest.param(lambda t: t.vlan("ens2f0.100", "ens2f0").default_route("ens2f0.100",
                                                                        ipv6=True),
                 "ens2f0.100", id="a VLAN with only the IPv6 default route"),
    pytest.param(lambda t: t.bridge("br0").plug("ens2f0", "br0").vlan("br0.5", "br0")
                 .ipv6_address("br0.5", scope="40"), "br0.5",
                 id="a VLAN on a bridge of it with a site-scope IPv6 address"),
])
def test_a_nic_under_a_device_that_carries_the_nodes_traffic_is_refused(
    tmp_path: Path, build: t.Callable[[HostTree], HostTree], above: str,
) -> None:
    tree = _host(tmp_path)
    build(tree)

    message = _refusal(tree, _spec(_rule()))

    assert f"{above}, stacked on it (VLAN, macvlan, bond, bridge, team or Open vSwitch), " \
           "carries the node's own traffic" in message


def test_a_vlan_that_carries_nothing_of_the_nodes_leaves_its_nic_offered(tmp_path: Path) -> None:
    tree = _host(tmp_path).vlan("ens2f0.100", "ens2f0")

    offered = _plan(tree, _spec(_rule())).published.get("macvtap", ())
    assert [r.lower_device for r in offered] == ["ens2f0"]


@pytest.mark.parametrize("build", [
    pytest.param(lambda t: (t.root / "proc/1/net/route").unlink(), id="no /proc/1/net/route"),
    pytest.param(lambda t: (t.root / "proc/1/net/route").unlink() or t.unreadable(
        "/proc/1/net/route"), id="an unreadable /proc/1/net/route"),
    pytest.param(lambda t: t.file("/proc/1/net/ipv6_route", "zz 00 nonsense"),
                 id="a malformed ipv6_route line"),
    pytest.param(lambda t: t.append_line("/proc/1/net/route", "eno2\t0000"),
                 id="a short /proc/1/net/route line"),
    pytest.param(lambda t: t.ipv6_address("eno1").append_line(
        "/proc/1/net/if_inet6", "20010db8 02 40"), id="a short if_inet6 line"),
    pytest.param(lambda t: t.append_line(
        "/proc/1/net/if_inet6", f"{'z' * 32} 02 40 00 80    ens2f0"),
        id="an if_inet6 line whose address is no hex"),
    pytest.param(lambda t: (t.root / "proc/1/net/if_inet6").mkdir(parents=True),
                 id="an unreadable if_inet6"),
])
def test_routing_that_cannot_be_read_offers_no_nic_and_the_probe_goes_on(
    tmp_path: Path, build: t.Callable[[HostTree], object],
) -> None:
    tree = _host(tmp_path).bridge("br9")
    build(tree)

    host = probe_host(tree.fs())
    found = plan(_spec(_rule()), host)

    assert found.published.get("macvtap", ()) == ()
    assert "which interfaces the node uses itself is unknown" in _refusal(tree, _spec(_rule()))
    assert [s.name for s in host.network.switches] == ["br9"]  # the rest of the probe stands
