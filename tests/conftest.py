"""The API tier's cluster: one real control plane per test session, or an existing cluster.

Why: API code is tested against a real kube-apiserver (docs: ../shared/design/testing.md), never
only against mocks. By default a local etcd + kube-apiserver + kube-controller-manager is started
once per session (`kvtune_cli.localcluster`); with `KVTUNE_TEST_KUBECONFIG=<path>` the same tests
run against that cluster instead (kind on a laptop, a user's CI) and nothing is started.

Every test that uses `cluster` (directly or through `api_client`, `kubevirt_crds`, ...) is marked
`apiserver` automatically, so `-m "not apiserver"` runs the pure tiers alone. The tier is never
skipped silently: when the control plane cannot be built or started, its tests fail with the
reason and the remedy.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest
import yaml
from deploy.kubectl import Kubectl
from kubernetes import client
from kvtune_cli.localcluster import ControlPlaneError, LocalCluster, control_plane_bin_dir
from support import kubevirt
from support.cluster import ClusterAccess, apply_crds, fresh_namespace
from support.kubevirt_oracle import Oracle, running_oracle

REPO_ROOT = Path(__file__).resolve().parents[1]
EXISTING_KUBECONFIG_ENV = "KVTUNE_TEST_KUBECONFIG"
_BIN_DIR = pytest.StashKey[Path | ControlPlaneError]()


def _uses_cluster(item: pytest.Item) -> bool:
    return "cluster" in getattr(item, "fixturenames", ())


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects, so `-m "not apiserver"` sees the marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _uses_cluster(item):
            item.add_marker(pytest.mark.apiserver)


def pytest_collection_finish(session: pytest.Session) -> None:
    # The binaries are built (or found cached) here, before any test runs, because a cold build
    # takes minutes: inside a test it would count against pytest-timeout, and its progress would
    # be captured instead of shown. A failure is kept and raised by the `cluster` fixture, so that
    # every API test fails with it rather than pytest crashing.
    selected = any(_uses_cluster(item) for item in session.items)
    if session.config.option.collectonly or os.environ.get(EXISTING_KUBECONFIG_ENV) or not selected:
        return
    capture = session.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        try:
            session.config.stash[_BIN_DIR] = control_plane_bin_dir(REPO_ROOT)
        except ControlPlaneError as e:
            session.config.stash[_BIN_DIR] = e


def _existing_cluster(kubeconfig: Path) -> ClusterAccess:
    if not kubeconfig.is_file():
        raise FileNotFoundError(
            f"${EXISTING_KUBECONFIG_ENV}={kubeconfig} is not a file; point it at the kubeconfig "
            "of a reachable cluster, or unset it to start a local control plane."
        )
    api = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
    server = api.configuration.host
    api.close()
    return ClusterAccess(kubeconfig, server, token=None, ca_file=None, local=False)


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[ClusterAccess]:
    """The session's cluster: started locally, or the one `$KVTUNE_TEST_KUBECONFIG` names."""
    existing = os.environ.get(EXISTING_KUBECONFIG_ENV)
    if existing:
        yield _existing_cluster(Path(existing))
        return
    bin_dir = request.config.stash.get(_BIN_DIR, None)
    if bin_dir is None:  # requested dynamically, so collection did not see it coming
        bin_dir = control_plane_bin_dir(REPO_ROOT)
    if isinstance(bin_dir, ControlPlaneError):
        raise bin_dir
    with LocalCluster.start(bin_dir) as local:
        yield ClusterAccess(local.kubeconfig, local.server, local.token, local.ca_file, local=True)


@pytest.fixture(scope="session")
def api_client(cluster: ClusterAccess) -> Iterator[client.ApiClient]:
    """An admin client for the session's cluster."""
    api = kubernetes.config.new_client_from_config(config_file=str(cluster.kubeconfig))
    yield api
    api.close()


@pytest.fixture
def namespace(api_client: client.ApiClient) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (without waiting for it to go)."""
    with fresh_namespace(api_client, "kvtune-test") as name:
        yield name


@pytest.fixture(scope="session")
def kubevirt_crds(api_client: client.ApiClient) -> list[str]:
    """VirtualMachineInstance and VirtualMachine CRDs with KubeVirt's real schema, Established.

    On an existing cluster that runs KubeVirt, its own CRDs are kept."""
    return apply_crds(api_client, kubevirt.kubevirt_crds(), owned_label=kubevirt.MANAGED_BY_LABEL)


@pytest.fixture(scope="session")
def kvtune_crds(api_client: client.ApiClient) -> list[str]:
    """kvtune's generated CRDs (`crds/*.yaml`), created or replaced, Established."""
    paths = sorted((REPO_ROOT / "crds").glob("*.yaml"))
    if not paths:
        raise FileNotFoundError(f"no CRDs in {REPO_ROOT / 'crds'}; run `kvtune crds` first.")
    return apply_crds(api_client, [yaml.safe_load(p.read_text()) for p in paths])


@pytest.fixture(scope="session")
def kubectl_binary() -> Kubectl:
    """kubectl without a cluster, the one built with the control plane (its version matches the
    apiserver's): enough to render the kustomizations."""
    return Kubectl(control_plane_bin_dir(REPO_ROOT) / "kubectl")


@pytest.fixture(scope="session")
def kubectl(kubectl_binary: Kubectl, cluster: ClusterAccess) -> Kubectl:
    """kubectl as the session's admin."""
    return Kubectl(kubectl_binary.binary, cluster.kubeconfig)


@pytest.fixture(scope="session")
def kubevirt_oracle() -> Iterator[Oracle]:
    """KubeVirt's own defaulting, VMI admitter and overhead code (hack/kubevirt-oracle), one
    process for the session. Built by `make setup`; never skipped: a failed build fails the tests
    that judge the VMI shaping, with the build's output."""
    with running_oracle() as oracle:
        yield oracle
