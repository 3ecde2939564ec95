"""The host-routing probe against this machine's kernel, with iproute2 (netlink) as the oracle:
procfs shows routes and IPv6 addresses but no IPv4 address per device, so the probe's claim
that a route through a NIC stands for its IPv4 address is checked here, on real interfaces."""

from __future__ import annotations

import json
import subprocess
import typing as t
from pathlib import Path

from kvtune_agent.features.network import probe as network
from kvtune_agent.host.hostfs import HostFS
from kvtune_api.v1alpha1.host import HostRouting
from support.realhost import REALHOST

pytestmark = REALHOST


def _ip(*args: str) -> list[dict[str, t.Any]]:
    found: list[dict[str, t.Any]] = json.loads(subprocess.run(
        ["ip", "-j", *args], check=True, capture_output=True, text=True).stdout or "[]")
    return found


def _routing() -> HostRouting:
    fs = HostFS(Path("/"))
    return network.probe(fs, fs.processes()).routing


def test_the_default_route_devices_are_those_iproute2_shows() -> None:
    shown = {r["dev"] for family in ("-4", "-6") for r in _ip(family, "route", "show", "default")
             if r.get("dev") and r["dev"] != "lo" and r.get("type", "unicast") == "unicast"}

    assert set(_routing().default_route) == shown


def test_every_ipv4_route_of_the_main_table_is_seen_by_its_device() -> None:
    shown = {r["dev"] for r in _ip("-4", "route", "show", "table", "main") if r.get("dev")}

    assert set(_routing().ipv4_routes) == shown


def test_every_interface_with_an_ipv4_address_has_a_route_the_probe_sees() -> None:
    addressed = {link["ifname"] for link in _ip("-4", "addr", "show")
                 if link["ifname"] != "lo" and any(
                     "noprefixroute" not in a and a.get("family") == "inet"
                     for a in link.get("addr_info", []))}

    assert addressed <= set(_routing().ipv4_routes)


def test_the_global_ipv6_addresses_are_those_iproute2_shows() -> None:
    shown = {link["ifname"] for scope in ("global", "site")
             for link in _ip("-6", "addr", "show", "scope", scope) if link.get("addr_info")}

    assert set(_routing().ipv6_addresses) == shown
