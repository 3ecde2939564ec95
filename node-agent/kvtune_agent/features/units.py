"""A step that brings a daemon's systemd unit to a state, shared by the features that manage a
daemon (KSM's ksmtuned, numad): the refusals (not installed, masked) are the same for every one."""

from __future__ import annotations

from kvtune_api.v1alpha1.host import DaemonReport

from ..host.systemd import UnitState
from .base import ConditionFeature, Draft


def unit_step(
    daemon: DaemonReport, want: UnitState, feature: ConditionFeature, step_id: str, why: str,
    field_name: str, out: Draft,
) -> None:
    """A step bringing a daemon's systemd unit to `want`, or a finding when that is impossible."""
    unit = f"{daemon.name}.service"
    now = UnitState(enabled=daemon.unit == "Enabled", active=daemon.running)
    if now == want:
        return
    if daemon.unit == "NotInstalled":
        if want.active:
            out.error(feature, f"{feature}NotInstalled", (
                f"{field_name} wants {daemon.name} running, but {unit} is not installed on the "
                f"host; install the {daemon.name} package, or set {field_name} to Unmanaged"))
        else:
            out.warn(feature, f"{feature}WithoutUnit", (
                f"{daemon.name} runs (pid {', '.join(map(str, daemon.pids))}) without a systemd "
                f"unit, so kvtune cannot stop it for good; stop it on the host by hand"))
        return
    if daemon.unit == "Masked" and want.active:
        out.error(feature, f"{feature}Masked", (
            f"{field_name} wants {daemon.name} running, but {unit} is masked "
            f"({daemon.unit_path} links to /dev/null) and kvtune does not undo an "
            f"administrator's mask: `systemctl unmask {unit}`, or set {field_name} to Unmanaged"))
        return
    out.step("unit", step_id, feature, unit, str(now), str(want), f"{why} ({want})")
