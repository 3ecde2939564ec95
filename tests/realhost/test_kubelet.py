"""The real kubelet takes the configuration kvtune renders for this machine, and refuses the same
configuration with reservedMemory one KiB off: its memory manager's own validation
(validateReservedMemory, against this machine's NUMA nodes as cAdvisor reads them) is the judge
of the arithmetic in features/kubelet/config.py, not our reading of it.

The kubelet (hack/build-node.sh) runs standalone against hack/fake-cri, which answers only what a
kubelet asks before it builds its CPU, memory and topology managers. It is stopped as soon as it
has gone past them ("Container runtime initialized" is logged after the container manager is
built), before it starts pods or creates cgroups. Its root and certificate directories are
temporary (and unmounted: the kubelet bind-mounts its root directory onto itself);
/var/lib/kubelet/device-plugins, which the kubelet always creates, is removed when the test
created it, and the test fails if a mount or a kubepods cgroup is left.
"""

from __future__ import annotations

import glob
import shutil
import subprocess
import time
import typing as t
from collections.abc import Iterator
from pathlib import Path

import pytest
from kvtune_agent.features.kubelet import config
from kvtune_agent.features.kubelet import drop_in as feature
from kvtune_agent.features.kubelet import probe as kubelet_probe
from kvtune_agent.features.numa import probe as numa
from kvtune_agent.host.hostfs import HostFS
from kvtune_api.v1alpha1.profile import KubeletSettings
from support.hosttree import HostTree
from support.realhost import REALHOST

pytestmark = REALHOST

REPO = Path(__file__).resolve().parents[2]
DROP_INS = "/etc/kubernetes/kubelet.conf.d"
#: What lets a kubelet run standalone here (cgroup v1, swap, no API server).
STANDALONE = """\
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
authentication: {webhook: {enabled: false}, anonymous: {enabled: true}}
authorization: {mode: AlwaysAllow}
"""
PAST_THE_MANAGERS = "Container runtime initialized"
#: Paths outside its root directory that a kubelet creates whatever it is told.
KUBELET_LEFTOVERS = ("/var/lib/kubelet", "/var/log/pods")


def _built(script: str) -> str:
    done = subprocess.run(["bash", str(REPO / "hack" / script)], capture_output=True, text=True,
                          timeout=1800, check=False)
    assert done.returncode == 0, f"hack/{script} failed (run `make setup`):\n{done.stderr}"
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def kubelet_binary() -> Path:
    return Path(_built("build-node.sh")) / "kubelet"


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[str]:
    socket = tmp_path / "cri.sock"
    process = subprocess.Popen([_built("build-fake-cri.sh"), str(socket)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not socket.is_socket():
            assert process.poll() is None and time.monotonic() < deadline, "fake-cri did not start"
            time.sleep(0.05)
        yield f"unix://{socket}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def _mounts() -> set[str]:
    return {line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()}


@pytest.fixture
def host_kept(tmp_path: Path) -> Iterator[None]:
    """What the kubelet leaves is taken away: the paths it creates outside its directories, and
    the bind mount it makes of its root directory (to make it shared); no cgroup may appear."""
    existed = {path: Path(path).exists() for path in KUBELET_LEFTOVERS}
    cgroups = set(glob.glob("/sys/fs/cgroup/**/kubepods*", recursive=True))
    mounts = _mounts()
    yield
    for mount in sorted(_mounts() - mounts, reverse=True):
        if mount.startswith(str(tmp_path)):
            subprocess.run(["umount", "-l", mount], check=False, timeout=30)
    for path, there in existed.items():
        if not there:
            shutil.rmtree(path, ignore_errors=True)
    assert _mounts() - mounts == set()
    assert set(glob.glob("/sys/fs/cgroup/**/kubepods*", recursive=True)) == cgroups


def _run(kubelet: Path, tree: Path, tmp_path: Path, flags: tuple[str, ...]) -> tuple[bool, str]:
    """Start the kubelet on the tree's configuration; (went past its managers, its log)."""
    log_path = tmp_path / "kubelet.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [str(kubelet), f"--config={tree}/var/lib/kubelet/config.yaml",
             f"--config-dir={tree}{DROP_INS}", f"--root-dir={tmp_path}/root",
             f"--cert-dir={tmp_path}/pki", "--hostname-override=kvtune-test", *flags],
            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if PAST_THE_MANAGERS in log_path.read_text():
                return True, log_path.read_text()
            if process.poll() is not None:
                return False, log_path.read_text()
            time.sleep(0.05)
        pytest.fail(f"the kubelet neither went past its managers nor exited in 60 s:\n"
                    f"{log_path.read_text()[-3000:]}")
    finally:
        process.kill()
        process.wait(timeout=10)


def _rendered(tree: HostTree, flags: tuple[str, ...], off_by: int = 0) -> str:
    """The drop-in kvtune renders for this machine from the tree's kubelet configuration;
    `off_by` bytes taken from the first reservedMemory entry (a control)."""
    tree.process(77, "kubelet", "/usr/bin/kubelet", "--config=/var/lib/kubelet/config.yaml",
                 f"--config-dir={DROP_INS}", *flags)
    fs = tree.fs()
    report = kubelet_probe.probe(fs, fs.processes())
    nodes = numa.probe(HostFS(Path("/"))).nodes
    want = config.wanted(KubeletSettings(), "single-numa-node", report, nodes, frozenset({0}))
    if off_by:
        first = want["reservedMemory"][0]["limits"]
        first["memory"] = str(config._bytes(first["memory"], "test") - off_by)
    rendering = config.render(want, report, "kubelet", "realhost")
    assert rendering.form == "DropIn" and rendering.path is not None
    tree.file(rendering.path, rendering.content)
    return rendering.path


CASES: list[t.Any] = [
    pytest.param("systemReserved: {memory: 500Mi}\nkubeReserved: {memory: 300Mi}\n"
                 "evictionHard: {memory.available: 100Mi}\n", (), id="system + kube + eviction"),
    pytest.param("systemReserved: {memory: 1Gi}\n", (),
                 id="no evictionHard: the default of a kubelet started with --config"),
    pytest.param("kubeReserved: {memory: 1Gi}\nevictionHard: {memory.available: 500Mi}\n",
                 ("--eviction-hard=nodefs.available<5%",),
                 id="a flag without memory.available replaces the file's threshold"),
]


@pytest.mark.usefixtures("host_kept")
@pytest.mark.parametrize(("reserves", "flags"), CASES)
def test_the_real_kubelet_takes_the_rendered_managers_and_refuses_them_one_kib_off(
    tmp_path: Path, kubelet_binary: Path, runtime: str, reserves: str, flags: tuple[str, ...]
) -> None:
    tree = HostTree(tmp_path / "host").kubelet_config(
        f"{STANDALONE}containerRuntimeEndpoint: {runtime}\n{reserves}")
    path = _rendered(tree, flags)
    taken, log = _run(kubelet_binary, tree.root, tmp_path, flags)
    assert taken, f"the kubelet refused kvtune's drop-in: {feature.kubelet_error(log)}"
    assert '"Reserved CPUs not available for exclusive assignment" reservedSize=1' in log

    _rendered(tree, flags, off_by=1024)
    shutil.rmtree(tmp_path / "root", ignore_errors=True)
    taken, log = _run(kubelet_binary, tree.root, tmp_path, flags)

    assert not taken, f"the kubelet took reservedMemory 1Ki short in {path}"
    error = feature.kubelet_error(log)
    assert error is not None and "is not equal to the value" in error
    assert "determined by Node Allocatable feature" in error
