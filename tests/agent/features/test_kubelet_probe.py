"""The kubelet probe: settings as the running kubelet reads them (its --config file, its
--config-dir drop-ins, its flags), else from the usual paths; nothing found means unknown."""

from __future__ import annotations

from pathlib import Path

import pytest
from kvtune_agent.features import kubelet_report
from kvtune_agent.features.kubelet import probe as kubelet
from kvtune_api.v1alpha1.host import KubeletReport
from support.hosttree import HostTree

TUNED = """\
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cpuManagerPolicy: static
topologyManagerPolicy: single-numa-node
topologyManagerScope: pod
memoryManagerPolicy: Static
reservedSystemCPUs: 0-1,64-65
systemReserved: {cpu: 500m, memory: 2Gi}
kubeReserved: {memory: 1Gi}
evictionHard: {memory.available: 500Mi, nodefs.available: 10%}
reservedMemory:
  - numaNode: 0
    limits: {memory: 3Gi}
"""


def _probe(tree: HostTree) -> KubeletReport:
    fs = tree.fs()
    return kubelet.probe(fs, fs.processes())


def test_an_absent_config_is_unknown_not_an_error(tmp_path: Path) -> None:
    found = _probe(HostTree(tmp_path))

    assert found.config_path is None
    assert found.cpu_manager_policy is None
    assert [p.severity for p in kubelet.check(found)] == ["Info"]


def test_a_tuned_config_is_read_in_full_and_raises_no_findings(tmp_path: Path) -> None:
    found = _probe(HostTree(tmp_path).kubelet_config(TUNED))

    assert found.config_path == "/var/lib/kubelet/config.yaml"
    assert (found.cpu_manager_policy, found.topology_manager_policy) == (
        "static", "single-numa-node")
    assert (found.topology_manager_scope, found.memory_manager_policy) == ("pod", "Static")
    assert found.reserved_system_cpus == "0-1,64-65"
    assert (found.system_reserved_memory, found.kube_reserved_memory) == ("2Gi", "1Gi")
    assert found.eviction_hard_memory == "500Mi"
    assert [(r.numa_node, r.limits) for r in found.reserved_memory] == [(0, {"memory": "3Gi"})]
    assert kubelet.check(found) == []


def test_settings_left_out_take_the_kubelet_defaults_and_are_flagged(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).kubelet_config("kind: KubeletConfiguration\n")

    found = _probe(tree)

    assert (found.cpu_manager_policy, found.topology_manager_policy) == ("none", "none")
    assert [p.severity for p in kubelet.check(found)] == ["Warning", "Info"]
    assert "cpuManagerPolicy: static" in kubelet.check(found)[0].message


@pytest.mark.parametrize(
    ("text", "error"),
    [
        pytest.param("cpuManagerPolicy: [static\n", "invalid YAML", id="broken YAML"),
        pytest.param("- a list\n", "not a KubeletConfiguration mapping", id="not a mapping"),
    ],
)
def test_an_unusable_config_is_an_error_naming_the_file(
    tmp_path: Path, text: str, error: str
) -> None:
    found = _probe(HostTree(tmp_path).kubelet_config(text))

    [problem] = kubelet.check(found)
    assert (problem.severity, problem.path) == ("Error", "/var/lib/kubelet/config.yaml")
    assert error in problem.message


def test_a_second_config_file_is_reported_and_not_merged(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).kubelet_config(TUNED)
    tree.kubelet_config("cpuManagerPolicy: none\n", "/etc/kubernetes/kubelet-config.yaml")

    found = _probe(tree)

    assert found.cpu_manager_policy == "static"
    assert found.other_config_paths == ["/etc/kubernetes/kubelet-config.yaml"]
    [info] = kubelet.check(found)
    assert info.path == "/etc/kubernetes/kubelet-config.yaml"


def test_odd_values_are_noted_with_the_file(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).kubelet_config(
        "cpuManagerPolicy: 3\nreservedMemory:\n  - {numaNode: 0}\n")
    fs = tree.fs()

    found = kubelet.probe(fs, fs.processes())

    assert found.cpu_manager_policy is None
    assert found.reserved_memory == []
    assert [i.path for i in fs.take_issues()] == ["/var/lib/kubelet/config.yaml"] * 2


def test_the_running_kubelet_names_its_files_and_its_flags_override_them(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).kubelet_config(TUNED, "/etc/kvt/kubelet.yaml")
    tree.kubelet_config("kind: KubeletConfiguration\ncpuManagerPolicy: none\n")  # not named
    tree.kubelet_config("kubeReserved: {cpu: 200m}\ntopologyManagerScope: container\n",
                        "/etc/kvt/conf.d/20-scope.conf")
    tree.kubelet_config("kubeReserved: {memory: 2Gi}\ntopologyManagerScope: pod\n",
                        "/etc/kvt/conf.d/10-reserve.conf")
    tree.kubelet_config("memoryManagerPolicy: None\n", "/etc/kvt/conf.d/README")  # not *.conf
    tree.process(4242, "kubelet", "/usr/bin/kubelet", "--config=/etc/kvt/kubelet.yaml",
                 "--config-dir", "/etc/kvt/conf.d", "--topology-manager-policy", "restricted",
                 "--reserved-memory=0:memory=1Gi;1:memory=2Gi,hugepages-1Gi=1Gi")

    found = _probe(tree)

    assert (found.pid, found.config_path, found.drop_in_dir) == (
        4242, "/etc/kvt/kubelet.yaml", "/etc/kvt/conf.d")
    assert found.drop_in_paths == ["/etc/kvt/conf.d/10-reserve.conf",
                                   "/etc/kvt/conf.d/20-scope.conf"]
    assert found.flags == ["--topology-manager-policy=restricted",
                           "--reserved-memory=0:memory=1Gi;1:memory=2Gi,hugepages-1Gi=1Gi"]
    assert found.cpu_manager_policy == "static"  # the named file, not the usual path
    assert found.kube_reserved_memory == "2Gi"  # maps merge: 20-scope.conf adds cpu only
    assert found.topology_manager_scope == "container"  # the later drop-in wins
    assert found.topology_manager_policy == "restricted"  # the flag beats the file
    assert [(r.numa_node, r.limits) for r in found.reserved_memory] == [
        (0, {"memory": "1Gi"}), (1, {"memory": "2Gi", "hugepages-1Gi": "1Gi"})]
    assert found.origins["topologyManagerScope"] == "/etc/kvt/conf.d/20-scope.conf"
    assert found.origins["topologyManagerPolicy"] == "--topology-manager-policy"
    assert found.origins["cpuManagerPolicy"] == "/etc/kvt/kubelet.yaml"


def test_a_kubelet_of_flags_alone_is_known_and_its_fix_is_a_flag(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).process(
        77, "kubelet", "kubelet", "--kubeconfig=/etc/kubernetes/kubelet.conf",
        "--eviction-hard=memory.available<300Mi,nodefs.available<5%",
        "--system-reserved=cpu=1,memory=1Gi")

    found = _probe(tree)

    assert found.config_path is None and kubelet_report.known(found)
    assert (found.system_reserved_memory, found.eviction_hard_memory) == ("1Gi", "300Mi")
    [warning, _] = kubelet.check(found)
    assert "set --cpu-manager-policy=static on the kubelet's command line (pid 77)" in (
        warning.message)


def test_k3s_passes_kubelet_args_and_its_drop_in_directory(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).kubelet_config(
        "cpuManagerPolicy: static\n",
        "/var/lib/rancher/k3s/agent/etc/kubelet.conf.d/00-k3s-defaults.conf")
    tree.process(9, "k3s-server", "/usr/local/bin/k3s", "server",
                 "--kubelet-arg=cpu-manager-policy-options=full-pcpus-only=true",
                 "--kubelet-arg", "topology-manager-policy=single-numa-node")

    found = _probe(tree)

    assert found.pid == 9 and found.config_path is None
    assert found.drop_in_paths == [
        "/var/lib/rancher/k3s/agent/etc/kubelet.conf.d/00-k3s-defaults.conf"]
    assert found.cpu_manager_policy == "static"
    assert found.cpu_manager_policy_options == {"full-pcpus-only": "true"}
    assert found.topology_manager_policy == "single-numa-node"


def test_k3s_takes_kubelet_args_from_its_config_file_and_drop_ins_before_its_flags(
    tmp_path: Path,
) -> None:
    # k3s's pkg/configfilearg: config.yaml, then config.yaml.d/*.yaml in name order, a later
    # file replacing kubelet-arg unless written kubelet-arg+; the command line's come last.
    tree = HostTree(tmp_path).file("/etc/rancher/k3s/config.yaml", (
        "write-kubeconfig-mode: '0644'\n"
        "kubelet-arg:\n  - cpu-manager-policy=none\n  - reserved-cpus=0-1\n"))
    tree.file("/etc/rancher/k3s/config.yaml.d/10-cpu.yaml",
              "kubelet-arg:\n  - cpu-manager-policy=static\n")
    tree.file("/etc/rancher/k3s/config.yaml.d/20-numa.yml",
              "kubelet-arg+: topology-manager-policy=restricted\n")
    tree.file("/etc/rancher/k3s/config.yaml.d/30-ignored.txt", "kubelet-arg: [junk=1]\n")
    tree.process(9, "k3s-server", "/usr/local/bin/k3s", "server",
                 "--kubelet-arg", "topology-manager-policy=single-numa-node")

    found = _probe(tree)

    assert found.flag_files == [
        "/etc/rancher/k3s/config.yaml", "/etc/rancher/k3s/config.yaml.d/10-cpu.yaml",
        "/etc/rancher/k3s/config.yaml.d/20-numa.yml"]
    assert found.cpu_manager_policy == "static"
    assert found.reserved_system_cpus is None  # 10-cpu.yaml replaced the whole list
    assert found.topology_manager_policy == "single-numa-node"
    assert found.origins == {
        "cpuManagerPolicy": "kubelet-arg in /etc/rancher/k3s/config.yaml.d/10-cpu.yaml",
        "topologyManagerPolicy": "--kubelet-arg",
    }
    read_from = kubelet_report.read_from(found)
    assert "the kubelet-arg entries of /etc/rancher/k3s/config.yaml" in read_from


def test_k3s_reads_the_config_file_its_environment_or_its_flag_names(tmp_path: Path) -> None:
    by_env = HostTree(tmp_path / "env").file(
        "/srv/k3s.yaml", "kubelet-arg: [cpu-manager-policy=static]\n")
    by_env.process(9, "k3s-agent", "/usr/local/bin/k3s", "agent", "-c", "/srv/other.yaml")
    by_env.file("/proc/9/environ", b"HOME=/root\0K3S_CONFIG_FILE=/srv/k3s.yaml\0")
    by_flag = HostTree(tmp_path / "flag").file(
        "/srv/other.yaml", "kubelet-arg: [cpu-manager-policy=static]\n")
    by_flag.process(9, "k3s-agent", "/usr/local/bin/k3s", "agent", "-c", "/srv/other.yaml")

    assert _probe(by_env).flag_files == ["/srv/k3s.yaml"]
    assert _probe(by_flag).flag_files == ["/srv/other.yaml"]
    assert _probe(by_flag).cpu_manager_policy == "static"


def test_a_k3s_setting_is_fixed_where_k3s_was_given_it(tmp_path: Path) -> None:
    in_file = HostTree(tmp_path / "file").file(
        "/etc/rancher/k3s/config.yaml", "kubelet-arg: [cpu-manager-policy=none]\n")
    in_file.process(9, "k3s-server", "/usr/local/bin/k3s", "server")
    on_command_line = HostTree(tmp_path / "flag").process(
        9, "k3s-server", "/usr/local/bin/k3s", "server", "--kubelet-arg=cpu-manager-policy=none")

    [warning, _] = kubelet.check(_probe(in_file))
    [flag_warning, _] = kubelet.check(_probe(on_command_line))

    assert ("change its kubelet-arg entry to cpu-manager-policy=static in "
            "/etc/rancher/k3s/config.yaml and restart k3s") in warning.message
    assert ("set --kubelet-arg=cpu-manager-policy=static on the command line of k3s (pid 9)"
            in flag_warning.message)


def test_a_k3s_config_file_that_is_not_a_mapping_is_an_error_naming_it(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).file("/etc/rancher/k3s/config.yaml", "- kubelet-arg\n")
    tree.process(9, "k3s-server", "/usr/local/bin/k3s", "server")

    [problem] = kubelet.check(_probe(tree))

    assert problem.severity == "Error"
    assert "/etc/rancher/k3s/config.yaml is not a k3s configuration mapping" in problem.message


def test_openshifts_kubelet_conf_is_read_and_kubeadms_kubeconfig_of_that_name_is_not(
    tmp_path: Path,
) -> None:
    openshift = HostTree(tmp_path / "ocp").kubelet_config(
        "kind: KubeletConfiguration\ncpuManagerPolicy: static\n", "/etc/kubernetes/kubelet.conf")
    kubeadm = HostTree(tmp_path / "kubeadm").kubelet_config(
        "apiVersion: v1\nkind: Config\nclusters: []\n", "/etc/kubernetes/kubelet.conf")

    assert _probe(openshift).config_path == "/etc/kubernetes/kubelet.conf"
    assert _probe(openshift).cpu_manager_policy == "static"
    assert _probe(kubeadm).config_path is None


def test_a_broken_drop_in_is_an_error_naming_it(tmp_path: Path) -> None:
    tree = HostTree(tmp_path).kubelet_config(TUNED)
    tree.kubelet_config("[", "/var/lib/rancher/rke2/agent/etc/kubelet.conf.d/50-x.conf")

    [problem] = kubelet.check(_probe(tree))

    assert problem.severity == "Error"
    assert "/var/lib/rancher/rke2/agent/etc/kubelet.conf.d/50-x.conf is invalid YAML" in (
        problem.message)


def test_a_kubelet_with_more_flags_than_the_report_lists_still_reads_them_all(
    tmp_path: Path,
) -> None:
    flags = [f"--reserved-memory={node}:memory=1Gi" for node in range(40)]
    tree = HostTree(tmp_path).process(8, "kubelet", "kubelet", *flags)

    found = _probe(tree)

    assert len(found.flags) == kubelet.MAX_LISTED
    assert len(found.reserved_memory) == 40
