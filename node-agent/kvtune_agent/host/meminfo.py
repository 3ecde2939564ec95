"""The host's memory as the kernel lists it: meminfo files (the host's and each NUMA node's) and
the NUMA node directories, read by the memory and NUMA sections of the probe alike."""

from __future__ import annotations

import re

from kvtune_api.v1alpha1.host import MAX_NUMA_NODES

from .hostfs import HostFS

NODES = "/sys/devices/system/node"
_NODE_DIR = re.compile(r"node([0-9]+)")
_MEMINFO_LINE = re.compile(r"^(?:Node [0-9]+ )?([A-Za-z0-9_()]+):\s+([0-9]+)(?: kB)?$")


def parse_meminfo(fs: HostFS, path: str) -> dict[str, int] | None:
    """A meminfo file (/proc/meminfo or a node's, whose lines start "Node N") as name -> value."""
    text = fs.read_text(path)
    if text is None:
        return None
    values: dict[str, int] = {}
    for line in text.splitlines():
        match = _MEMINFO_LINE.match(line.strip())
        if match:
            values[match.group(1)] = int(match.group(2))
    if not values:
        fs.note(path, "no 'Name: value kB' lines")
    return values


def node_ids(fs: HostFS) -> list[int]:
    """NUMA node ids from the nodeN directories (ids may have gaps, e.g. 0, 1, 250-255)."""
    ids = []
    for name in fs.list_dir(NODES):
        match = _NODE_DIR.fullmatch(name)
        if match is None:
            continue
        if len(match.group(1)) > 4 or int(match.group(1)) >= MAX_NUMA_NODES:
            fs.note(f"{NODES}/{name}", f"a node id above {MAX_NUMA_NODES - 1}, the most a "
                    "kernel has (MAX_NUMNODES); the node is left out")
            continue
        ids.append(int(match.group(1)))
    return sorted(ids)
