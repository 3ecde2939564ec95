"""Boot loaders laid out in host trees: BLS entries with a fake grubby, Debian's GRUB with a fake
update-grub, an ostree host, and the running kernel's release.

The fakes are small Python scripts in the tree, run by HostFS.run through the tree's command
prefix (hosttree.fake_chroot), and change the tree the way the real tools change a host: grubby
edits every entry's options line (an added argument first drops every argument of its key, as
grubby-bls does), update-grub writes grub.cfg from /etc/default/grub and its drop-ins. Every call
is logged (`boot_commands`).
"""

from __future__ import annotations

import sys
from pathlib import Path

from kvtune_agent.engine.apply import apply
from kvtune_agent.engine.journal import Journal
from kvtune_agent.features import FEATURES
from kvtune_agent.features.base import Plan, Step
from kvtune_agent.features.memory import boot
from kvtune_api.v1alpha1.nodestate import DisruptionGrant, PlannedStep, StepResult

from support.hosttree import HostTree

COMMAND_LOG = "/var/log/fake-boot-commands.log"
GRUBBY = "/usr/sbin/grubby"
UPDATE_GRUB = "/usr/sbin/update-grub"
GRUB_CFG = "/boot/grub/grub.cfg"

_LOG = """
import os, pathlib, shlex, sys
ROOT = pathlib.Path(ROOT_DIR)
(ROOT / "var/log").mkdir(parents=True, exist_ok=True)
with open(ROOT / "var/log/fake-boot-commands.log", "a") as log:
    log.write(shlex.join([os.path.basename(sys.argv[0]), *sys.argv[1:]]) + "\\n")
"""
_GRUBBY = _LOG + """
entries = sorted((ROOT / "boot/loader/entries").glob("*.conf"))
def options(path):
    return next((l.split()[1:] for l in path.read_text().splitlines()
                 if l.startswith("options ")), [])
if sys.argv[1] == "--info=ALL":
    for index, path in enumerate(entries):
        print(f"index={index}")
        print(f'args="{" ".join(options(path))}"')
    sys.exit(0)
assert sys.argv[1] == "--update-kernel=ALL", sys.argv
remove, add = [], []
for arg in sys.argv[2:]:
    key, _, value = arg.partition("=")
    (remove if key == "--remove-args" else add).extend(value.split())
for path in entries:
    words = [w for w in options(path) if w not in remove]
    keys = {a.partition("=")[0] for a in add}
    words = [w for w in words if w.partition("=")[0] not in keys] + add
    lines = [l for l in path.read_text().splitlines() if not l.startswith("options ")]
    path.write_text("\\n".join(lines + ["options " + " ".join(words)]) + "\\n")
"""
_UPDATE_GRUB = _LOG + """
import subprocess
script = "; ".join([". /etc/default/grub"] + [
    f". /etc/default/grub.d/{p.name}" for p in sorted((ROOT / "etc/default/grub.d").glob("*.cfg"))])
# The drop-ins name host paths: source them from the tree by running in it.
args = subprocess.run(["sh", "-c", script.replace(". /", f". {ROOT}/") +
                       '; echo "$GRUB_CMDLINE_LINUX $GRUB_CMDLINE_LINUX_DEFAULT"'],
                      capture_output=True, text=True, check=True).stdout.split()
(ROOT / "boot/grub").mkdir(parents=True, exist_ok=True)
(ROOT / "boot/grub/grub.cfg").write_text(f"linux /vmlinuz root=/dev/sda1 {' '.join(args)}\\n")
sys.exit(EXIT_CODE)
"""


def _script(tree: HostTree, path: str, body: str) -> None:
    tree.file(path, f"#!{sys.executable}\n" + body.replace("ROOT_DIR", repr(str(tree.root))))
    (tree.root / path.lstrip("/")).chmod(0o755)


def osrelease(tree: HostTree, release: str) -> HostTree:
    return tree.file("/proc/sys/kernel/osrelease", release)


def bls(tree: HostTree, options: str = "root=UUID=1234 ro quiet",
        kernels: tuple[str, ...] = ("6.8.0-1.fc40.x86_64", "6.7.0-2.fc40.x86_64"),
        *, grubby: bool = True) -> HostTree:
    """A BLS host: one entry per kernel with the same options line, and grubby unless not."""
    for kernel in kernels:
        tree.file(f"/boot/loader/entries/abc123-{kernel}.conf",
                  f"title Fedora ({kernel})\nversion {kernel}\nlinux /vmlinuz-{kernel}\n"
                  f"options {options}")
    if grubby:
        _script(tree, GRUBBY, _GRUBBY)
    return tree


def bls_options(tree: HostTree) -> list[str]:
    """The options line of every BLS entry, in name order."""
    return [line.removeprefix("options ") for path in
            sorted((tree.root / "boot/loader/entries").glob("*.conf"))
            for line in path.read_text().splitlines() if line.startswith("options ")]


def debian_grub(tree: HostTree, *, exit_code: int = 0) -> HostTree:
    """Debian's GRUB: /etc/default/grub, a grub-mkconfig that sources the drop-ins, and an
    update-grub that regenerates grub.cfg (exiting with `exit_code`)."""
    tree.file("/etc/default/grub", 'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\n'
              'GRUB_CMDLINE_LINUX=""\n')
    _script(tree, "/usr/sbin/grub-mkconfig",
            "# sources /etc/default/grub, then /etc/default/grub.d/*.cfg\n")
    _script(tree, UPDATE_GRUB, _UPDATE_GRUB.replace("EXIT_CODE", str(exit_code)))
    (tree.root / "etc/default/grub.d").mkdir(parents=True, exist_ok=True)  # as Debian ships it
    return tree.file(GRUB_CFG, "linux /vmlinuz root=/dev/sda1 quiet")  # as update-grub writes it


def boot_commands(tree: HostTree) -> list[str]:
    """Every command the fakes received, oldest first."""
    log = Path(tree.root, COMMAND_LOG.lstrip("/"))
    return log.read_text().splitlines() if log.exists() else []


def failing_grubby(tree: HostTree, code: int = 1,
                   message: str = "grubby: error reading /boot/loader/entries") -> HostTree:
    """A grubby that logs its call, says `message` and exits with `code` (a broken install)."""
    _script(tree, GRUBBY, _LOG + f"print({message!r}, file=sys.stderr)\nsys.exit({code})\n")
    return tree


def grubby_failing_updates(tree: HostTree, code: int = 1) -> HostTree:
    """A grubby that lists the entries but exits with `code` on every change, before making it
    (a read-only /boot, a full disk)."""
    refuse = (f'if sys.argv[1] != "--info=ALL":\n'
              f'    print("grubby: error writing entries", file=sys.stderr)\n'
              f'    sys.exit({code})\n')
    _script(tree, GRUBBY, _GRUBBY.replace("\nentries = ", f"\n{refuse}entries = ", 1))
    return tree


def apply_boot_args(tree: HostTree, target: str, args: str) -> StepResult:
    """Apply the step that stages `args` in `target` (grubby, or the GRUB drop-in) with reboots
    allowed, as a cycle's apply does: journaled first, then written, then a reboot requested."""
    fs = tree.fs()
    plan = Plan(steps=(Step("bootargs", PlannedStep(
        id=boot.STEP_ID, feature="Hugepages", path=target, current="", desired=args,
        disruption="NeedsReboot", reason="the kernel could not allocate them")),))
    [result] = apply(FEATURES, plan, fs, Journal(fs), tree.systemd(),
                     DisruptionGrant(allow_reboot=True), timeout=10)
    return result
