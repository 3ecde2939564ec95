"""Real links on this machine's kernel, and network namespaces standing in for virt-launcher pods.

A pod here is what a container runtime makes of one: a process in a network and mount namespace
of its own, with sysfs mounted inside (a container's /sys shows its own namespace only because
the runtime mounts it there), so the agent reads it through /proc/<pid>/root/sys/class/net as it
reads a real pod's. The process is named and flagged as virt-launcher-monitor is, so the agent
takes it for one. Other engineers share this kernel: every link is named with this run's
`PREFIX`, and `Network.close` deletes them all and requires none left on the host.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
import typing as t
from dataclasses import dataclass
from pathlib import Path

import pytest

#: Names of this run's links: "kvt" and 4 hex digits, leaving 8 characters (IFNAMSIZ is 16).
PREFIX = f"kvt{secrets.token_hex(2)}"
#: The pods' Kubernetes namespace, as the launchers' --namespace says.
NAMESPACE = "realhost"
#: The launcher's script: virt-launcher-monitor's flags; it sleeps until its group is killed.
LAUNCHER = "sleep 600\n"


def run(*argv: str | int, pid: int | None = None) -> str:
    """A real tool (in the network namespace of `pid` when given); missing fails the test."""
    command = [str(a) for a in argv]
    if pid is not None:
        command = ["nsenter", "-t", str(pid), "-n", *command]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        pytest.fail(f"{command[0]} is missing: run `make setup`")
    assert done.returncode == 0, f"{' '.join(command)}: {done.stderr.strip()}"
    return done.stdout


def links(pid: int | None = None) -> list[dict[str, t.Any]]:
    """`ip -j -d link` of the host's namespace, or of the pod `pid`."""
    found: list[dict[str, t.Any]] = json.loads(run("ip", "-j", "-d", "link", "show", pid=pid))
    return found


@dataclass(frozen=True)
class Pod:
    """A process in a network namespace of its own, seen by the agent as a VMI's launcher."""

    pid: int
    name: str
    namespace: str = NAMESPACE

    @property
    def vmi(self) -> str:
        return f"{self.namespace}/{self.name}"


class Network:
    """Links and pods made for one test on the real kernel; `close` undoes them all."""

    def __init__(self, directory: Path) -> None:
        self.script = directory / "virt-launcher-monitor"
        self.script.write_text(LAUNCHER)
        self.pods: list[tuple[Pod, subprocess.Popen[bytes]]] = []
        #: Each link made, and the pod it was moved into (None: still on the host).
        self.made: list[tuple[str, Pod | None]] = []

    @staticmethod
    def name(role: str) -> str:
        """This run's name for a host link (`role` at most 8 characters)."""
        assert len(role) <= 8, role
        return PREFIX + role

    def pod(self, name: str, *, hide_libvirt: bool = False) -> Pod:
        """A pod for VMI realhost/<name>; `hide_libvirt` mounts an empty /run/libvirt in it, so
        that the agent finds no libvirt socket in its root and asks the host's libvirt."""
        mounts = "mount -t sysfs sysfs /sys"
        if hide_libvirt:
            mounts += " && mount -t tmpfs tmpfs /run/libvirt"
        launcher = f"exec sh {self.script} --name {name} --namespace {NAMESPACE} --uid {name}"
        process = subprocess.Popen(
            ["unshare", "--net", "--mount", "--propagation", "private", "sh", "-c",
             f"{mounts} && {launcher}"], start_new_session=True)  # fmt: skip
        pod = Pod(process.pid, name)
        self.pods.append((pod, process))
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pod.pid}/cmdline").read_bytes().split(b"\0")[1:2] != [
            str(self.script).encode()
        ]:
            assert process.poll() is None, f"pod {name} exited with {process.returncode}"
            assert time.monotonic() < deadline, f"pod {name} did not start its launcher"
            time.sleep(0.02)
        return pod

    def host(self, *argv: str | int) -> None:
        """`ip` on the host, for a link of this run (named with PREFIX)."""
        run("ip", *argv)

    def add(self, name: str, *spec: str | int) -> str:
        """`ip link add <name> <spec>` on the host, deleted by `close`."""
        run("ip", "link", "add", name, *spec)
        self.made.append((name, None))
        return name

    def bridge(self, role: str) -> str:
        return self.add(self.name(role), "type", "bridge")

    def tap(self, role: str, *, master: str | None = None) -> str:
        name = self.name(role)
        run("ip", "tuntap", "add", name, "mode", "tap")
        self.made.append((name, None))
        if master is not None:
            run("ip", "link", "set", name, "master", master)
        return name

    def veth(self, role: str, pod: Pod, peer: str, *, master: str | None = None,
             peer_master: str | None = None, index: int | None = None) -> str:
        """A veth pair, made as a CNI plugin makes it: `peer` in the pod, the host side plugged
        into `master`; `index` gives both ends that same interface index."""
        same = () if index is None else ("index", index)
        name = self.add(self.name(role), *same, "type", "veth", "peer", "name", peer, *same,
                        "netns", pod.pid)  # fmt: skip
        if master is not None:
            run("ip", "link", "set", name, "master", master)
        if peer_master is not None:
            run("ip", "link", "set", peer, "master", peer_master, pid=pod.pid)
        return name

    def move(self, name: str, pod: Pod, *, master: str | None = None) -> None:
        """Move the host link `name` into the pod, onto the pod's bridge `master`."""
        run("ip", "link", "set", name, "netns", pod.pid)
        self.made = [(n, pod if n == name else p) for n, p in self.made]
        if master is not None:
            run("ip", "link", "set", name, "master", master, pid=pod.pid)

    def _stopped(self, pod: Pod) -> bool:
        return next(p for q, p in self.pods if q == pod).poll() is not None

    def close(self) -> None:
        """Delete each link where it is (a veth takes its peer along), then stop the pods (their
        own links go with their namespaces); no link of this run may be left on the host."""
        errors = []
        for name, pod in reversed(self.made):
            pid = None if pod is None else pod.pid
            if pod is not None and self._stopped(pod):
                continue
            if any(link["ifname"] == name for link in links(pid)):
                try:
                    run("ip", "link", "del", name, pid=pid)
                except AssertionError as err:
                    errors.append(str(err))
        for _, process in reversed(self.pods):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        left = [link["ifname"] for link in links() if link["ifname"].startswith(PREFIX)]
        assert not errors and not left, f"links of this test are left: {errors} {left}"
