"""Key facts about the node published for Node Feature Discovery, which turns them into labels.

Schedulers and other controllers select nodes by label (e.g. "PLE on" for overcommitted VMs,
"1Gi hugepages ready"). NFD's local feature source reads every file in
/etc/kubernetes/node-feature-discovery/features.d/ on the host, one `name=value` per line, and
labels the node with each; a name with its own domain (kvtune.io/...) is used as given instead of
being prefixed with feature.node.kubernetes.io/. So publishing needs no NFD code or API: one file,
replaced atomically (its temporary file is a dotfile, which NFD ignores).

The file stays on the host across agent restarts, so labels do not flap when the agent's pod is
replaced. Nothing is written in Audit mode or while paused; the file is removed when the node
leaves its profile, and when its profile moves to Audit (kvtune no longer holds the host to what
the file says, so a scheduler must not rely on it). Readiness is not published here: the agent
process sets the node label kvtune.io/ready itself (the webhook relies on it even where NFD is
not installed), and a label with two writers would flap, NFD deleting it whenever this file
stops naming it.
"""

from __future__ import annotations

from kvtune_api.v1alpha1.nodestate import HypervisorNodeStateSpec, HypervisorNodeStateStatus

from .features import FEATURES
from .host.hostfs import HostFS

FEATURES_FILE = "/etc/kubernetes/node-feature-discovery/features.d/kvtune"
DOMAIN = "kvtune.io"
HEADER = ("# Written by the kvtune node agent for Node Feature Discovery's local source; "
          "removed when the node leaves its kvtune profile or the profile moves to Audit.\n")


def features(spec: HypervisorNodeStateSpec, status: HypervisorNodeStateStatus) -> dict[str, str]:
    """Label name -> value, as each registered feature gives them (its `labels`): PLE
    supported/enabled, NUMA nodes, hugepages ready per size, KSM off, NICs dedicated through
    macvtap. A fact the probe could not establish (PLE "Unknown") is left out, not guessed."""
    found: dict[str, str] = {}
    for feature in FEATURES:
        found |= feature.labels(spec, status)
    return {f"{DOMAIN}/{name}": value for name, value in sorted(found.items())}


def render(labels: dict[str, str]) -> str:
    """The feature file: a comment, then `name=value` lines."""
    return HEADER + "".join(f"{name}={value}\n" for name, value in labels.items())


def publish(fs: HostFS, spec: HypervisorNodeStateSpec, status: HypervisorNodeStateStatus) -> bool:
    """Bring the feature file in line with `status`; True when the file changed.

    Paused: left as it is. Leaving the profile or Audit: withdrawn. Enforce: rewritten when its
    content differs.

    Raises HostWriteError when it cannot be written or removed.
    """
    if spec.paused:
        return False
    if spec.revert or spec.mode != "Enforce":
        return withdraw(fs)
    content = render(features(spec, status))
    if fs.read_text(FEATURES_FILE) == content:
        return False
    fs.write_file(FEATURES_FILE, content)
    return True


def withdraw(fs: HostFS) -> bool:
    """Remove the feature file (NFD then drops its labels); True when there was one."""
    if not fs.exists(FEATURES_FILE):
        return False
    fs.remove(FEATURES_FILE)
    return True
