"""Where a host keeps its kernel command line, and how kvtune changes it there.

Distributions differ, and kvtune uses each one's own tool rather than editing generated files:
BLS hosts (Fedora, RHEL, CentOS Stream) keep one entry per kernel in /boot/loader/entries and
change them all with `grubby --update-kernel=ALL`; Debian and Ubuntu generate grub.cfg from
/etc/default/grub and the drop-ins in /etc/default/grub.d (their grub-mkconfig sources them), so
kvtune writes a drop-in of its own and runs update-grub (or grub-mkconfig -o <grub.cfg>). An
ostree host (CoreOS, whose command line rpm-ostree or the cluster's MachineConfig owns), a
systemd-boot host without grubby, or an unknown boot loader gets no write: the planner (boot.py)
reports the exact command instead.

kvtune owns only the hugepage arguments (`MANAGED`). The value of a target is the managed
arguments its configuration holds ("" for none), so the journal records what was there before
(usually nothing) and a revert puts back exactly that: grubby removes what kvtune added, the
drop-in is removed and grub.cfg regenerated. Every command runs through HostFS.run, in the host's
root, under a deadline (at least COMMAND_SECONDS).
"""

from __future__ import annotations

import shlex
import typing as t
from dataclasses import dataclass

from .hostfs import MAX_READ, CommandResult, HostCommandError, HostFS, HostWriteError

#: The kernel arguments kvtune manages; all others on the command line are left alone.
MANAGED = ("default_hugepagesz", "hugepagesz", "hugepages")
BLS_ENTRIES = "/boot/loader/entries"
GRUBBY = ("/usr/sbin/grubby", "/sbin/grubby", "/usr/bin/grubby")
#: kvtune's GRUB drop-in; grub-mkconfig sources /etc/default/grub.d/*.cfg after /etc/default/grub.
GRUB_DROPIN = "/etc/default/grub.d/kvtune.cfg"
GRUB_VARIABLE = "GRUB_CMDLINE_LINUX_DEFAULT"
UPDATE_GRUB = ("/usr/sbin/update-grub", "/sbin/update-grub")
MKCONFIG = ("/usr/sbin/grub-mkconfig", "/usr/sbin/grub2-mkconfig", "/usr/bin/grub-mkconfig",
            "/usr/bin/grub2-mkconfig", "/sbin/grub-mkconfig", "/sbin/grub2-mkconfig")
GRUB_CONFIGS = ("/boot/grub/grub.cfg", "/boot/grub2/grub.cfg")
OSTREE_BOOTED = "/run/ostree-booted"
#: The least time a boot loader command gets, whatever the agent's write deadline: grub-mkconfig
#: reads every installed kernel (and os-prober other disks), which takes tens of seconds.
COMMAND_SECONDS = 120.0
CMDLINE = "/proc/cmdline"
OSRELEASE = "/proc/sys/kernel/osrelease"
_DROPIN_HEADER = ("# Written by kvtune (HypervisorProfile boot.settings: Stage); removed when "
                  "the node leaves its profile.\n")

LoaderKind = t.Literal["grubby", "grub", "ostree", "bls", "unknown"]


class BootArgsError(Exception):
    """The boot configuration could not be read or changed; the message says what to do."""


def split(line: str) -> list[str]:
    """The words of a kernel command line as the kernel takes them apart (lib/cmdline.c,
    next_arg): spaces separate words except inside double quotes, which may open anywhere in a
    word (`acpi_osi="!Windows 2012"`), and a quote left open runs to the end of the line.

    Words are kept as written, quotes included, so that a line put back is the line read.
    Never raises: one odd option must not cost the node its cycle.
    """
    words: list[str] = []
    word: list[str] = []
    quoted = False
    for char in line:
        if char.isspace() and not quoted:
            if word:
                words.append("".join(word))
                word = []
            continue
        if char == '"':
            quoted = not quoted
        word.append(char)
    if word:
        words.append("".join(word))
    return words


def managed(args: t.Iterable[str]) -> str:
    """The managed arguments among `args` (command-line words), in order, space separated."""
    return " ".join(arg for arg in args if arg.partition("=")[0] in MANAGED)


@dataclass(frozen=True)
class Loader:
    """The mechanism that sets this host's kernel command line."""

    kind: LoaderKind
    #: What kvtune writes (the journal's path): grubby's path, or the GRUB drop-in; "" for none.
    target: str = ""
    #: grub: the command that regenerates grub.cfg from the drop-ins.
    regenerate: tuple[str, ...] = ()

    @property
    def writable(self) -> bool:
        return bool(self.target)

    def describe(self) -> str:
        return {
            "grubby": f"the BLS entries in {BLS_ENTRIES} (grubby)",
            "grub": f"the GRUB drop-in {GRUB_DROPIN} (then `{' '.join(self.regenerate)}`)",
            "ostree": f"rpm-ostree ({OSTREE_BOOTED} exists: an ostree host)",
            "bls": f"the BLS entries in {BLS_ENTRIES}, without grubby (systemd-boot?)",
            "unknown": "no boot loader configuration kvtune recognises",
        }[self.kind]

    def command(self, current: str, desired: str) -> str:
        """The exact command (or edit) that replaces `current` by `desired`, to run by hand."""
        if self.kind == "grubby":
            return " ".join(["grubby --update-kernel=ALL",
                             *([f"--remove-args={shlex.quote(current)}"] if current else []),
                             *([f"--args={shlex.quote(desired)}"] if desired else [])])
        if self.kind == "grub":
            return (f"echo {shlex.quote(dropin_line(desired))} > {GRUB_DROPIN} && "
                    f"{' '.join(self.regenerate)}")
        if self.kind == "ostree":
            return " ".join(["rpm-ostree kargs", *(f"--delete={a}" for a in current.split()),
                             *(f"--append={a}" for a in desired.split())]) + (
                " (on OpenShift/OKD: the MachineConfig's spec.kernelArguments instead)")
        remove = f", removing `{current}`" if current else ""
        if self.kind == "bls":
            return (f"add `{desired}` to the options line of every entry in {BLS_ENTRIES}"
                    f"{remove} (or to /etc/kernel/cmdline, then `kernel-install add` for the "
                    "installed kernels)")
        return f"add `{desired}` to the kernel command line of the host's boot loader{remove}"


def dropin_line(args: str) -> str:
    """The drop-in's assignment: the distribution's default arguments, then kvtune's."""
    return f'{GRUB_VARIABLE}="${GRUB_VARIABLE} {args}"'


def find_loader(fs: HostFS) -> Loader:
    """The host's mechanism, in order: ostree, BLS with grubby, GRUB drop-ins, BLS, unknown."""
    if fs.exists(OSTREE_BOOTED):
        return Loader("ostree")
    entries = fs.glob(f"{BLS_ENTRIES}/*.conf")
    grubby = fs.executable(*GRUBBY)
    if entries and grubby:
        return Loader("grubby", grubby)
    # Only Debian's grub-mkconfig sources the drop-ins; upstream's reads /etc/default/grub alone.
    mkconfig = next((path for path in MKCONFIG if fs.executable(path)
                     and "/etc/default/grub.d" in (fs.read_text(path) or "")), None)
    if mkconfig and not entries:
        update = fs.executable(*UPDATE_GRUB)
        config = next((path for path in GRUB_CONFIGS if fs.exists(path)), None)
        if update:
            return Loader("grub", GRUB_DROPIN, (update,))
        if config:
            return Loader("grub", GRUB_DROPIN, (mkconfig, "-o", config))
    return Loader("bls" if entries else "unknown")


def _check_target(target: str) -> None:
    """A target comes from the journal, a file on the host: only the paths kvtune itself
    writes or runs are taken, never a command the file names."""
    if target != GRUB_DROPIN and target not in GRUBBY:
        raise BootArgsError(
            f"{target!r} is neither kvtune's GRUB drop-in {GRUB_DROPIN} nor grubby "
            f"({', '.join(GRUBBY)}), so kvtune does not run or write it: the journal entry "
            "that names it was not written by kvtune; remove it")


def read_args(fs: HostFS, target: str, *, timeout: float) -> str:
    """The managed arguments `target` (grubby's path, or the drop-in) holds; "" for none."""
    _check_target(target)
    if target == GRUB_DROPIN:
        if not fs.has_file(GRUB_DROPIN):
            return ""
        text = fs.read_file(GRUB_DROPIN)
        if text is None:
            raise BootArgsError(f"cannot read {GRUB_DROPIN}; check its permissions")
        prefix = f'{GRUB_VARIABLE}="${GRUB_VARIABLE} '
        lines = [line for line in text.splitlines() if line.startswith(prefix)]
        return managed(split(lines[-1].removeprefix(prefix).rstrip('"'))) if lines else ""
    result = _run(fs, (target, "--info=ALL"), timeout)
    if result.code != 0:
        # grubby gone, or its entries unreadable: the arguments are unknown, not none.
        raise BootArgsError(f"{result.failure()}, so the hugepage arguments of the boot "
                            f"entries in {BLS_ENTRIES} are unknown; run it on the host to see why")
    # grubby prints the options line as args="...", its quotes not escaped: the value runs from
    # the first quote to the last.
    lines = [line.removeprefix("args=") for line in result.output.splitlines()
             if line.startswith("args=")]
    if not lines and fs.glob(f"{BLS_ENTRIES}/*.conf"):
        raise BootArgsError(
            f"`{target} --info=ALL` listed no args= line although {BLS_ENTRIES} holds entries, "
            "so their hugepage arguments are unknown; run it on the host to see why")
    kernels = {managed(split(_unquote(line))) for line in lines}
    if len(kernels) > 1:
        raise BootArgsError(
            f"the boot entries in {BLS_ENTRIES} disagree on hugepage arguments "
            f"({' | '.join(sorted(kernels))}); kvtune changes them only together: make them "
            "agree with `grubby --update-kernel=ALL`")
    return kernels.pop() if kernels else ""


def _unquote(value: str) -> str:
    """grubby's `"..."` around an options line, taken off (only the outermost pair)."""
    if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
        return value[1:-1]
    return value


def write_args(fs: HostFS, target: str, args: str, *, timeout: float) -> None:
    """Make `target` hold exactly `args` as its managed arguments ("" removes them), then check.

    Raises BootArgsError. A GRUB drop-in whose grub.cfg cannot be regenerated is put back, so
    that the drop-in never claims what the boot loader will not do.
    """
    _check_target(target)
    if target == GRUB_DROPIN:
        loader = find_loader(fs)
        if loader.kind != "grub":
            raise BootArgsError(
                f"no update-grub or grub-mkconfig that reads /etc/default/grub.d was found in "
                f"the host root, so {GRUB_DROPIN} would not take effect; left as it is")
        before = fs.read_file(GRUB_DROPIN) if fs.has_file(GRUB_DROPIN) else None
        try:
            _put(fs, _dropin_with(before, args))
            try:
                result = _run(fs, loader.regenerate, timeout)
            except BootArgsError as err:  # it hung, or could not start
                # Not run again: it would hang as long again (grub-mkconfig replaces grub.cfg
                # by a rename, so a killed run leaves the old one).
                _put(fs, before)
                raise BootArgsError(f"{err}; {GRUB_DROPIN} is left as it was") from err
            if result.code != 0:
                raise BootArgsError(f"{result.failure()}; {_undo(fs, before, loader, timeout)}")
            effective, _ = _grub_cfg_args(fs)
            if args and not (effective or "").endswith(args):
                _put(fs, before)
                _run(fs, loader.regenerate, timeout)
                raise BootArgsError(
                    f"the grub.cfg generated with kvtune's drop-in lacks `{args}`: "
                    f"{', '.join(overriding(fs)) or '/etc/default/grub'} sets "
                    f"{GRUB_VARIABLE} without it; {GRUB_DROPIN} is left as it was")
        except HostWriteError as err:
            raise BootArgsError(str(err)) from err
    else:
        now = read_args(fs, target, timeout=timeout)
        argv = [target, "--update-kernel=ALL"]
        argv += [f"--remove-args={now}"] if now else []
        argv += [f"--args={args}"] if args else []
        if now != args:
            result = _run(fs, argv, timeout)
            if result.code != 0:
                raise BootArgsError(result.failure())
    shown = read_args(fs, target, timeout=timeout)
    if shown != args:
        raise BootArgsError(
            f"after the change the boot configuration holds {shown!r}, not {args!r}: something "
            "else rewrites it; check the host's boot loader configuration")


def _dropin_with(before: str | None, args: str) -> str:
    """The drop-in `before` (None: none) with `args` as its managed arguments: only the managed
    words of its last assignment change, so an administrator's own lines and words in a file
    of this name survive a stage and a revert; kvtune's header goes with kvtune's words."""
    prefix = f'{GRUB_VARIABLE}="${GRUB_VARIABLE} '
    lines = (before or "").splitlines()
    at = next((i for i in reversed(range(len(lines))) if lines[i].startswith(prefix)), None)
    if at is None:
        lines += [dropin_line(args)] if args else []
    else:
        kept = [w for w in split(lines[at].removeprefix(prefix).rstrip('"'))
                if w.partition("=")[0] not in MANAGED]
        words = " ".join([*kept, *args.split()])
        lines[at:at + 1] = [f'{prefix}{words}"'] if words else []
    if args and not before:  # a file kvtune creates says whose it is
        lines.insert(0, _DROPIN_HEADER.rstrip("\n"))
    if not args and lines == [_DROPIN_HEADER.rstrip("\n")]:
        lines = []
    return "".join(f"{line}\n" for line in lines)


def _undo(fs: HostFS, before: str | None, loader: Loader, timeout: float) -> str:
    """Put the drop-in back and generate grub.cfg again from it, and say so: a tool that
    exited non-zero may have written grub.cfg with kvtune's arguments first, and the node
    would boot with what its status says was not staged."""
    _put(fs, before)
    try:
        again = _run(fs, loader.regenerate, timeout)
    except BootArgsError as err:
        failure = str(err)
    else:
        failure = "" if again.code == 0 else again.failure()
    return (f"{GRUB_DROPIN} is left as it was" + (
        f", and generating grub.cfg again without it failed too ({failure}): check what "
        "grub.cfg holds before the node reboots" if failure else ""))


def _put(fs: HostFS, content: str | None) -> None:
    if content:
        fs.write_file(GRUB_DROPIN, content)
    else:
        fs.remove(GRUB_DROPIN)


def _run(fs: HostFS, argv: t.Sequence[str], timeout: float) -> CommandResult:
    try:
        return fs.run(argv, timeout=max(timeout, COMMAND_SECONDS))
    except HostCommandError as err:
        raise BootArgsError(str(err)) from err


def _grub_cfg_args(fs: HostFS) -> tuple[str | None, float | None]:
    """The managed arguments of grub.cfg's first `linux` line (the default entry, which the
    node boots) and grub.cfg's modification time; (None, None) when there is none."""
    path = next((p for p in GRUB_CONFIGS if fs.has_file(p)), None)
    text = fs.read_file(path, limit=MAX_READ) if path else None
    if path is None or text is None:
        return None, None
    for line in text.splitlines():
        words = split(line)
        if words and words[0] in ("linux", "linux16", "linuxefi"):
            return managed(words[2:]), fs.modified(fs.in_root(path) or path)
    return "", fs.modified(fs.in_root(path) or path)


@dataclass(frozen=True)
class BootFacts:
    """What the planner needs to know about the host's boot configuration (read by the cycle)."""

    loader: Loader = Loader("unknown")
    #: The managed arguments the next boot gets: what the loader's configuration holds, or (for
    #: loaders kvtune does not write) the running command line's; None when unreadable.
    staged: str | None = ""
    #: Why `staged` is None.
    error: str = ""
    #: The managed arguments of the running kernel's command line.
    running: str = ""
    #: The running kernel's release, e.g. 6.1.0-18-amd64; None when unreadable.
    release: str | None = None
    #: grub: the managed arguments of the generated grub.cfg, what the node boots with (the
    #: distribution's, the administrator's and kvtune's together); None elsewhere or unread.
    effective: str | None = None
    #: grub: kvtune's drop-in holds arguments grub.cfg lacks, and grub.cfg was not generated
    #: since the drop-in was written (a crash, or a failure, between the two).
    stale: bool = False
    #: grub: the drop-ins sourced after kvtune's that set its variable afresh (`overriding`).
    overridden_by: tuple[str, ...] = ()
    #: kvtune's reboot request is in place (its line in /var/run/reboot-required.pkgs).
    reboot_requested: bool = False
    #: The loader's configuration was written since the host booted (unknown: False): a
    #: staged line the running kernel lacks is then still to boot, not one it ignored.
    written_since_boot: bool = False


def read_facts(fs: HostFS, *, timeout: float) -> BootFacts:
    """The boot loader, its staged arguments and the running kernel's (may run grubby)."""
    loader = find_loader(fs)
    running = managed(split(fs.read_value(CMDLINE) or ""))
    release = fs.read_value(OSRELEASE)
    if not loader.writable:
        return BootFacts(loader, running, running=running, release=release)
    try:
        staged = read_args(fs, loader.target, timeout=timeout)
    except BootArgsError as err:
        return BootFacts(loader, None, str(err), running, release)
    since_boot = _written_since_boot(fs, loader)
    if loader.kind != "grub":
        return BootFacts(loader, staged, running=running, release=release,
                         written_since_boot=since_boot)
    effective, generated = _grub_cfg_args(fs)
    written = fs.modified(fs.in_root(GRUB_DROPIN) or GRUB_DROPIN) if staged else None
    stale = bool(staged) and not (effective or "").endswith(staged) and (
        generated is None or written is None or generated <= written)
    return BootFacts(loader, staged, running=running, release=release, effective=effective,
                     stale=stale, overridden_by=tuple(overriding(fs)),
                     written_since_boot=since_boot)


def overriding(fs: HostFS) -> list[str]:
    """The GRUB drop-ins sourced after kvtune's that set GRUB_CMDLINE_LINUX_DEFAULT afresh
    (without `$GRUB_CMDLINE_LINUX_DEFAULT`), dropping what kvtune's added."""
    directory = GRUB_DROPIN.rsplit("/", 1)[0]
    later = [name for name in fs.list_dir(directory)
             if name.endswith(".cfg") and name > GRUB_DROPIN.rsplit("/", 1)[1]]
    found = []
    for name in later:
        text = fs.read_file(f"{directory}/{name}") or ""
        if any(line.strip().startswith(f"{GRUB_VARIABLE}=")
               and f"${GRUB_VARIABLE}" not in line and "${" + GRUB_VARIABLE not in line
               for line in text.splitlines()):
            found.append(f"{directory}/{name}")
    return found


def _written_since_boot(fs: HostFS, loader: Loader) -> bool:
    """The files the loader boots from changed after the host booted (/proc/stat's btime)."""
    booted = fs.boot_time()
    paths = ([GRUB_DROPIN, *GRUB_CONFIGS] if loader.kind == "grub"
             else fs.glob(f"{BLS_ENTRIES}/*.conf"))
    times = [fs.modified(resolved) for path in paths
             if (resolved := fs.in_root(path)) is not None and fs.exists(resolved)]
    return booted is not None and any(time is not None and time > booted for time in times)
