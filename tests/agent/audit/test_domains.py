"""Reading a domain: the XML facts, and libvirt's runtime answers on the test driver."""

from __future__ import annotations

import pytest
from kvtune_agent.audit.domains import DomainXMLError, parse_cpuset, parse_domain_xml, read_domain

from .builders import domain_xml, libvirt_host

KUBEVIRT_XML = """
<domain type='kvm' id='1'>
  <name>prod_db</name>
  <memory unit='KiB'>8388608</memory>
  <memoryBacking><hugepages><page size='1048576' unit='KiB'/></hugepages></memoryBacking>
  <vcpu placement='static'>4</vcpu>
  <iothreads>1</iothreads>
  <cputune>
    <vcpupin vcpu='0' cpuset='4'/><vcpupin vcpu='1' cpuset='5'/>
    <vcpupin vcpu='2' cpuset='6'/><vcpupin vcpu='3' cpuset='7'/>
    <emulatorpin cpuset='3'/>
  </cputune>
  <numatune><memory mode='strict' nodeset='1'/><memnode cellid='0' mode='strict' nodeset='1'/>
  </numatune>
  <os><type arch='x86_64' machine='pc-q35-rhel9.2.0'>hvm</type></os>
  <cpu mode='host-passthrough'><numa><cell id='0' cpus='0-3' memory='8388608' unit='KiB'/></numa>
  </cpu>
  <devices>
    <disk type='block' device='disk'><source dev='/dev/rootdisk'/><target dev='vda'/></disk>
    <disk type='file' device='disk'>
      <source file='/var/run/kubevirt-ephemeral-disks/cloud-init-data/prod/db/noCloud.iso'/>
      <target dev='vdb'/></disk>
    <disk type='file' device='cdrom'><source file='/iso/tools.iso'/><target dev='sda'/>
      <readonly/></disk>
    <interface type='ethernet'><target dev='tap0' managed='no'/></interface>
    <interface type='hostdev' managed='no'><source><address type='pci' domain='0x0000'
      bus='0x3b' slot='0x02' function='0x1'/></source></interface>
    <video><model type='vga' vram='16384'/></video>
    <tpm model='tpm-crb'><backend type='emulator' version='2.0'/></tpm>
  </devices>
</domain>
"""


def test_a_kubevirt_domain_with_dedicated_cpus_and_hugepages_is_read_from_its_xml() -> None:
    dom = parse_domain_xml(KUBEVIRT_XML)

    assert dom.name == "prod_db"
    assert dom.vcpu_cpus == tuple(frozenset({c}) for c in (4, 5, 6, 7))
    assert dom.fully_pinned and dom.pinned_cpus == {4, 5, 6, 7}
    assert dom.emulator_cpus == frozenset({3})
    assert (dom.numa_mode, dom.numa_nodes) == ("strict", frozenset({1}))
    assert (dom.memory_kib, dom.hugepages, dom.hugepage_kib) == (8 << 20, True, 1 << 20)
    assert dom.guest_numa_cells == 1
    assert [(n.type, n.source) for n in dom.nics] == [("ethernet", ""), ("hostdev", "0000:3b:02.1")]
    assert [(d.type, d.device, d.source, d.read_only, d.generated) for d in dom.disks] == [
        ("block", "disk", "/dev/rootdisk", False, False),
        ("file", "disk", "/var/run/kubevirt-ephemeral-disks/cloud-init-data/prod/db/noCloud.iso",
         False, True),
        ("file", "cdrom", "/iso/tools.iso", True, False),
    ]  # fmt: skip
    assert (dom.vfio, dom.video, dom.tpm, dom.sev, dom.arch) == (True, True, True, False, "x86_64")


def test_a_domain_without_cputune_floats_and_is_not_bound() -> None:
    dom = parse_domain_xml(domain_xml("plain", vcpus=3))

    assert dom.vcpu_cpus == (None, None, None)
    assert not dom.fully_pinned and dom.pinned_cpus == frozenset()
    assert (dom.emulator_cpus, dom.numa_nodes, dom.hugepages) == (None, None, False)


def test_the_vcpu_cpuset_pins_every_vcpu_and_the_emulator_unless_overridden() -> None:
    xml = domain_xml("set", vcpus=2, pins=["6"]).replace(
        "<vcpu placement='static'>2</vcpu>", "<vcpu placement='static' cpuset='0-3,^1'>2</vcpu>"
    )

    dom = parse_domain_xml(xml)

    assert dom.vcpu_cpus == (frozenset({6}), frozenset({0, 2, 3}))
    assert dom.emulator_cpus == frozenset({0, 2, 3})


def test_only_online_vcpus_count_and_pins_of_offline_ones_are_ignored() -> None:
    xml = domain_xml("hotplug", vcpus=4, pins=["0", "1", "2", "3"]).replace(
        "<vcpu placement='static'>4</vcpu>", "<vcpu placement='static' current='2'>4</vcpu>"
    )

    assert parse_domain_xml(xml).vcpu_cpus == (frozenset({0}), frozenset({1}))


@pytest.mark.parametrize(
    ("unit", "kib"),
    [("KiB", 1024), ("MiB", 1 << 20), ("GiB", 1 << 30), ("b", 1), ("KB", 1000)],
)
def test_memory_units_are_read_as_libvirt_defines_them(unit: str, kib: int) -> None:
    xml = domain_xml("m", memory_mib=1).replace("unit='MiB'>1<", f"unit='{unit}'>1024<")

    assert parse_domain_xml(xml).memory_kib == kib


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("<domain", id="not XML"),
        pytest.param("<network><name>x</name></network>", id="not a domain"),
        pytest.param(domain_xml("x", pins=["zero"]), id="a cpuset that is not one"),
        pytest.param(domain_xml("x").replace("unit='MiB'", "unit='parsecs'"), id="odd unit"),
    ],
)
def test_xml_that_libvirt_would_not_write_is_an_error_naming_the_problem(text: str) -> None:
    with pytest.raises(DomainXMLError):
        parse_domain_xml(text)


def test_libvirt_cpusets_with_exclusions_are_parsed() -> None:
    assert parse_cpuset("0-7,^2-3,9") == {0, 1, 4, 5, 6, 7, 9}


def test_libvirt_runtime_answers_agree_with_the_xml_on_the_test_driver() -> None:
    xml = domain_xml(
        "ns_vm", vcpus=2, pins=["2", "3"], emulator="1", numatune=("strict", "0"),
        hugepage_kib=2048, nics=[("bridge", "br0")], disks=[("block", "/dev/sdb")],
    )  # fmt: skip
    with libvirt_host(xml) as conn:
        dom = read_domain(conn.lookupByName("ns_vm"))

    assert dom.vcpu_cpus == (frozenset({2}), frozenset({3}))
    assert dom.emulator_cpus == frozenset({1})
    assert (dom.numa_mode, dom.numa_nodes) == ("strict", frozenset({0}))
    assert (dom.hugepages, dom.hugepage_kib, dom.memory_kib) == (True, 2048, 2 << 20)


def test_an_unpinned_vcpu_stays_floating_though_libvirt_answers_every_cpu() -> None:
    with libvirt_host(domain_xml("float", vcpus=2)) as conn:
        assert conn.lookupByName("float").vcpuPinInfo(0)[0] == (True,) * 8
        dom = read_domain(conn.lookupByName("float"))

    assert dom.vcpu_cpus == (None, None)
    assert dom.emulator_cpus is None
