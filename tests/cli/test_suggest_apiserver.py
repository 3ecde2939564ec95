"""`kvtune profile suggest` against the real kube-apiserver: the YAML it prints for our host
trees is accepted by the CRD's schema and CEL rules as it is, and `--from-cluster` reads the
hosts from the node states their agents reported."""

from __future__ import annotations

import typing as t
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kvtune_agent.features.ksm import KSM_HANDLER_ANNOTATION
from kvtune_api.v1alpha1.host import HostReport
from kvtune_cli.hosts import HostInputError, from_cluster
from kvtune_cli.main import main
from kvtune_cli.suggest import Options, suggest
from kvtune_cli.suggest_yaml import render
from kvtune_cli.suggestion import VmShape
from support.cluster import ClusterAccess
from support.hosttree import HostTree, intel_two_socket

from .hosts import TREES, probed, static_kubelet

GROUP, VERSION = "kvtune.io", "v1alpha1"

pytestmark = [pytest.mark.apiserver, pytest.mark.usefixtures("kvtune_crds")]


@pytest.mark.parametrize("kubelet", ["no kubelet found", "static kubelet"])
@pytest.mark.parametrize("tree", TREES.values(), ids=TREES.keys())
def test_the_printed_profile_is_accepted_by_the_apiserver_as_it_is(
    api_client: client.ApiClient, tmp_path: Path, tree: t.Callable[[Path], HostTree],
    kubelet: str,
) -> None:
    built = tree(tmp_path)
    if kubelet == "static kubelet":
        static_kubelet(built)
    suggestion = suggest([probed(built, "host", node="node-1")], Options(
        name=f"t-{uuid.uuid4().hex[:8]}", vm=VmShape.parse("2cpu/4Gi"), vms_per_node=4))
    body = yaml.safe_load(render(suggestion, ["a header"]))

    created = client.CustomObjectsApi(api_client).create_cluster_custom_object(
        GROUP, VERSION, "hypervisorprofiles", body, dry_run="All")

    assert created["spec"]["mode"] == "Audit"
    assert created["spec"]["nodeSelector"] == body["spec"]["nodeSelector"]


@pytest.fixture
def reported(api_client: client.ApiClient, tmp_path: Path) -> Iterator[dict[str, HostReport]]:
    """Two nodes whose agents reported their hosts (one whose KSM KubeVirt's handler turned
    on), and a third that has not reported yet."""
    core, custom = client.CoreV1Api(api_client), client.CustomObjectsApi(api_client)
    suffix = uuid.uuid4().hex[:6]
    hosts = {f"a-{suffix}": probed(intel_two_socket(tmp_path / "a"), "a").report,
             f"b-{suffix}": probed(intel_two_socket(tmp_path / "b"), "b").report,
             f"c-{suffix}": None}
    for name, report in hosts.items():
        annotations = {KSM_HANDLER_ANNOTATION: "true"} if name.startswith("b") else {}
        # Node a's kubelet was given another hostname (--hostname-override) than its name.
        labels = {"kubernetes.io/hostname": f"host-{name}"} if name.startswith("a") else {}
        core.create_node({"metadata": {"name": name, "annotations": annotations,
                                       "labels": labels}})
        custom.create_cluster_custom_object(GROUP, VERSION, "hypervisornodestates", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "HypervisorNodeState",
            "metadata": {"name": name},
            "spec": {"nodeName": name, "profile": {"name": "p", "generation": 1}}})
        if report is not None:
            custom.patch_cluster_custom_object_status(
                GROUP, VERSION, "hypervisornodestates", name,
                {"status": {"host": report.model_dump(mode="json", exclude_none=True)}})
    yield {name: report for name, report in hosts.items() if report is not None}
    for name in hosts:
        custom.delete_cluster_custom_object(GROUP, VERSION, "hypervisornodestates", name)
        core.delete_node(name)


def test_the_hosts_are_read_from_the_node_states_of_a_cluster(
    api_client: client.ApiClient, reported: dict[str, HostReport],
) -> None:
    hosts = from_cluster(api_client, sorted(reported))

    assert {h.node: h.report for h in hosts} == reported
    suggestion = suggest(hosts, Options())
    # Their hostname labels select the nodes (node b has none: its name); node b's annotation
    # (read from its Node) keeps KSM unmanaged.
    a, b = sorted(reported)
    assert suggestion.manifest["spec"]["nodeSelector"]["matchExpressions"][0]["values"] == [
        b, f"host-{a}"]
    assert suggestion.manifest["spec"]["memory"]["ksm"] == "Unmanaged"


def test_a_node_that_has_not_reported_its_host_is_named(
    api_client: client.ApiClient, reported: dict[str, HostReport],
) -> None:
    silent = next(iter(reported)).replace("a-", "c-")

    with pytest.raises(HostInputError, match=f"node {silent} has not reported its host yet"):
        from_cluster(api_client, [*reported, silent])
    with pytest.raises(HostInputError, match="the cluster has no HypervisorNodeState for nope"):
        from_cluster(api_client, ["nope"])


def test_the_command_reads_the_cluster_of_its_kubeconfig(
    cluster: ClusterAccess, reported: dict[str, HostReport], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)  # restored after: the command sets it
    nodes = [arg for name in sorted(reported) for arg in ("--node", name)]

    code = main(["profile", "suggest", "--from-cluster", "--kubeconfig",
                 str(cluster.kubeconfig), *nodes])

    out = capsys.readouterr()
    assert code == 0, out.err
    assert "for: node a-" in out.out.splitlines()[0]
    assert yaml.safe_load(out.out)["kind"] == "HypervisorProfile"
