"""A real, throwaway Kubernetes control plane on loopback: etcd, kube-apiserver and
kube-controller-manager, with fresh PKI, for the API-tier tests and `kvtune demo`.

Why not kind or setup-envtest: they download images or binaries, which these machines cannot
reach (see `hack/build-control-plane.sh`). The binaries are built from Go modules instead, and this
module runs them the way controller-runtime's envtest does, plus the controller-manager so that
namespaces finish deleting, ownerReference cascades are garbage-collected and ServiceAccounts exist.
There is no scheduler and no kubelet: Pods are stored but never run, unless the control plane is
started for nodes (`for_nodes=<address>`): then it serves on a host address a kubelet reaches, with
the authorization, admission and controllers a real cluster has, and `kvtune_cli.nodecluster`
adds a node to it.

Everything lives in one temporary directory (PKI, etcd data, kubeconfigs, one log file per process)
that `LocalCluster.stop()` removes after terminating the processes. Use it as a context manager so
that stop also runs when a test fails or on Ctrl-C:

    with LocalCluster.start(control_plane_bin_dir(repo_root)) as cluster:
        kubernetes.config.new_client_from_config(str(cluster.kubeconfig))
"""

from __future__ import annotations

import base64
import collections
import ctypes
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import yaml
from kvtune_operator.webhook.pki import (
    CertificateAuthority,
    new_private_key,
    private_key_pem,
    public_key_pem,
)

BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager")
BIN_DIR_ENV = "KVTUNE_CONTROL_PLANE_BIN"

# The controllers that make a bare apiserver behave like a cluster for API tests: namespaces that
# finish deleting, ownerReference cascades, and the `default` ServiceAccount in every namespace.
CONTROLLERS = (
    "namespace-controller",
    "garbage-collector-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
)
#: The Service CIDR; its first address is the `kubernetes` Service (in the serving cert for nodes).
SERVICE_CIDR = "10.0.0.0/24"
KUBERNETES_SERVICE_IP = "10.0.0.1"
_KUBERNETES_SERVICE_NAMES = (
    "kubernetes", "kubernetes.default", "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
ADMIN_USER = "kvtune-admin"
_POLL_INTERVAL = 0.1
_LOG_TAIL_LINES = 25


class ControlPlaneError(RuntimeError):
    """The local control plane could not be built, started or reached."""


def control_plane_bin_dir(repo_root: Path) -> Path:
    """The directory holding etcd, kube-apiserver and kube-controller-manager.

    `$KVTUNE_CONTROL_PLANE_BIN` wins when set; otherwise `hack/build-control-plane.sh` builds the
    binaries (or finds them cached, in well under a second) and prints their directory as its last
    stdout line. Its progress is copied to stderr, because a cold build takes minutes.
    """
    from_env = os.environ.get(BIN_DIR_ENV)
    if from_env:
        return _checked_bin_dir(Path(from_env), f"${BIN_DIR_ENV}")
    script = repo_root / "hack" / "build-control-plane.sh"
    remedy = (
        f"Fix the build (it needs Go and the Go module proxy), or set ${BIN_DIR_ENV} to a "
        f"directory holding {', '.join(BINARIES)}."
    )
    return _checked_bin_dir(Path(run_build_script(script, remedy)[-1]), str(script))


def run_build_script(script: Path, remedy: str) -> list[str]:
    """Runs one of hack/'s build scripts, copying its progress (stderr) to stderr, because a cold
    build takes minutes; returns its stdout lines (what it built). Raises ControlPlaneError with
    the last lines of its output and `remedy` when it fails or prints nothing."""
    # stderr is read line by line (to echo progress and keep a tail for the error); stdout is read
    # afterwards, which cannot deadlock because the scripts print only a few lines there.
    proc = subprocess.Popen(
        ["bash", str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stderr is not None
    tail: collections.deque[str] = collections.deque(maxlen=_LOG_TAIL_LINES)
    for line in proc.stderr:
        sys.stderr.write(line)
        tail.append(line)
    stdout = proc.stdout.read()
    if proc.wait() != 0 or not stdout.strip():
        raise ControlPlaneError(
            f"{script} failed with exit code {proc.returncode}; last output lines:\n"
            + "".join(tail)
            + remedy
        )
    return stdout.strip().splitlines()


def _checked_bin_dir(path: Path, source: str) -> Path:
    missing = [b for b in BINARIES if not os.access(path / b, os.X_OK)]
    if missing:
        raise ControlPlaneError(
            f"{path} (from {source}) lacks executable {', '.join(missing)}; "
            f"run hack/build-control-plane.sh or point ${BIN_DIR_ENV} at a complete directory."
        )
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    # The port is free when we look; another process could take it before the server binds it.
    # The server then exits with "address already in use", which start() reports with its log.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stop_process(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds; returns once it is
    gone. Safe on a process that has already exited."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _die_with_parent() -> None:
    # Runs in the child between fork and exec. If the test process is killed outright (SIGKILL,
    # a timeout's os._exit), its context managers never run; PR_SET_PDEATHSIG makes the kernel
    # kill the control plane too instead of leaving it running. Caveat: "parent" is the forking
    # thread, so start the cluster from a thread that outlives it (the main thread in pytest).
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


@dataclass
class ManagedProcess:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def log_tail(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError as e:
            return f"(log {self.log} unreadable: {e})"
        return "\n".join(lines[-_LOG_TAIL_LINES:])

    def failure(self, what: str) -> ControlPlaneError:
        # The tail goes into the message because the log file goes with the cluster's directory.
        return ControlPlaneError(f"{self.name} {what}; last lines of its log:\n{self.log_tail()}")


def spawn_logged(binary: Path, args: Sequence[str], workdir: Path) -> ManagedProcess:
    """Starts `binary` with its output in `<workdir>/<name>.log`, in a session of its own and
    killed with its parent (see _die_with_parent)."""
    name = binary.name
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            [str(binary), *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            # Own session: Ctrl-C reaches only the test process, whose teardown then stops the
            # control plane in order instead of every process dying at once mid-test.
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    return ManagedProcess(name, popen, log)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _kubeconfig(server: str, ca_pem: bytes, user: dict[str, str], name: str) -> str:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": name,
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)},
            }
        ],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    }
    return yaml.safe_dump(config, sort_keys=False)


class StopsOnExit:
    """The context-manager protocol for a started cluster: `with X.start(...) as x:` stops it
    (`stop()`) when the block ends, whatever the outcome."""

    def stop(self, timeout: float = 10.0) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass
class LocalCluster(StopsOnExit):
    """A running local control plane; create it with `LocalCluster.start(...)`."""

    workdir: Path
    """Holds the PKI, etcd's data, the kubeconfigs and one log per process (`<binary>.log`)."""
    server: str
    """https://127.0.0.1:<port> of kube-apiserver."""
    token: str
    """Bearer token of an admin user in `system:masters`."""
    ca_file: Path
    """PEM of the CA that signed the apiserver's serving certificate."""
    kubeconfig: Path
    """Admin kubeconfig with the CA and token embedded, usable after copying elsewhere."""
    for_nodes: str | None = None
    """The host address kubelets reach the apiserver at, or None for an API-only cluster."""
    _ca: CertificateAuthority | None = None
    _processes: list[ManagedProcess] = field(default_factory=list)

    @classmethod
    def start(
        cls,
        bin_dir: Path,
        *,
        ready_timeout: float = 60.0,
        stop_timeout: float = 10.0,
        tmp_parent: Path | None = None,
        for_nodes: str | None = None,
    ) -> LocalCluster:
        """Starts etcd, kube-apiserver and kube-controller-manager and waits until they work.

        `for_nodes`: a host IPv4 address for the apiserver to serve on, so that kubelets and pods
        reach it (`kvtune_cli.nodecluster`); it then authorizes nodes (Node,RBAC with
        NodeRestriction), keeps the `kubernetes` Service's endpoints and runs every default
        controller, each with its own ServiceAccount, as a real cluster does.

        `ready_timeout` (seconds) bounds the wait for each process; `stop_timeout` (seconds) is how
        long a failed start waits for processes to exit on SIGTERM before killing them.
        `tmp_parent` is where the working directory is created (default: the system temp dir).
        On any failure, including Ctrl-C, what was started is stopped before the error propagates.
        """
        workdir = Path(tempfile.mkdtemp(prefix="kvtune-cluster-", dir=tmp_parent))
        port = free_port()
        cluster = cls(
            workdir=workdir,
            server=f"https://{for_nodes or '127.0.0.1'}:{port}",
            token=secrets.token_urlsafe(32),
            ca_file=workdir / "ca.crt",
            kubeconfig=workdir / "admin.kubeconfig",
            for_nodes=for_nodes,
        )
        try:
            cluster._launch(bin_dir, port, ready_timeout)
        except BaseException:
            cluster.stop(stop_timeout)
            raise
        return cluster

    def client_kubeconfig(self, user: str, groups: list[str], stem: str) -> Path:
        """Writes `<stem>.kubeconfig` in the working directory: a client certificate for `user`
        in `groups` (CN and O, as kube-apiserver reads them), issued by the cluster's CA."""
        assert self._ca is not None, "the CA exists once the cluster's credentials are written"
        pair = self._ca.issue_client(user, groups)
        path = self.workdir / f"{stem}.kubeconfig"
        path.write_text(
            _kubeconfig(
                self.server,
                self._ca.cert_pem,
                {
                    "client-certificate-data": _b64(pair.cert_pem),
                    "client-key-data": _b64(pair.key_pem),
                },
                stem,
            )
        )
        return path

    def _write_credentials(self) -> tuple[Path, Path]:
        """Writes the PKI, token file and kubeconfigs; returns the serving cert and key paths."""
        d = self.workdir
        ca = self._ca = CertificateAuthority.create("kvtune-local-ca")
        self.ca_file.write_bytes(ca.cert_pem)
        hosts = ["127.0.0.1", "localhost"]
        if self.for_nodes is not None:
            # Pods reach the apiserver at the `kubernetes` Service, kubelets at the host address.
            hosts += [self.for_nodes, KUBERNETES_SERVICE_IP, *_KUBERNETES_SERVICE_NAMES]
        serving_cert, serving_key = ca.issue_serving("kube-apiserver", hosts).write(
            d, "apiserver"
        )
        sa_key = new_private_key()
        (d / "sa.key").write_bytes(private_key_pem(sa_key))
        (d / "sa.pub").write_bytes(public_key_pem(sa_key))
        # CSV: token,user,uid,"groups". A static token keeps the admin kubeconfig to one line and
        # works with any HTTP client; system:masters bypasses RBAC, which only admins should.
        (d / "tokens.csv").write_text(f'{self.token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n')
        self.kubeconfig.write_text(
            _kubeconfig(self.server, ca.cert_pem, {"token": self.token}, "kvtune-local")
        )
        # The controller-manager authenticates with a client certificate, which is what makes the
        # apiserver's --client-ca-file part of every run rather than an untested flag. It is in
        # system:masters because, without per-controller ServiceAccounts, the garbage collector
        # and namespace controller must be able to delete any kind of object.
        self.client_kubeconfig(
            "system:kube-controller-manager", ["system:masters"], "controller-manager"
        )
        if self.for_nodes is not None:
            # The apiserver's identity towards kubelets (logs, exec), authorized by their webhook.
            ca.issue_client("kube-apiserver-kubelet-client", ["system:masters"]).write(
                d, "apiserver-kubelet-client"
            )
        return serving_cert, serving_key

    def _launch(self, bin_dir: Path, apiserver_port: int, timeout: float) -> None:
        d = self.workdir
        serving_cert, serving_key = self._write_credentials()
        etcd_url = f"http://127.0.0.1:{free_port()}"
        peer_url = f"http://127.0.0.1:{free_port()}"
        etcd = self._spawn(
            bin_dir / "etcd",
            "--name=kvtune",
            f"--data-dir={d / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=kvtune={peer_url}",
            # The data is thrown away with the cluster; fsync would only slow every write.
            "--unsafe-no-fsync",
        )
        # The apiserver starts alongside etcd (it retries the connection), which saves a second.
        address = self.for_nodes or "127.0.0.1"
        apiserver = self._spawn(
            bin_dir / "kube-apiserver",
            f"--etcd-servers={etcd_url}",
            f"--bind-address={address}",
            f"--advertise-address={address}",
            f"--secure-port={apiserver_port}",
            f"--cert-dir={d}",
            f"--tls-cert-file={serving_cert}",
            f"--tls-private-key-file={serving_key}",
            f"--client-ca-file={self.ca_file}",
            f"--token-auth-file={d / 'tokens.csv'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={d / 'sa.pub'}",
            f"--service-account-signing-key-file={d / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",
            *self._apiserver_mode_flags(),
        )
        self.wait_ready(
            etcd, f"{etcd_url}/health", timeout, lambda body: b'"health":"true"' in body
        )
        self.wait_ready(apiserver, f"{self.server}/readyz", timeout)
        controller_manager = self._spawn(
            bin_dir / "kube-controller-manager",
            f"--kubeconfig={d / 'controller-manager.kubeconfig'}",
            *self._controller_manager_mode_flags(),
            # One controller-manager per throwaway cluster: a lease would only add a delay.
            "--leader-elect=false",
            f"--service-account-private-key-file={d / 'sa.key'}",
            f"--root-ca-file={self.ca_file}",
            # Nothing scrapes its metrics or health; serving them would need one more free port.
            "--secure-port=0",
        )
        # The `default` ServiceAccount appears once the controllers have synced and run, which
        # proves the controller-manager reached the apiserver with working credentials.
        self.wait_ready(
            controller_manager,
            f"{self.server}/api/v1/namespaces/default/serviceaccounts/default",
            timeout,
        )

    def _apiserver_mode_flags(self) -> list[str]:
        if self.for_nodes is None:
            return [
                "--authorization-mode=RBAC",
                # Nothing would answer at the advertised address; keep the kubernetes Service's
                # Endpoints empty rather than pointing at a port that may be reused.
                "--endpoint-reconciler-type=none",
            ]
        d = self.workdir
        return [
            # Kubelets are authorized as nodes and may only write their own Node and its pods.
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            # The node's hostname need not resolve: logs and exec go to its InternalIP.
            "--kubelet-preferred-address-types=InternalIP,Hostname",
            f"--kubelet-client-certificate={d / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={d / 'apiserver-kubelet-client.key'}",
        ]

    def _controller_manager_mode_flags(self) -> list[str]:
        if self.for_nodes is None:
            return [f"--controllers={','.join(CONTROLLERS)}"]
        # Every default controller (DaemonSets, Deployments, Endpoints, node lifecycle...), each
        # acting as its own ServiceAccount, so their RBAC is the real one too.
        return ["--controllers=*", "--use-service-account-credentials"]

    def _spawn(self, binary: Path, *args: str) -> ManagedProcess:
        process = spawn_logged(binary, args, self.workdir)
        self._processes.append(process)
        return process

    def wait_ready(
        self,
        process: ManagedProcess,
        url: str,
        timeout: float,
        ok: Callable[[bytes], bool] = lambda _body: True,
    ) -> None:
        """Polls `url` as the admin until it answers and `ok` accepts the body; raises
        ControlPlaneError with `process`'s log tail if it exits first or `timeout` passes."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.token}"})
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            code = process.popen.poll()
            if code is not None:
                raise process.failure(f"exited with code {code} before becoming ready ({url})")
            try:
                with urllib.request.urlopen(request, timeout=5, context=context) as response:
                    body: bytes = response.read()
                if ok(body):
                    return
                last = f"answered {body[:300]!r}"
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code}: {e.read()[:300]!r}"
            except (OSError, ssl.SSLError) as e:
                last = f"{type(e).__name__}: {e}"
            time.sleep(_POLL_INTERVAL)
        raise process.failure(
            f"did not become ready within {timeout:.0f} s (checked {url}, last: {last})"
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Terminates the processes newest first (SIGTERM, then SIGKILL after `timeout` seconds
        each) and removes the working directory. Safe to call more than once."""
        try:
            # Newest first: kube-apiserver stops in about a second while etcd is up, but keeps
            # retrying etcd until killed if etcd goes first.
            while self._processes:
                stop_process(self._processes.pop().popen, timeout)
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)
