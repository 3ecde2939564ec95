"""The node's VMsCompliant condition, derived from its VM audit.

One condition type rather than one per rule, because what a person needs from `kubectl get` is
whether the VMs on a node got what was promised, and if not, which ones and why; the audit in
status.vms holds the detail. Unreachable VMs make the answer Unknown rather than True: the audit
cannot vouch for what it could not see.
"""

from __future__ import annotations

from kvtune_api import conditions
from kvtune_api.v1alpha1.audit import NodeVmAudit, VmAudit
from kvtune_api.v1alpha1.common import Condition

VMS_COMPLIANT = "VMsCompliant"
#: VMs named in the message; the audit lists the rest.
NAMED = 3


def _named(vms: list[VmAudit], why: str) -> str:
    shown = [f"{vm.namespace}/{vm.name}" if vm.namespace else vm.name for vm in vms[:NAMED]]
    more = f" and {len(vms) - NAMED} more" if len(vms) > NAMED else ""
    return f"{', '.join(shown)}{more} ({why})"


def vms_condition(audit: NodeVmAudit, generation: int | None = None) -> Condition:
    """VMsCompliant: True when every running VM was inspected and none breaks a promise."""
    violating = [vm for vm in audit.items if vm.state == "Violation"]
    unreachable = [vm for vm in audit.items if vm.state == "Unreachable"]
    node = [f.message for f in audit.findings if f.severity == "Violation"]
    if audit.violations or node:
        parts = []
        if violating:
            first = violating[0].findings[0].message if violating[0].findings else ""
            parts.append(
                f"{audit.violations} of {audit.vms} VMs do not get the isolation the "
                f"profile promises: {_named(violating, first)}"
            )
        parts += node
        return conditions.make(VMS_COMPLIANT, "False", "Violations", "; ".join(parts), generation)
    if audit.unreachable:
        first = (unreachable[0].error or "") if unreachable else ""
        return conditions.make(
            VMS_COMPLIANT,
            "Unknown",
            "Unreachable",
            f"{audit.unreachable} of {audit.vms} VMs could not be inspected: "
            f"{_named(unreachable, first)}",
            generation,
        )
    if not audit.vms:
        return conditions.make(VMS_COMPLIANT, "True", "NoVMs", "no running VMs", generation)
    return conditions.make(
        VMS_COMPLIANT,
        "True",
        "Compliant",
        f"all {audit.vms} running VMs get the isolation the profile promises",
        generation,
    )
