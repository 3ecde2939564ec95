"""Profiles and VMIs judged by KubeVirt's own code (`support.kubevirt_oracle`).

Each case names what must happen when the VMI is created with kvtune's and KubeVirt's webhooks
installed: KubeVirt admits the shaped VMI, or kvtune refuses it first with its own message (which
must name the field it quotes). The VMIs are ordinary and odd-but-valid shapes users write:
limits only, guest only, sockets/cores/threads, fractional CPUs, arm64, pre-set hugepages, what
KubeVirt's VM controller renders from an instancetype, explicit `false`s.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from kvtune_operator.common.profiles import Profile

from webhook import Obj, make_profile, make_vmi

RESERVED_OVERHEAD_GATE = "ReservedOverheadMemlock"


def dedicated_profile(size: str = "2Mi", **memory: Any) -> Profile:
    """The profile kvtune exists for: pinned CPUs, isolated emulator thread, hugepages, NUMA
    passthrough, no memory overcommit, a 1Gi overhead floor."""
    return make_profile(
        "pinned",
        vmi={
            "dedicatedCpus": True,
            "isolateEmulatorThread": True,
            "hugepageSize": size,
            "numaPassthrough": True,
        },
        memory={"hugepages": {"pages": [{"size": size, "count": 64}]}, **memory},
    )


def shared_profile(**memory: Any) -> Profile:
    """Shared CPUs without overcommit (requests = limits), no hugepages."""
    return make_profile(
        "shared", vmi={"dedicatedCpus": False, "isolateEmulatorThread": False}, memory=memory
    )


PROFILES = {
    "pinned-2Mi": dedicated_profile("2Mi"),
    "pinned-1Gi": dedicated_profile("1Gi"),
    "pinned-overcommit": dedicated_profile("2Mi", allowOvercommit=True),
    "shared": shared_profile(),
    "shared-overcommit": shared_profile(allowOvercommit=True),
}


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    profile: str
    vmi: Obj
    refused: str | None = None
    """None: KubeVirt must admit the shaped VMI. Else kvtune must refuse it, naming this text."""

    @property
    def id(self) -> str:
        return f"{self.profile}:{self.name}"


def resources(**kinds: Any) -> Obj:
    return {"resources": kinds}


def memory(request: str, **domain: Any) -> Obj:
    return {**domain, "resources": {"requests": {"memory": request}}}


PINNED = ("pinned-2Mi", "pinned-1Gi", "pinned-overcommit")
NO_MEMORY_OVERCOMMIT = ("pinned-2Mi", "pinned-1Gi", "shared")
INSTANCETYPE_ANNOTATIONS = {
    "kubevirt.io/cluster-instancetype-name": "u1.medium",
    "kubevirt.io/cluster-preference-name": "fedora",
}


@dataclasses.dataclass(frozen=True)
class Shape:
    name: str
    domain: Obj
    spec: Obj = dataclasses.field(default_factory=dict)
    refused: dict[str, str] = dataclasses.field(default_factory=dict)
    """Profile name -> the text kvtune's refusal must contain; others must be admitted."""
    annotations: dict[str, str] | None = None


def on(profiles: tuple[str, ...], text: str) -> dict[str, str]:
    return dict.fromkeys(profiles, text)


SHAPES = [
    Shape("no memory size", {}, refused=on(tuple(PROFILES), "no memory size")),
    Shape("no memory size but a zero limit", resources(limits={"memory": "0"}),
          refused=on(tuple(PROFILES), "no memory size")),
    Shape("memory request", memory("1Gi")),
    Shape("large memory request", memory("64Gi")),
    Shape("memory limit only", resources(limits={"memory": "2Gi"})),
    Shape("cpu and memory limits only", resources(limits={"memory": "2Gi", "cpu": "2"})),
    Shape("guest only", {"memory": {"guest": "4Gi"}}),
    Shape("guest below request", memory("2Gi", memory={"guest": "1Gi"})),
    Shape("sockets cores threads", memory("2Gi", cpu={"sockets": 2, "cores": 2, "threads": 2})),
    Shape("four threads", memory("2Gi", cpu={"cores": 1, "threads": 4}),
          refused=on(PINNED, "spec.domain.cpu.threads")),
    Shape("fractional cpu request", resources(requests={"memory": "1Gi", "cpu": "500m"}),
          refused=on(PINNED, "spec.domain.resources.requests.cpu")),
    Shape("fractional cpu limit", resources(limits={"memory": "1Gi", "cpu": "1500m"}),
          refused=on(PINNED, "cpu is 1500m")),
    Shape("cpu request unlike cores",
          {"cpu": {"cores": 4}, **resources(requests={"memory": "1Gi", "cpu": "2"})},
          refused=on(PINNED, "spec.domain.resources.requests.cpu")),
    Shape("cpu request equal to cores",
          {"cpu": {"cores": 2}, **resources(requests={"memory": "1Gi", "cpu": "2"})}),
    Shape("arm64", memory("1Gi"), {"architecture": "arm64"}),
    Shape("arm64 with two threads", memory("1Gi", cpu={"cores": 1, "threads": 2}),
          {"architecture": "arm64"}, refused=on(PINNED, "spec.domain.cpu.threads")),
    Shape("explicit dedicated false", memory("1Gi", cpu={"dedicatedCpuPlacement": False}),
          refused=on(PINNED, "spec.domain.cpu.dedicatedCpuPlacement")),
    Shape("explicit isolate false", memory("1Gi", cpu={"isolateEmulatorThread": False}),
          refused=on(PINNED, "spec.domain.cpu.isolateEmulatorThread")),
    Shape("pre-set 1Gi hugepages", memory("2Gi", memory={"hugepages": {"pageSize": "1Gi"}}),
          refused=on(("pinned-2Mi", "pinned-overcommit"), "spec.domain.memory.hugepages.pageSize")),
    Shape("unequal memory request and limit",
          resources(requests={"memory": "1Gi"}, limits={"memory": "3Gi"}),
          refused=on(("pinned-2Mi", "pinned-1Gi", "pinned-overcommit", "shared"),
                     "spec.domain.resources.requests.memory")),
    Shape("guest overhead overcommitted",
          resources(requests={"memory": "1Gi"}, overcommitGuestOverhead=True),
          refused=on(NO_MEMORY_OVERCOMMIT, "spec.domain.resources.overcommitGuestOverhead")),
    Shape("decimal memory", memory("1G"), refused=on(PINNED, "hugepages")),
    Shape("sriov interface",
          memory("2Gi", devices={"interfaces": [{"name": "vf", "sriov": {}}]}),
          {"networks": [{"name": "vf", "multus": {"networkName": "sriov-net"}}]}),
    Shape("tpm and exec probe", memory("1Gi", devices={"tpm": {}}),
          {"readinessProbe": {"exec": {"command": ["true"]}}}),
    Shape("instancetype rendered",
          {"cpu": {"sockets": 1, "cores": 1, "threads": 1}, "memory": {"guest": "4Gi"}},
          annotations=INSTANCETYPE_ANNOTATIONS),
    Shape("added overhead already set",
          memory("1Gi", memory={"reservedOverhead": {"addedOverhead": "2Gi"}})),
    # Hugepages the profile adds: a request off the page boundary is rounded up to whole pages;
    # a guest that is not whole pages is refused quoting the author's field and value.
    Shape("memory request off the 1Gi page boundary", memory("2560Mi", memory={"guest": "2Gi"})),
    Shape("guest off the 1Gi page boundary", {"memory": {"guest": "2560Mi"}},
          refused=on(("pinned-1Gi",), "spec.domain.memory.guest (2560Mi)")),
    Shape("request alone off the 1Gi page boundary", memory("2560Mi"),
          refused=on(("pinned-1Gi",), "spec.domain.resources.requests.memory (2560Mi)")),
    # A zero memory request is none to KubeVirt's admitter (the ReservedOverheadMemlock config
    # once refused it).
    Shape("zero memory request",
          {"memory": {"guest": "2Gi"}, **resources(requests={"memory": "0"})}),
    Shape("zero memory request with a limit",
          resources(requests={"memory": "0"}, limits={"memory": "2Gi"})),
    # Overcommitted memory: refused where the profile forbids it; admitted elsewhere, also with
    # vmRolloutStrategy: Stage, where KubeVirt refuses a guest above the memory limit.
    Shape("guest above the request", memory("1Gi", memory={"guest": "2Gi"}),
          refused=on(NO_MEMORY_OVERCOMMIT, "is above the memory request")),
    # A zero limit is none to KubeVirt too, also under Stage's guest-above-limit check; in any
    # unit, and with a request beside it that kvtune may raise.
    Shape("zero memory limit in Gi under a guest above the request",
          {"memory": {"guest": "2Gi"}, **resources(requests={"memory": "1Gi"},
                                                    limits={"memory": "0Gi"})},
          refused=on(NO_MEMORY_OVERCOMMIT, "is above the memory request")),
    Shape("zero memory limit beside a request",
          {"memory": {"guest": "2Gi"}, **resources(requests={"memory": "2Gi"},
                                                    limits={"memory": "0M"})}),
]


def cases() -> list[Case]:
    return [
        Case(
            shape.name,
            profile,
            make_vmi(shape.domain, annotations=shape.annotations, **shape.spec),
            shape.refused.get(profile),
        )
        for profile in PROFILES
        for shape in SHAPES
    ]
