"""The kernel's two spellings of a CPU (or NUMA node) set, and the one the report stores.

sysfs shows a set as a cpulist ("0-3,8-11": node/cpulist, cpu/online, thread_siblings_list) or
as a cpumask: 32-bit hex words, comma separated, most significant first, as wide as the kernel
allows CPUs, so usually wider than the host ("00000000,0000ff0f": node/cpumap,
thread_siblings). Old kernels have only the masks. The report stores cpulists, so that a
256-CPU set stays one short string.

Kernels from about 5.15 serve the masks and lists of CPU topology and NUMA nodes (node/cpulist,
cpumap, core_cpus, thread_siblings and their _list twins...) as binary attributes, and some copy
one byte past the text, so a value may end in "\n\0": both parsers take it as the kernel's
text, NUL and all, which is what every reader of such a file here goes through.

Both parsers are bounded: ids stop below MAX_IDS, the most CPUs any kernel is built for
(NR_CPUS is at most 8192), so a corrupt file such as "0-1000000" is refused at once instead of
costing seconds and hundreds of MiB.
"""

from __future__ import annotations

import re
import typing as t
from collections.abc import Callable, Iterable

from .hostfs import HostFS

if t.TYPE_CHECKING:
    from kvtune_api.v1alpha1.host import NumaReport

#: One more than the largest CPU id a kernel can have (NR_CPUS, 8192 at most); NUMA node ids
#: (MAX_NUMNODES, 1024 at most) fall below it too.
#: The kernel's CPU directories (cpuN, online, offline, isolated).
CPUS = "/sys/devices/system/cpu"
MAX_IDS = 8192
_SPAN = re.compile(r"([0-9]+)(?:-([0-9]+))?")
_WORD_BITS = 32
_FIRST_WORD = re.compile(r"[0-9a-fA-F]{1,8}")
_WORD = re.compile(r"[0-9a-fA-F]{8}")


def _value(text: str) -> str:
    """The text of a sysfs set: without its newline and the NULs a binary attribute may add."""
    return text.strip().rstrip("\0").strip()


def _id(digits: str, part: str) -> int:
    # Past 4 digits only the length matters; int() of a huge digit string is slow to refuse.
    if len(digits.lstrip("0")) > 4 or int(digits) >= MAX_IDS:
        raise ValueError(f"{part[:20]!r} names ids above {MAX_IDS - 1}, more than a kernel has")
    return int(digits)


def _span(part: str) -> tuple[int, int]:
    match = _SPAN.fullmatch(part)
    if match is None:
        raise ValueError(f"{part[:20]!r} is neither an id nor a range such as 8-11")
    first = _id(match.group(1), part)
    last = first if match.group(2) is None else _id(match.group(2), part)
    if last < first:
        raise ValueError(f"the range {part!r} runs backwards")
    return first, last


def parse(text: str) -> set[int]:
    """The ids in a cpulist; raises ValueError, saying why, when it is not one."""
    ids: set[int] = set()
    covered = -1
    # Sorted, each id is added once however the ranges overlap: the work stays below MAX_IDS.
    parts = _value(text).split(",")
    for first, last in sorted(_span(p.strip()) for p in parts if p.strip()):
        if last > covered:
            ids.update(range(max(first, covered + 1), last + 1))
            covered = last
    return ids


def parse_mask(text: str) -> set[int]:
    """The ids in a cpumask; raises ValueError, saying why, when it is not one."""
    words = _value(text).split(",")
    if len(words) * _WORD_BITS > MAX_IDS:
        raise ValueError(f"{len(words)} words are wider than {MAX_IDS} CPUs, more than a kernel "
                         "has")
    # Every word but the most significant is printed in full, so each one's place is certain.
    if not _FIRST_WORD.fullmatch(words[0]) or not all(_WORD.fullmatch(w) for w in words[1:]):
        raise ValueError("expected 32-bit hex words separated by commas")
    ids: set[int] = set()
    for place, word in enumerate(reversed(words)):
        value = int(word, 16)
        ids.update(place * _WORD_BITS + bit for bit in range(_WORD_BITS) if value >> bit & 1)
    return ids


def format_ids(ids: Iterable[int]) -> str:
    """The shortest cpulist for the ids, ranges ascending."""
    ranges: list[list[int]] = []
    for i in sorted(set(ids)):
        if ranges and ranges[-1][1] == i - 1:
            ranges[-1][1] = i
        else:
            ranges.append([i, i])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


def _read(
    fs: HostFS, path: str, parser: Callable[[str], set[int]], example: str
) -> set[int] | None:
    text = fs.read_value(path)
    if text is None:
        return None
    try:
        return parser(text)
    except ValueError as err:
        fs.note(path, f"expected {example}, found {text[:40]!r} ({err})")
        return None


def read(fs: HostFS, path: str) -> set[int] | None:
    """The ids in a cpulist file; None when absent, unreadable or malformed (then noted)."""
    return _read(fs, path, parse, "a cpulist such as 0-3,8-11")


def read_mask(fs: HostFS, path: str) -> set[int] | None:
    """The ids in a cpumask file; None when absent, unreadable or malformed (then noted)."""
    return _read(fs, path, parse_mask, "a cpumask such as 00000000,0000ff0f")


def read_either(fs: HostFS, list_path: str, mask_path: str) -> set[int] | None:
    """The ids in a cpulist file or, where the kernel has only the mask (or the list is
    malformed), in its cpumask twin; None when neither gives them."""
    ids = read(fs, list_path)
    return read_mask(fs, mask_path) if ids is None else ids


def layout(numa: NumaReport) -> tuple[int, float, int]:
    """Sockets, cores per socket and threads per core as the kernel groups the CPUs (lscpu's
    three figures, whose product is the CPUs the sibling lists cover)."""
    per_socket = numa.kernel_cores / numa.sockets if numa.sockets else 0.0
    return numa.sockets, per_socket, numa.threads_per_core
