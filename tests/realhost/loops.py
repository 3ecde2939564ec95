"""Loop devices on sparse files standing in for a node's disks (LUNs), for the realhost tier.

udev makes no /dev/disk/by-id link for a loop device, and the agent publishes and tunes no disk
without one, so `Host` makes one for each as udev does for a LUN; `close` undoes everything.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kvtune_agent.features.block import probe as block

#: mkfs.xfs refuses filesystems under 300 MiB; the files are sparse, so size costs nothing.
DISK_BYTES = 320 << 20
#: The block probe's devices never handed to VMs, loop devices left out (they stand in here).
NOT_DISKS = re.compile(r"^(ram|zram|sr)[0-9]+$")


@contextlib.contextmanager
def loops_as_disks() -> Iterator[None]:
    """The block probe takes loop devices for disks (it leaves them out on a node)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(block, "_SKIPPED", NOT_DISKS)
        yield


def run(*argv: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """A real tool; missing means `make setup` has not installed what the tier needs."""
    try:
        return subprocess.run([str(a) for a in argv], check=check, capture_output=True,
                              text=True, timeout=60)
    except FileNotFoundError:
        pytest.fail(f"{argv[0]} is missing: run `make setup` (hack/setup.sh installs the tools "
                    "the realhost tier uses)")


@dataclass
class Disk:
    """A loop device built for one case, and what the test did to it."""

    path: str
    mounts: list[Path] = field(default_factory=list)
    swap: bool = False

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    def part(self, number: int) -> str:
        return f"{self.path}p{number}"


BY_ID = Path("/dev/disk/by-id")


class Host:
    """Loop devices on sparse files in `directory`, each with a /dev/disk/by-id link as udev makes
    for a LUN (the probe publishes no disk without one; udev makes none for loop devices);
    `close` undoes everything, newest first."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.disks: list[Disk] = []
        self.links: list[Path] = []
        self.made_by_id = not BY_ID.exists()

    def disk(self, case: str) -> Disk:
        image = self.directory / f"{case}.img"
        with open(image, "wb") as f:
            f.truncate(DISK_BYTES)
        disk = Disk(run("losetup", "--find", "--show", image).stdout.strip())
        self.disks.append(disk)
        BY_ID.mkdir(parents=True, exist_ok=True)
        link = BY_ID / f"kvtune-realhost-{disk.name}"
        link.unlink(missing_ok=True)
        link.symlink_to(f"../../{disk.name}")
        self.links.append(link)
        return disk

    def mount(self, disk: Disk, device: str) -> None:
        target = self.directory / f"mnt-{os.path.basename(device)}"
        target.mkdir()
        run("mount", device, target)
        disk.mounts.append(target)

    def close(self) -> None:
        errors = []
        for disk in reversed(self.disks):
            steps: list[tuple[str | Path, ...]] = [("umount", m) for m in reversed(disk.mounts)]
            steps += [("swapoff", disk.path)] if disk.swap else []
            steps += [("partx", "-d", disk.path), ("losetup", "-d", disk.path)]
            for step in steps:
                done = run(*step, check=False)
                if done.returncode and step[0] != "partx":  # partx -d of none fails: harmless
                    errors.append(f"{' '.join(map(str, step))}: {done.stderr.strip()}")
        for link in self.links:
            link.unlink(missing_ok=True)
        if self.made_by_id:
            for directory in (BY_ID, BY_ID.parent):
                if directory.exists() and not any(directory.iterdir()):
                    directory.rmdir()
        left = run("losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE").stdout
        attached = [line for line in left.splitlines() if str(self.directory) in line]
        assert not errors and not attached, (
            f"the realhost disks were not all undone: {errors}; still attached: {attached}")
