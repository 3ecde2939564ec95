"""What kvtune tells the kubelet for dedicated CPUs, and the form it can be told in, on host trees
of each distribution the probe reads (kubeadm, k3s, RKE2, OpenShift).

The reservedMemory arithmetic is the kubelet's own rule (memory_manager.go validateReservedMemory);
tests/realhost/test_kubelet.py runs the real kubelet on what is rendered here.
"""

from __future__ import annotations

import typing as t
from pathlib import Path

import pytest
from kvtune_agent.features.kubelet import config
from kvtune_agent.features.kubelet import probe as kubelet_probe
from kvtune_api.v1alpha1.host import KubeletReport, NumaNode
from kvtune_api.v1alpha1.profile import KubeletSettings
from support.hosttree import HostTree

GiB, MiB = 2**30, 2**20
TWO_NODES = [NumaNode(id=node, memory_total_kib=64 * 2**20) for node in (0, 1)]
KUBEADM_DROP_INS = "/etc/kubernetes/kubelet.conf.d"
RESERVES = ("systemReserved: {memory: 1Gi}\nkubeReserved: {memory: 512Mi}\n"
            "evictionHard: {memory.available: 500Mi, nodefs.available: 10%}\n")


def _probe(tree: HostTree) -> KubeletReport:
    fs = tree.fs()
    return kubelet_probe.probe(fs, fs.processes())


def _kubeadm(tmp_path: Path, config_text: str = RESERVES, *flags: str) -> HostTree:
    """A kubeadm node: /var/lib/kubelet/config.yaml, a drop-in directory, kubelet.service."""
    tree = HostTree(tmp_path).kubelet_config(f"kind: KubeletConfiguration\n{config_text}")
    (tmp_path / KUBEADM_DROP_INS.lstrip("/")).mkdir(parents=True)
    tree.process(77, "kubelet", "/usr/bin/kubelet", "--config=/var/lib/kubelet/config.yaml",
                 f"--config-dir={KUBEADM_DROP_INS}", *flags)
    return tree.file("/proc/77/cgroup", "0::/system.slice/kubelet.service")


def _split(entries: list[dict[str, t.Any]]) -> dict[int, int]:
    return {e["numaNode"]: config._bytes(e["limits"]["memory"], "test") for e in entries}


# -- reservedMemory: the kubelet's equality, to the byte --------------------------------------


@pytest.mark.parametrize(("total", "nodes", "expected"), [
    pytest.param(2 * GiB, TWO_NODES, {0: GiB, 1: GiB}, id="even over two nodes"),
    pytest.param(GiB + 1, TWO_NODES, {0: GiB // 2 + 1, 1: GiB // 2}, id="odd byte on node 0"),
    pytest.param(3 * GiB, [*TWO_NODES, NumaNode(id=2, memoryless=True)], {0: 3 * GiB // 2,
                 1: 3 * GiB // 2}, id="a memoryless node gets none"),
    pytest.param(1, TWO_NODES, {0: 1}, id="fewer bytes than nodes: no zero entry"),
])
def test_reserved_memory_adds_up_to_the_byte_and_has_no_zero_entry(
    total: int, nodes: list[NumaNode], expected: dict[int, int]
) -> None:
    split = _split(config.split_reserved_memory(total, nodes))

    assert split == expected
    assert sum(split.values()) == total
    assert all(split.values())


@pytest.mark.parametrize(("config_text", "flags", "expected"), [
    pytest.param(RESERVES, (), GiB + 512 * MiB + 500 * MiB, id="system + kube + eviction"),
    pytest.param("systemReserved: {memory: 1Gi}\n", (), GiB + 100 * MiB,
                 id="no evictionHard in --config: the kubelet's 100Mi"),
    pytest.param("systemReserved: {memory: 1Gi}\n", ("--eviction-hard=nodefs.available<5%",),
                 GiB, id="a flag without memory.available: none"),
    pytest.param(RESERVES, ("--eviction-hard=memory.available<1Gi",), GiB + 512 * MiB + GiB,
                 id="a flag replaces the file's threshold"),
])
def test_the_reserve_is_what_the_kubelet_counts_as_allocatable_reservation(
    tmp_path: Path, config_text: str, flags: tuple[str, ...], expected: int
) -> None:
    assert config.reserved_bytes(_probe(_kubeadm(tmp_path, config_text, *flags))) == expected


def test_without_a_config_file_the_kubelet_has_no_default_eviction_threshold(
    tmp_path: Path,
) -> None:
    # k3s: flags and a drop-in directory, no --config, so loadConfigFile's default never applies.
    tree = HostTree(tmp_path).kubelet_config(
        "kind: KubeletConfiguration\nsystemReserved: {memory: 1Gi}\n",
        "/var/lib/rancher/k3s/agent/etc/kubelet.conf.d/00-k3s-defaults.conf")
    tree.process(9, "k3s-server", "/usr/local/bin/k3s", "server")

    assert config.reserved_bytes(_probe(tree)) == GiB


@pytest.mark.parametrize(("config_text", "refusal"), [
    pytest.param("evictionHard: {memory.available: 5%}\n", "write it as a quantity",
                 id="a percentage"),
    pytest.param("evictionHard: {nodefs.available: 10%}\n",
                 "set evictionHard memory.available explicitly", id="a file without it"),
    pytest.param("evictionHard: {memory.available: 0}\n",
                 "set systemReserved memory", id="nothing reserved at all"),
    pytest.param("systemReserved: {memory: 100m}\nevictionHard: {memory.available: 1Mi}\n",
                 "not a whole, non-negative number of bytes", id="a fraction of a byte"),
])
def test_a_reserve_kvtune_cannot_match_to_the_byte_is_refused_with_the_fix(
    tmp_path: Path, config_text: str, refusal: str
) -> None:
    kubelet = _probe(_kubeadm(tmp_path, config_text))

    with pytest.raises(config.Refusal, match=refusal):
        config.wanted(KubeletSettings(), None, kubelet, TWO_NODES, frozenset({0, 1}))


# -- what is wanted ----------------------------------------------------------------------------


def test_the_wanted_settings_are_the_issue_s_list_with_the_housekeeping_cpus(
    tmp_path: Path,
) -> None:
    kubelet = _probe(_kubeadm(tmp_path))

    want = config.wanted(KubeletSettings(), "single-numa-node", kubelet, TWO_NODES,
                         frozenset({0, 1, 64, 65}))

    assert want == {
        "cpuManagerPolicy": "static",
        "cpuManagerPolicyOptions": {"full-pcpus-only": "true"},
        "reservedSystemCPUs": "0-1,64-65",
        "memoryManagerPolicy": "Static",
        "reservedMemory": [{"numaNode": 0, "limits": {"memory": "1018Mi"}},
                           {"numaNode": 1, "limits": {"memory": "1018Mi"}}],
        "topologyManagerPolicy": "single-numa-node",
        "topologyManagerScope": "pod",
    }


def test_without_housekeeping_cpus_the_kubelet_s_own_reserved_cpus_are_kept(
    tmp_path: Path,
) -> None:
    kubelet = _probe(_kubeadm(tmp_path, RESERVES + "reservedSystemCPUs: 0-3\n"))

    want = config.wanted(KubeletSettings(), None, kubelet, TWO_NODES, None)

    assert "reservedSystemCPUs" not in want and "topologyManagerPolicy" not in want


def test_without_any_reserved_cpus_the_static_cpu_manager_is_refused(tmp_path: Path) -> None:
    with pytest.raises(config.Refusal, match=r"spec\.cpu\.partition"):
        config.wanted(KubeletSettings(), None, _probe(_kubeadm(tmp_path)), TWO_NODES, None)


# -- the forms ---------------------------------------------------------------------------------


def _want(kubelet: KubeletReport) -> dict[str, t.Any]:
    return config.wanted(KubeletSettings(), "single-numa-node", kubelet, TWO_NODES,
                         frozenset({0, 1}))


def test_kubeadm_gets_a_drop_in_which_the_kubelet_then_reads_as_wanted(tmp_path: Path) -> None:
    tree = _kubeadm(tmp_path)
    kubelet = _probe(tree)
    want = _want(kubelet)

    rendering = config.render(want, kubelet, "kubelet", "vms")

    assert (rendering.form, rendering.path) == ("DropIn", f"{KUBEADM_DROP_INS}/99-kvtune.conf")
    assert set(rendering.changed) == set(want)
    assert rendering.state_files == (config.CPU_STATE, config.MEMORY_STATE)
    # Read back as the kubelet merges it: nothing left to change (the steady state).
    assert rendering.path is not None
    tree.file(rendering.path, rendering.content)
    after = _probe(tree)
    assert config.differing(want, after) == []
    assert after.origins["reservedMemory"] == rendering.path


def test_a_kubelet_already_running_the_settings_needs_nothing(tmp_path: Path) -> None:
    tree = _kubeadm(tmp_path)
    want = _want(_probe(tree))
    tree.kubelet_config(config.drop_in(want, "vms"), f"{KUBEADM_DROP_INS}/50-admin.conf")

    assert config.render(want, _probe(tree), "kubelet", "vms").changed == ()


def test_a_setting_given_as_a_flag_is_reported_as_the_flag_to_change(tmp_path: Path) -> None:
    kubelet = _probe(_kubeadm(tmp_path, RESERVES, "--cpu-manager-policy=none"))

    rendering = config.render(_want(kubelet), kubelet, "kubelet", "vms")

    assert (rendering.form, rendering.path) == ("Report", None)
    assert "cpuManagerPolicy given on the kubelet's command line" in rendering.content
    assert "set --cpu-manager-policy=static on the kubelet's command line (pid 77)" in (
        rendering.content)


def test_a_drop_in_sorting_after_kvtune_s_is_reported_not_written_over_again(
    tmp_path: Path,
) -> None:
    tree = _kubeadm(tmp_path)
    tree.kubelet_config("cpuManagerPolicy: none\n", f"{KUBEADM_DROP_INS}/zz-admin.conf")
    kubelet = _probe(tree)

    rendering = config.render(_want(kubelet), kubelet, "kubelet", "vms")

    assert rendering.form == "Report"
    assert f"{KUBEADM_DROP_INS}/zz-admin.conf come(s) after kvtune's" in rendering.content
    assert f"set cpuManagerPolicy: static in {KUBEADM_DROP_INS}/zz-admin.conf" in (
        rendering.content)


def test_a_kubelet_without_a_drop_in_directory_gets_the_change_to_make(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).kubelet_config(f"kind: KubeletConfiguration\n{RESERVES}")
    tree.process(77, "kubelet", "/usr/bin/kubelet", "--config=/var/lib/kubelet/config.yaml")
    kubelet = _probe(tree)

    rendering = config.render(_want(kubelet), kubelet, "kubelet", "vms")

    assert rendering.form == "Report"
    assert "add --config-dir=/etc/kubernetes/kubelet.conf.d" in rendering.content
    assert "set cpuManagerPolicy: static in /var/lib/kubelet/config.yaml" in rendering.content


def test_report_management_shows_the_change_and_writes_nothing(tmp_path: Path) -> None:
    kubelet = _probe(_kubeadm(tmp_path))

    rendering = config.render(_want(kubelet), kubelet, "kubelet", "vms", report_only=True)

    assert (rendering.form, rendering.path) == ("Report", None)
    assert f"would write {KUBEADM_DROP_INS}/99-kvtune.conf holding {{apiVersion: " in (
        rendering.content)
    assert "reservedMemory: [{numaNode: 0, limits: {memory: 1018Mi}}" in rendering.content


def test_openshift_is_told_to_use_a_kubeletconfig(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).kubelet_config(f"kind: KubeletConfiguration\n{RESERVES}",
                                             config.OPENSHIFT_CONFIG)
    tree.process(77, "kubelet", "/usr/bin/kubelet", f"--config={config.OPENSHIFT_CONFIG}")
    kubelet = _probe(tree)

    rendering = config.render(_want(kubelet), kubelet, "openshift", "vms")

    assert rendering.form == "Report" and "KubeletConfig" in rendering.content


K3S_DROP_INS = "/var/lib/rancher/k3s/agent/etc/kubelet.conf.d"


def _k3s(tmp_path: Path, config_yaml: str | None, drop_in_dir: bool) -> HostTree:
    tree = HostTree(tmp_path)
    if config_yaml is not None:
        tree.file("/etc/rancher/k3s/config.yaml", config_yaml)
    if drop_in_dir:
        tree.kubelet_config("kind: KubeletConfiguration\n", f"{K3S_DROP_INS}/00-k3s-defaults.conf")
    tree.process(9, "k3s-server", "/usr/local/bin/k3s", "server")
    return tree.file("/proc/9/cgroup", "0::/system.slice/k3s.service")


K3S_RESERVE = ("kubelet-arg:\n  - system-reserved=memory=1Gi\n"
               "  - eviction-hard=memory.available<100Mi\n")


def test_k3s_with_its_drop_in_directory_gets_a_drop_in_there(tmp_path: Path) -> None:
    tree = _k3s(tmp_path, K3S_RESERVE, drop_in_dir=True)
    kubelet = _probe(tree)

    rendering = config.render(_want(kubelet), kubelet, "k3s", "vms")

    assert (rendering.form, rendering.path) == ("DropIn", f"{K3S_DROP_INS}/99-kvtune.conf")


@pytest.mark.parametrize("drop_in_dir", [False, True], ids=["k3s before 1.32", "k3s 1.32+"])
def test_k3s_whose_settings_are_kubelet_args_gets_kubelet_args_of_its_own(
    tmp_path: Path, drop_in_dir: bool
) -> None:
    tree = _k3s(tmp_path, K3S_RESERVE + "  - cpu-manager-policy=none\n", drop_in_dir)
    kubelet = _probe(tree)
    want = _want(kubelet)

    rendering = config.render(want, kubelet, "k3s", "vms")

    assert rendering.form == "KubeletArg"
    assert rendering.path == "/etc/rancher/k3s/config.yaml.d/99-kvtune-kubelet.yaml"
    # k3s appends kubelet-arg+ after the other files' entries; the kubelet takes the last.
    tree.file(rendering.path, rendering.content)
    after = _probe(tree)
    assert config.differing(want, after) == []
    assert config.reserved_bytes(after) == GiB + 100 * MiB  # its own reserves untouched


def test_k3s_kubelet_args_of_a_file_after_kvtune_s_are_reported(tmp_path: Path) -> None:
    tree = _k3s(tmp_path, K3S_RESERVE, drop_in_dir=False)
    tree.file("/etc/rancher/k3s/config.yaml.d/zz-site.yaml",
              "kubelet-arg+: [cpu-manager-policy=none]\n")
    kubelet = _probe(tree)

    rendering = config.render(_want(kubelet), kubelet, "k3s", "vms")

    assert rendering.form == "Report"
    assert "/etc/rancher/k3s/config.yaml.d/zz-site.yaml come(s) after kvtune's" in (
        rendering.content)


def test_k3s_reserved_memory_given_as_a_kubelet_arg_is_not_given_twice(tmp_path: Path) -> None:
    tree = _k3s(tmp_path, K3S_RESERVE + "  - reserved-memory=0:memory=1Gi\n", False)
    kubelet = _probe(tree)

    rendering = config.render(_want(kubelet), kubelet, "k3s", "vms")

    assert rendering.form == "Report"
    assert "second --reserved-memory adds entries" in rendering.content
    assert "reserved-memory=0:memory=562Mi;1:memory=562Mi" in rendering.content


def test_rke2_gets_a_drop_in_in_the_directory_its_kubelet_is_given(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).kubelet_config(
        f"kind: KubeletConfiguration\n{RESERVES}",
        "/var/lib/rancher/rke2/agent/etc/kubelet.conf.d/00-rke2-defaults.conf")
    tree.process(40, "kubelet", "/var/lib/rancher/rke2/data/v1/bin/kubelet",
                 "--config-dir=/var/lib/rancher/rke2/agent/etc/kubelet.conf.d")
    kubelet = _probe(tree)

    rendering = config.render(_want(kubelet), kubelet, "rke2", "vms")

    assert rendering.path == "/var/lib/rancher/rke2/agent/etc/kubelet.conf.d/99-kvtune.conf"
