"""Which NICs a profile's selector picks: shared by SR-IOV (the PFs whose VFs it sets) and
macvtap (which refuses a PF whose VFs SR-IOV manages), so the two never disagree."""

from __future__ import annotations

import typing as t

from kvtune_api.v1alpha1.host import Nic

if t.TYPE_CHECKING:
    from kvtune_api.v1alpha1.profile import PfSelector


def selects(selector: PfSelector, nic: Nic) -> bool:
    """All criteria the selector gives must match."""
    return all((
        not selector.names or nic.name in selector.names,
        not selector.pci_addresses or nic.pci_address in selector.pci_addresses,
        selector.vendor is None or (nic.vendor_id or "").lower() == selector.vendor,
        selector.device is None or (nic.device_id or "").lower() == selector.device,
    ))
