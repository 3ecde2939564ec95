"""A one-node Kubernetes cluster on this machine: the local control plane served on a host
address, plus containerd, a kubelet, kube-proxy and kube-scheduler, so that kvtune is installed
as users install it (its image, `kubectl apply -k`, DaemonSet pods on a real kubelet, pod tokens
the kubelet issues) and not only run as local processes.

Why not kind: kind needs docker and an image registry, neither of which these machines have. The
binaries come from the same Go modules as the control plane (`hack/build-node.sh`), the images
from `hack/build-node-images.sh`, the runtime from Debian (containerd, runc, the CNI plugins).

The node is this machine, so the cluster changes it: a bridge and veths, iptables and ip6tables
rules, mounts, network namespaces, cgroups, a few sysctls (the kubelet's kernel defaults,
ip_forward). `NodeCluster.stop()` puts every one of them back, whatever state the start or the
tests left, and then raises if anything it knows of is still there (`HostSnapshot.leftovers`).
Every process is stopped by its pid: the ones started here by their handle, the containerd shims
and container processes (which outlive containerd) found by our containerd's socket and our
cgroups.

    with NodeCluster.start(bin_dir, images) as cluster:
        subprocess.run(["kubectl", "--kubeconfig", cluster.kubeconfig, "get", "nodes"])
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

from .localcluster import (
    LocalCluster,
    ManagedProcess,
    StopsOnExit,
    free_port,
    run_build_script,
    spawn_logged,
    stop_process,
)

NODE_BINARIES = ("kubelet", "kube-scheduler", "kube-proxy")
#: The Debian packages' programs the node runs or cleans up with.
HOST_TOOLS = ("containerd", "ctr", "runc", "iptables", "ip6tables", "ip", "umount")
CNI_BIN_DIR = Path("/usr/lib/cni")
CNI_PLUGINS = ("bridge", "host-local", "loopback", "portmap")
NODE_NAME = "kvtune-node"
BRIDGE = "kvtune0"
POD_CIDR = "10.244.0.0/24"
#: Places containerd, the CNI plugins and the kubelet write to whatever they are told: removed
#: afterwards when they did not exist before.
FIXED_PATHS = ("/run/containerd", "/var/lib/cni", "/var/log/containers", "/var/log/pods",
               "/var/lib/kubelet", "/etc/cni")
#: Where mounts of this cluster live besides its own directory (pod network namespaces).
NETNS_DIRS = ("/run/netns", "/var/run/netns")
#: Kernel values the node may change: CNI's bridge and kube-proxy (forwarding, bridge netfilter,
#: conntrack) and the kubelet's kernel defaults (protectKernelDefaults: false). Restored by value.
SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/ipv6/conf/all/forwarding",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
    "net/ipv4/conf/all/route_localnet",
    "net/netfilter/nf_conntrack_max",
    "net/netfilter/nf_conntrack_tcp_timeout_established",
    "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
#: iptables chains and rules of this cluster: kube-proxy's, the CNI plugins', our bridge's.
_RULE_MARKS = ("KUBE-", "CNI-", BRIDGE, POD_CIDR)
_CGROUP_ROOT = Path("/sys/fs/cgroup")
_COMMAND_TIMEOUT = 60.0
_Say = Callable[[str], None]


class NodeClusterError(RuntimeError):
    """The node could not be started, or the host could not be put back as it was."""


def why_not_here() -> str | None:
    """Why this machine cannot run a node, or None when it can."""
    if os.geteuid() != 0:
        return "a node needs root (it runs containerd and a kubelet and changes the network)"
    if not os.path.exists("/dev/kvm"):
        return "the real-node tier runs where kvtune's agents would: a host with /dev/kvm"
    try:
        filesystems = Path("/proc/filesystems").read_text()
    except OSError as e:
        return f"/proc/filesystems is unreadable ({e})"
    if "overlay" not in filesystems.split():
        return "containerd's overlayfs snapshotter needs the kernel's overlay filesystem"
    return None


def missing_tools() -> list[str]:
    """The Debian programs and CNI plugins the node needs that are not installed here."""
    missing = [tool for tool in HOST_TOOLS if shutil.which(tool) is None]
    missing += [str(CNI_BIN_DIR / p) for p in CNI_PLUGINS if not (CNI_BIN_DIR / p).exists()]
    return missing


def host_address() -> str:
    """The IPv4 address of the interface holding the default route: kubelets and pods reach the
    apiserver there (loopback would be the pod's own)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        # No packet is sent: connecting a UDP socket only picks the route and source address.
        sock.connect(("203.0.113.1", 9))  # TEST-NET-3: routed by the default route
        address: str = sock.getsockname()[0]
    if address.startswith("127."):
        raise NodeClusterError("no IPv4 route off the host: the node needs a non-loopback address")
    return address


@dataclasses.dataclass(frozen=True)
class Image:
    """An image archive (docker-archive) to import, and the reference it carries."""

    name: str
    reference: str
    archive: Path


def node_bin_dir(repo_root: Path) -> Path:
    """The directory with the control plane's and the node's binaries, built or found cached by
    hack/build-node.sh (progress on stderr)."""
    script = repo_root / "hack" / "build-node.sh"
    return Path(run_build_script(script, "Fix the build; it needs Go and the Go module proxy.")[-1])


def node_images(repo_root: Path) -> list[Image]:
    """pause, the Python base and kvtune's own image, built or found cached by
    hack/build-node-images.sh (progress on stderr)."""
    script = repo_root / "hack" / "build-node-images.sh"
    lines = run_build_script(
        script, "It needs root, buildah and mmdebstrap (`make setup` installs them) and the "
        "Debian mirror and PyPI.")
    images = []
    for line in lines:
        name, reference, archive = line.split()
        # The base is only an input of kvtune's image; the node runs the other two.
        if name != "python":
            images.append(Image(name, reference, Path(archive)))
    return images


def run(*command: str, timeout: float = _COMMAND_TIMEOUT, check: bool = True) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise NodeClusterError(
            f"`{shlex.join(command)}` failed ({done.returncode}): {done.stderr.strip()[-1500:]}")
    return done.stdout


# --- what the node changes on the host ----------------------------------------------------------


def _sysctl(name: str) -> str | None:
    try:
        return Path("/proc/sys", name).read_text().strip()
    except OSError:
        return None


def _mounts() -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        # Field 5 is the mount point, with spaces and the like escaped as octal.
        points.append(line.split()[4].encode().decode("unicode_escape"))
    return points


def _iptables_save(family: str) -> dict[str, list[str]]:
    """Per table, its chain declarations (`:NAME`) and rules (`-A ...`) as iptables-save
    prints them; an empty dict when the family's tool is missing or refuses."""
    try:
        out = run(f"{family}-save", check=False)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    tables: dict[str, list[str]] = {}
    table = ""
    for line in out.splitlines():
        if line.startswith("*"):
            table = line[1:]
            tables[table] = []
        elif line.startswith((":", "-A ")):
            tables[table].append(line)
    return tables


def _ours(line: str) -> bool:
    return any(mark in line for mark in _RULE_MARKS)


def _links() -> set[str]:
    return {link["ifname"] for link in json.loads(run("ip", "-j", "link", "show") or "[]")}


def _cgroup_dirs() -> set[str]:
    found = set()
    for hierarchy in _CGROUP_ROOT.iterdir() if _CGROUP_ROOT.is_dir() else ():
        for name in ("kubepods", "kubepods.slice"):
            if (hierarchy / name).is_dir():
                found.add(str(hierarchy / name))
    return found


@dataclasses.dataclass
class HostSnapshot:
    """What the host looked like before the node started, to put it back and to prove it."""

    sysctls: dict[str, str | None]
    mounts: Counter[str]
    iptables: dict[str, dict[str, list[str]]]
    links: set[str]
    fixed_paths: set[str]
    netns: set[str]
    cgroups: set[str]
    netns_dir: bool

    @classmethod
    def take(cls) -> HostSnapshot:
        return cls(
            sysctls={name: _sysctl(name) for name in SYSCTLS},
            mounts=Counter(_mounts()),
            iptables={family: _iptables_save(family) for family in ("iptables", "ip6tables")},
            links=_links(),
            fixed_paths={p for p in FIXED_PATHS if os.path.lexists(p)},
            netns=_netns_files(),
            cgroups=_cgroup_dirs(),
            netns_dir=os.path.isdir(NETNS_DIRS[0]),
        )

    def leftovers(self, workdir: Path) -> list[str]:
        """Everything the node left that was not there before, described for a person."""
        found = []
        for name, value in self.sysctls.items():
            now = _sysctl(name)
            if now != value:
                found.append(f"sysctl {name} is {now!r}, was {value!r}")
        for point in _new_mounts(self.mounts, workdir):
            found.append(f"mount {point}")
        for family, tables in self.iptables.items():
            for table, lines in _new_rules(tables, _iptables_save(family)).items():
                found += [f"{family} -t {table} {line}" for line in lines]
        found += [f"link {name}" for name in sorted(_links() - self.links)]
        found += [f"path {p}" for p in FIXED_PATHS
                  if p not in self.fixed_paths and os.path.lexists(p)]
        found += [f"network namespace {p}" for p in sorted(_netns_files() - self.netns)]
        found += [f"cgroup {p}" for p in sorted(_cgroup_dirs() - self.cgroups)]
        if not self.netns_dir and os.path.isdir(NETNS_DIRS[0]):
            found.append(f"path {NETNS_DIRS[0]}")
        return found


def _netns_files() -> set[str]:
    found = set()
    for directory in NETNS_DIRS:
        with contextlib.suppress(OSError):
            found |= {os.path.realpath(os.path.join(directory, n)) for n in os.listdir(directory)}
    return found


def _new_mounts(before: Counter[str], workdir: Path) -> list[str]:
    """Mount points that appeared under the node's own places, deepest first."""
    places = (str(workdir), "/run/containerd", "/var/lib/kubelet", *NETNS_DIRS)
    now = Counter(_mounts())
    new = [p for p in (now - before).elements() if p.startswith(places)]
    return sorted(new, key=lambda p: p.count("/"), reverse=True)


def _new_rules(before: dict[str, list[str]], now: dict[str, list[str]]) -> dict[str, list[str]]:
    """Per table, the chain declarations and rules of this cluster that were not there before."""
    new = {}
    for table, lines in now.items():
        added = Counter(lines) - Counter(before.get(table, []))
        ours = [line for line in lines if added[line] > 0 and _ours(line)]
        if ours:
            new[table] = ours
    return new


def _remove_rules(family: str, before: dict[str, list[str]]) -> None:
    """Deletes this cluster's rules from the chains that were there before, then flushes and
    deletes its own chains (which reference each other, hence flush all first)."""
    for table, lines in _new_rules(before, _iptables_save(family)).items():
        chains = [line[1:].split()[0] for line in lines if line.startswith(":")]
        for line in reversed([entry for entry in lines if entry.startswith("-A ")]):
            chain = line.split()[1]
            if chain not in chains:
                run(family, "-w", "-t", table, "-D", *shlex.split(line)[1:], check=False)
        for chain in chains:
            run(family, "-w", "-t", table, "-F", chain, check=False)
        for chain in chains:
            run(family, "-w", "-t", table, "-X", chain, check=False)


def _kill_pids(pids: Sequence[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _shim_pids(containerd_socket: Path) -> list[int]:
    """containerd's shims for this cluster: they outlive containerd, and name its socket."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"containerd-shim-runc-v2") and \
                str(containerd_socket).encode() in argv:
            pids.append(int(entry.name))
    return pids


def _cgroup_pids(roots: set[str]) -> list[int]:
    pids: set[int] = set()
    for root in roots:
        for directory, _dirs, files in os.walk(root):
            if "cgroup.procs" in files:
                with contextlib.suppress(OSError):
                    text = Path(directory, "cgroup.procs").read_text()
                    pids |= {int(p) for p in text.split()}
    return sorted(pids)


def _remove_cgroups(roots: set[str]) -> None:
    for root in roots:
        for directory, _dirs, _files in os.walk(root, topdown=False):
            with contextlib.suppress(OSError):
                os.rmdir(directory)


# --- configuration files ------------------------------------------------------------------------


def _containerd_config(workdir: Path, pause: str) -> str:
    # Everything containerd keeps goes under workdir; the plugins that would write elsewhere
    # (/opt/containerd) or probe filesystems we do not use are off.
    return f"""version = 2
root = "{workdir}/containerd/root"
state = "{workdir}/containerd/state"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "{workdir}/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  # This kind of VM withholds CAP_SYS_RESOURCE from root: without this, runc fails every
  # sandbox with "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{workdir}/cni"
"""


def _cni_config(workdir: Path) -> dict[str, object]:
    return {
        "cniVersion": "1.0.0",
        "name": "kvtune",
        "plugins": [
            {
                "type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": True,
                "hairpinMode": True,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR}]],
                         "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(workdir / "ipam")},
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def _kubelet_config(workdir: Path, ca_file: Path, port: int, healthz: int) -> dict[str, object]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "containerRuntimeEndpoint": f"unix://{workdir}/containerd.sock",
        # containerd runs with cgroupfs too (SystemdCgroup = false); PID 1 is not systemd here.
        "cgroupDriver": "cgroupfs",
        # Kubelets from 1.35 refuse cgroup v1 unless told otherwise; this kind of VM has v1.
        "failCgroupV1": False,
        "failSwapOn": False,
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(ca_file)}},
        "authorization": {"mode": "Webhook"},
        "port": port,
        "healthzPort": healthz,
        "readOnlyPort": 0,
        "podLogsDir": str(workdir / "pod-logs"),
        "resolvConf": "/etc/resolv.conf",
        "serializeImagePulls": False,
        # The disk is shared with other work: evict nothing for its sake.
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                         "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
        "imageGCHighThresholdPercent": 100,
        "maxPods": 30,
    }


def _kube_proxy_config(kubeconfig: Path, metrics: int, healthz: int) -> dict[str, object]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": "iptables",
        "clusterCIDR": POD_CIDR,
        "hostnameOverride": NODE_NAME,
        "metricsBindAddress": f"127.0.0.1:{metrics}",
        "healthzBindAddress": f"127.0.0.1:{healthz}",
        # Node ports on 127.0.0.1 would set route_localnet; nothing here uses them.
        "iptables": {"localhostNodePorts": False},
        # This kind of VM does not let kube-proxy set conntrack's sysctls: zero leaves them be.
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s",
                      "tcpCloseWaitTimeout": "0s"},
    }


# --- the cluster --------------------------------------------------------------------------------


@dataclasses.dataclass
class NodeCluster(StopsOnExit):
    """A running one-node cluster; create it with `NodeCluster.start(...)`."""

    control_plane: LocalCluster
    workdir: Path
    """containerd's root and state, the kubelet's root, CNI and component configs, logs."""
    node_name: str
    node_ip: str
    images: dict[str, Image]
    _before: HostSnapshot
    _processes: list[ManagedProcess] = dataclasses.field(default_factory=list)

    @property
    def kubeconfig(self) -> Path:
        return self.control_plane.kubeconfig

    @property
    def containerd_socket(self) -> Path:
        return self.workdir / "containerd.sock"

    @classmethod
    def start(
        cls,
        bin_dir: Path,
        images: Sequence[Image],
        *,
        ready_timeout: float = 120.0,
        tmp_parent: Path | None = None,
        progress: bool = True,
    ) -> NodeCluster:
        """The control plane, then containerd (with `images` imported), kube-scheduler,
        kube-proxy and a kubelet registered as `NODE_NAME`; returns once the node is Ready.
        On any failure, including Ctrl-C, everything is stopped and the host put back before
        the error propagates."""
        reason = why_not_here()
        if reason is not None:
            raise NodeClusterError(reason)
        missing = missing_tools()
        if missing:
            raise NodeClusterError(f"missing {', '.join(missing)}: run `make setup` (as root)")
        absent = [b for b in NODE_BINARIES if not os.access(bin_dir / b, os.X_OK)]
        if absent:
            raise NodeClusterError(f"{bin_dir} lacks {', '.join(absent)}: run hack/build-node.sh")
        node_ip = host_address()
        before = HostSnapshot.take()
        workdir = Path(tempfile.mkdtemp(prefix="kvtune-node-", dir=tmp_parent))
        say = _progress if progress else (lambda _message: None)
        say(f"starting the control plane on {node_ip}")
        try:
            control_plane = LocalCluster.start(
                bin_dir, for_nodes=node_ip, tmp_parent=tmp_parent, ready_timeout=ready_timeout)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        cluster = cls(control_plane, workdir, NODE_NAME, node_ip,
                      {image.name: image for image in images}, before)
        try:
            cluster._launch(bin_dir, ready_timeout, say)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _spawn(self, binary: Path, *args: str) -> ManagedProcess:
        process = spawn_logged(binary, args, self.workdir)
        self._processes.append(process)
        return process

    def _launch(self, bin_dir: Path, timeout: float, say: _Say) -> None:
        d = self.workdir
        pause = self.images["pause"].reference
        (d / "containerd.toml").write_text(_containerd_config(d, pause))
        (d / "cni").mkdir()
        (d / "cni" / "10-kvtune.conflist").write_text(json.dumps(_cni_config(d), indent=1))
        say("starting containerd")
        containerd = self._spawn(_containerd_binary(), "--config", str(d / "containerd.toml"))
        _wait_until(lambda: self.containerd_socket.is_socket(), containerd, timeout,
                    "containerd's socket")
        for image in self.images.values():
            say(f"importing {image.reference} into containerd")
            self.ctr("images", "import", str(image.archive), timeout=600)
        cp = self.control_plane
        node_kubeconfig = cp.client_kubeconfig(
            f"system:node:{self.node_name}", ["system:nodes"], "kubelet")
        config = _kubelet_config(d, cp.ca_file, free_port(), free_port())
        (d / "kubelet.yaml").write_text(yaml.safe_dump(config))
        say(f"starting kube-scheduler, kube-proxy and the kubelet of node {self.node_name}")
        scheduler_kubeconfig = cp.client_kubeconfig("system:kube-scheduler", [], "scheduler")
        self._spawn(bin_dir / "kube-scheduler", f"--kubeconfig={scheduler_kubeconfig}",
                    "--leader-elect=false", "--secure-port=0")
        proxy_kubeconfig = cp.client_kubeconfig("system:kube-proxy", [], "kube-proxy")
        (d / "kube-proxy.yaml").write_text(
            yaml.safe_dump(_kube_proxy_config(proxy_kubeconfig, free_port(), free_port())))
        self._spawn(bin_dir / "kube-proxy", f"--config={d / 'kube-proxy.yaml'}")
        kubelet = self._spawn(
            bin_dir / "kubelet",
            f"--config={d / 'kubelet.yaml'}",
            f"--kubeconfig={node_kubeconfig}",
            f"--root-dir={d / 'kubelet'}",
            f"--hostname-override={self.node_name}",
            f"--node-ip={self.node_ip}",
        )
        cp.wait_ready(kubelet, f"{cp.server}/api/v1/nodes/{self.node_name}", timeout, _node_ready)
        say(f"node {self.node_name} is Ready")

    def ctr(self, *args: str, timeout: float = _COMMAND_TIMEOUT) -> str:
        """containerd's own client against this node's containerd, in the kubelet's namespace."""
        return run("ctr", "--address", str(self.containerd_socket), "--namespace", "k8s.io",
                   *args, timeout=timeout)

    def restart_containerd(self) -> None:
        """Stops containerd (SIGTERM; its containers keep running under their shims) and starts
        it again on the same state, as a node's service manager would."""
        old = next(p for p in self._processes if p.name == "containerd")
        stop_process(old.popen, 10.0)
        self._processes.remove(old)
        config = str(self.workdir / "containerd.toml")
        new = spawn_logged(_containerd_binary(), ["--config", config], self.workdir)
        self._processes.insert(0, new)
        _wait_until(lambda: self.containerd_socket.is_socket(), new, 60, "containerd's socket")

    def stop(self, timeout: float = 10.0) -> None:
        """Stops every process, removes everything the node created and puts the host's values
        back; then raises NodeClusterError naming whatever is still left. Safe to call twice."""
        errors: list[str] = []

        def step(what: str, action: Callable[[], object]) -> None:
            try:
                action()
            except Exception as e:  # every step runs, whatever the one before did
                errors.append(f"{what}: {type(e).__name__}: {e}")

        containerd = next((p for p in self._processes if p.name == "containerd"), None)
        # The kubelet, kube-proxy and the scheduler first (newest first), containerd last, so
        # that it can still stop the containers the kubelet leaves running.
        while self._processes and self._processes[-1] is not containerd:
            step("stopping a process", lambda: stop_process(self._processes.pop().popen, timeout))
        if containerd is not None and containerd.popen.poll() is None:
            step("stopping containers", self._stop_containers)
        while self._processes:
            step("stopping containerd", lambda: stop_process(self._processes.pop().popen, timeout))
        before = self._before
        step("killing shims", lambda: _kill_pids(_shim_pids(self.containerd_socket)))
        new_cgroups = _cgroup_dirs() - before.cgroups
        step("killing container processes", lambda: _kill_pids(_cgroup_pids(new_cgroups)))
        step("unmounting", lambda: self._unmount(before))
        step("removing links", lambda: self._remove_links(before))
        for family in ("iptables", "ip6tables"):
            step(f"removing {family} rules",
                 functools.partial(_remove_rules, family, before.iptables.get(family, {})))
        step("restoring sysctls", lambda: _restore_sysctls(before.sysctls))
        step("removing cgroups", lambda: _remove_cgroups(_cgroup_dirs() - before.cgroups))
        for path in FIXED_PATHS:
            if path not in before.fixed_paths and os.path.lexists(path):
                step(f"removing {path}", functools.partial(_remove_tree, Path(path)))
        # Only if empty: others' network namespaces (mounts) may live there too.
        if not before.netns_dir:
            with contextlib.suppress(OSError):
                os.rmdir(NETNS_DIRS[0])
        step("stopping the control plane", self.control_plane.stop)
        if not _new_mounts(before.mounts, self.workdir):
            shutil.rmtree(self.workdir, ignore_errors=True)
        left = before.leftovers(self.workdir)
        if errors or left:
            raise NodeClusterError(
                "the node's host could not be put back as it was; "
                + "; ".join(errors + [f"left: {item}" for item in left]))

    def _stop_containers(self) -> None:
        # Through containerd, so that it unmounts each container's root filesystem itself.
        for task in self.ctr("tasks", "list", "--quiet").split():
            run("ctr", "--address", str(self.containerd_socket), "--namespace", "k8s.io",
                "tasks", "kill", "--signal", "SIGKILL", task, check=False)
        deadline = time.monotonic() + 20
        while self.ctr("tasks", "list", "--quiet").split() and time.monotonic() < deadline:
            for task in self.ctr("tasks", "list", "--quiet").split():
                run("ctr", "--address", str(self.containerd_socket), "--namespace", "k8s.io",
                    "tasks", "delete", "--force", task, check=False)
            time.sleep(0.5)

    def _unmount(self, before: HostSnapshot) -> None:
        for point in _new_mounts(before.mounts, self.workdir):
            run("umount", "--lazy", point, check=False)
        for path in _netns_files() - before.netns:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def _remove_links(self, before: HostSnapshot) -> None:
        # Veths of pods whose namespace is gone went with it; the rest hang on our bridge.
        for link in json.loads(run("ip", "-j", "link", "show", "master", BRIDGE, check=False)
                               or "[]"):
            run("ip", "link", "delete", link["ifname"], check=False)
        if BRIDGE in _links() - before.links:
            run("ip", "link", "delete", BRIDGE)


def _containerd_binary() -> Path:
    return Path(shutil.which("containerd") or "/usr/bin/containerd")


def _restore_sysctls(values: dict[str, str | None]) -> None:
    for name, value in values.items():
        if value is not None and _sysctl(name) != value:
            Path("/proc/sys", name).write_text(value + "\n")


def _remove_tree(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink()
    else:
        shutil.rmtree(path)


def _node_ready(body: bytes) -> bool:
    conditions = json.loads(body).get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _wait_until(
    condition: Callable[[], bool], process: ManagedProcess, timeout: float, what: str
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        code = process.popen.poll()
        if code is not None:
            raise process.failure(f"exited with code {code} before {what} appeared")
        if time.monotonic() > deadline:
            raise process.failure(f"did not make {what} within {timeout:.0f} s")
        time.sleep(0.1)


def _progress(message: str) -> None:
    print(f"node cluster: {message}", file=sys.stderr, flush=True)


def main() -> int:
    """`make node-cluster`: brings the cluster up, says how to use it, and takes it down (and
    puts the host back) on Ctrl-C."""
    repo_root = Path(__file__).resolve().parents[2]
    bin_dir = node_bin_dir(repo_root)
    images = node_images(repo_root)
    with NodeCluster.start(bin_dir, images) as cluster:
        kubectl = bin_dir / "kubectl"
        print(
            f"""
A one-node cluster runs on this machine; its node {cluster.node_name} is this host.
  export KUBECONFIG={cluster.kubeconfig}
  alias kubectl={kubectl}
Install kvtune as users do, with the image built from the Dockerfile ({images[-1].reference}):
  kubectl apply -k deploy/overlays/node-e2e
  kubectl apply -f deploy/samples/audit-only.yaml
  kubectl get hypervisornodestates -o yaml
The agent sees this host through a hostPath of / (deploy/overlays/node-e2e says why). Profiles
in Enforce change this machine. Ctrl-C stops everything and puts the host back as it was.""",
            flush=True,
        )
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        _progress("stopping; removing the node's containers, network and mounts")
    return 0


if __name__ == "__main__":
    # SIGTERM as Ctrl-C, so that the host is put back either way.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())
