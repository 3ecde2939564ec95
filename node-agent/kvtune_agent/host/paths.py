"""Where the host keeps what more than one feature reads: one name for each path, so a finding
names the same file whichever feature tells it."""

from __future__ import annotations

MEMINFO = "/proc/meminfo"
#: Config files where kubeadm and distributions put them, read when no kubelet process runs.
CONFIG_PATHS = (
    "/var/lib/kubelet/config.yaml",
    "/etc/kubernetes/kubelet.conf",
    "/etc/kubernetes/kubelet-config.yaml",
)
