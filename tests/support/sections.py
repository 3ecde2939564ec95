"""The spec sections tests hand to the spec builders, typed, as the API stores them (camelCase).

Why: builders such as `agent.specs.node_spec`, `controller.builders.profile` and
`support.agent.Node.render` take a spec's sections as keyword arguments beside flags of their own
(`revert`, `paused`, ...). Typed as `**Unpack[...]` of these TypedDicts, a misspelt section is a
type error and a constant spread into a builder (`**ENFORCE`) is checked against the sections,
not against the flags. The sections' contents stay JSON: the API's models validate them.
"""

from __future__ import annotations

import typing as t

#: One section's JSON, e.g. {"ksm": "Disabled"} for memory.
Section = dict[str, t.Any]


class HostSections(t.TypedDict, total=False):
    """The host settings of a profile and of a node state (HostSettings)."""

    cpu: Section
    numa: Section
    memory: Section
    network: Section
    storage: Section
    boot: Section


class ProfileSections(HostSections, total=False):
    """A HypervisorProfile's spec: the host settings and the profile's own fields."""

    nodeSelector: Section
    mode: str
    paused: bool
    vmi: Section
    rollout: Section
