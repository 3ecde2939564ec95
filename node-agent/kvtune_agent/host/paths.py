"""Where the host keeps what more than one feature reads: one name for each path, so a finding
names the same file whichever feature tells it."""

from __future__ import annotations

MEMINFO = "/proc/meminfo"
#: The host's IPv4 routes, IPv6 routes and IPv6 addresses: PID 1's network namespace, the
#: host's, whatever the agent's own.
ROUTES = "/proc/1/net/route"
IPV6_ROUTES = "/proc/1/net/ipv6_route"
IPV6_ADDRESSES = "/proc/1/net/if_inet6"
#: Config files where kubeadm and distributions put them, read when no kubelet process runs.
CONFIG_PATHS = (
    "/var/lib/kubelet/config.yaml",
    "/etc/kubernetes/kubelet.conf",
    "/etc/kubernetes/kubelet-config.yaml",
)
