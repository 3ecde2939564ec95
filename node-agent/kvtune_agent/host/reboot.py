"""kvtune's reboot request, through the flag file reboot daemons (kured, unattended-upgrades)
watch: asked for, and withdrawn leaving what other packages asked for.

kvtune never reboots a node itself; a NeedsReboot step stages its change and asks here.
"""

from __future__ import annotations

from .hostfs import HostFS

#: The conventional flag file that reboot daemons (kured, unattended-upgrades) watch, and the
#: list of packages that asked for the reboot beside it. Both are journaled like any change
#: (kind "reboot"), so that a revert withdraws the request and no daemon reboots a node for a
#: change already undone; /var/run is a tmpfs, so a reboot clears them anyway.
REBOOT_REQUIRED = "/var/run/reboot-required"
REBOOT_PKGS = f"{REBOOT_REQUIRED}.pkgs"
REBOOT_REQUIRED_TEXT = "*** System restart required (kvtune) ***\n"
#: The journal's step of the reboot request, however it was asked for.
REBOOT_STEP = "reboot-required"
#: kvtune's line in REBOOT_PKGS: withdrawing removes this line only.
REBOOT_PKG = "kvtune"

def request(fs: HostFS, value: str | None) -> None:
    """Request a reboot (`value` REBOOT_REQUIRED_TEXT), or withdraw kvtune's request, leaving
    the flag as `value` was before kvtune asked (None: absent). Raises HostWriteError.

    Only what kvtune added goes: other packages' lines in REBOOT_PKGS stay, and so does the
    flag while they are there (they still want the reboot) or when someone else had set it.

    kvtune's line in REBOOT_PKGS is what marks the request as kvtune's, so it is written before
    the flag and removed after it: a crash in between leaves the line without the flag (the next
    revert withdraws it) or the flag with the line, never a flag a revert would take for
    someone else's.
    """
    listed = fs.read_file(REBOOT_PKGS)
    others = [line for line in (listed or "").splitlines() if line and line != REBOOT_PKG]
    if value != REBOOT_REQUIRED_TEXT and REBOOT_PKG not in (listed or "").splitlines():
        # kvtune's request is gone already: /var/run is a tmpfs, so a reboot cleared it, and a
        # flag there now was set by someone else after it, who still wants the reboot. Or it
        # was never made: a crash came first, and may have left a temporary file.
        fs.remove_temporary(REBOOT_PKGS)
        fs.remove_temporary(REBOOT_REQUIRED)
        return
    if value == REBOOT_REQUIRED_TEXT:
        if REBOOT_PKG not in (listed or "").splitlines():
            fs.write_file(REBOOT_PKGS, "".join(f"{line}\n" for line in [*others, REBOOT_PKG]))
        if not fs.has_file(REBOOT_REQUIRED):
            fs.write_file(REBOOT_REQUIRED, value)
        return
    if value is not None:
        fs.write_file(REBOOT_REQUIRED, value)
    elif not others:
        fs.remove(REBOOT_REQUIRED)
    else:
        fs.remove_temporary(REBOOT_REQUIRED)  # the flag stays theirs; a crash's leftover goes
    if others:
        fs.write_file(REBOOT_PKGS, "".join(f"{line}\n" for line in others))
    else:
        fs.remove(REBOOT_PKGS)


def requested(fs: HostFS) -> bool:
    """kvtune's reboot request is in place: its line in REBOOT_PKGS (the flag alone may be
    another package's) and the flag (the line alone, a crash between the two)."""
    return (REBOOT_PKG in (fs.read_file(REBOOT_PKGS) or "").splitlines()
            and fs.has_file(REBOOT_REQUIRED))
