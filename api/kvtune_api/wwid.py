"""World wide ids in one form, so that one LUN seen through several identities is one LUN.

The kernel, udev, scsi_id and multipath each spell a LUN's id their own way. sysfs `device/wwid`
says `naa.600a0980...`; scsi_id, and so a multipath map's dm uuid (`mpath-3600a0980...`), put
the designator type of SCSI VPD page 0x83 in front as one digit (1 T10 vendor id, 2 EUI-64,
3 NAA, 8 SCSI name string); udev's by-id links say `wwn-0x600a0980...`. Compared as written, a
node probed before and after multipathd assembles its maps has two LUNs where it has one, and
two volumes let two VMs write it at once. The agent, the planner and the operator all compare
ids through `canonical_wwid`.
"""

from __future__ import annotations

import re

_HEX = re.compile(r"[0-9a-f]+")
#: Hex digits in an NAA (8 or 16 bytes) or EUI-64 (8, 12 or 16 bytes) designator.
_HEX_LENGTHS = frozenset({16, 24, 32})
#: scsi_id's --replace-whitespace turns each run of blanks into one "_"; the kernel keeps them.
_BLANKS = re.compile(r"[\s_]+")


def _is_hex(text: str) -> bool:
    return _HEX.fullmatch(text) is not None


def _t10(vendor_id: str) -> str:
    return "t10." + _BLANKS.sub("_", vendor_id).strip("_")


def canonical_wwid(wwid: str) -> str:
    """The one form of a world wide id: lower-case hex for an NAA or EUI-64 designator, written
    `naa.`, `eui.`, `0x`, `wwn-0x` or with scsi_id's type digit; `t10.` and the vendor id with
    each run of blanks as one "_" for a T10 designator; anything else lower-cased.

    The hex forms drop their label: a bare value (a selector's `600a...`, a map's uuid) does not
    say whether it is NAA or EUI-64, and two LUNs with one 64-128 bit value do not exist. If two
    ids ever did merge, the LUN would get fewer volumes, never more.
    """
    text = wwid.strip().lower().removeprefix("wwn-")
    for label in ("naa.", "eui.", "0x"):
        if text.startswith(label) and _is_hex(text[len(label):]):
            return text[len(label):]
    if text.startswith("t10."):
        return _t10(text[4:])
    if _is_hex(text) and len(text) in _HEX_LENGTHS:
        return text
    kind, value = text[:1], text[1:]
    if kind in ("2", "3") and _is_hex(value) and len(value) in _HEX_LENGTHS:
        return value
    if kind == "1" and value:
        return _t10(value)
    if kind == "8" and value:  # a SCSI name string: the kernel shows it without the digit
        return canonical_wwid(value)
    return text
