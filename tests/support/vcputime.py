"""Independent readings of how long a vCPU thread ran, to check the interference reader with.

The reader (kvtune_agent.audit) takes a vCPU's wait from schedstat's run delay. For a vCPU that
never sleeps (the tier's guests spin), all the time it did not run it waited, so any other
account of its time on a CPU checks it:
- `CpuTime`: the kernel's CPU-time accounting, utime+stime of the thread's stat, in clock ticks
  (a separate path from sched_info's run delay; exact to a tick, 1/100 s);
- `TaskClock`: perf's task-clock software event for the thread (`perf stat -t`), counted by
  perf's own clock at each switch in and out (linux-perf, installed by hack/setup.sh).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def vcpu_threads(pid: int) -> list[int]:
    """The vCPU threads ('CPU n/KVM') of a QEMU."""
    return sorted(int(task.name) for task in Path(f"/proc/{pid}/task").iterdir()
                  if (task / "comm").read_text().startswith("CPU "))


def _ticks(tid: int) -> int:
    fields = Path(f"/proc/{tid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])


class CpuTime:
    """Each thread's wait share by CPU time, from construction to `shares()`."""

    def __init__(self, tids: list[int]) -> None:
        self.began, self.start = time.monotonic(), {tid: _ticks(tid) for tid in tids}

    def shares(self) -> dict[int, float]:
        wall = time.monotonic() - self.began
        return {tid: 100.0 * (1 - (_ticks(tid) - ticks) / TICKS / wall)
                for tid, ticks in self.start.items()}


class TaskClock:
    """Each thread's wait share by perf's task-clock over `window` seconds from construction."""

    def __init__(self, tids: list[int], window: float) -> None:
        perf = shutil.which("perf")
        if perf is None:
            raise FileNotFoundError("perf is missing: run `make setup` (Debian's linux-perf)")
        self.window = window
        self.runs = {tid: subprocess.Popen(
            [perf, "stat", "-e", "task-clock", "-x,", "-t", str(tid), "--", "sleep", str(window)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for tid in tids}

    def shares(self) -> dict[int, float]:
        found = {}
        for tid, run in self.runs.items():
            _, err = run.communicate(timeout=self.window + 30)
            line = next(line for line in err.splitlines() if ",task-clock," in line)
            found[tid] = 100.0 * (1 - float(line.split(",")[0]) / 1000 / self.window)
        return found
