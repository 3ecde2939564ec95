"""kopf wiring of `kvtune webhook`: the indexes an admission reads, in a registry of its own,
and `serve`, which runs them beside the HTTPS server (`server.py`).

Why a registry and process apart from the operator's: every webhook replica must answer, while
kopf peering pauses all operator replicas but one, and a paused kopf stops filling its indexes.
This registry has no handler that writes (indexes and one event handler), so kopf runs it
standalone, without peering, and any number of replicas serve side by side.
"""

from __future__ import annotations

import asyncio
import typing as t

import kopf

from ..common import handlers as shared
from ..common import kopf_toggles
from ..common.handlers import KUBEVIRTS, NAMESPACES, NODES, PROFILES, STATES, OneEach
from . import admission
from .configuration import check, tls_source
from .kube import Kube
from .server import AdmissionServer
from .settings import WebhookSettings
from .vmi import DEFAULT_KUBEVIRT, KubeVirtConfig, NodeCapacity

REGISTRY = kopf.OperatorRegistry()

login = kopf.on.login(registry=REGISTRY)(shared.login)
profiles = kopf.index(*PROFILES, registry=REGISTRY)(shared.profiles)
node_labels = kopf.index(*NODES, registry=REGISTRY)(shared.node_labels)
node_states = kopf.index(*STATES, registry=REGISTRY)(shared.node_states)


@kopf.index(*NODES, registry=REGISTRY)
def node_allocatable(name: str, status: kopf.Status, **_: t.Any) -> dict[str, NodeCapacity]:
    return {name: admission.node_capacity(name, status.get("allocatable") or {})}


@kopf.index(*NAMESPACES, registry=REGISTRY)
def namespace_labels(name: str, labels: kopf.Labels, **_: t.Any) -> dict[str, dict[str, str]]:
    return {name: dict(labels)}


@kopf.index(*KUBEVIRTS, registry=REGISTRY)
def kubevirt_config(
    spec: kopf.Spec, status: kopf.Status, **_: t.Any
) -> dict[str, KubeVirtConfig]:
    # Without KubeVirt's CRD kopf warns that it cannot watch kubevirts and indexes nothing (a
    # default install is assumed), without holding anything up; it starts indexing when the CRD
    # appears. One KubeVirt CR per cluster: all of them share one key.
    return {"kubevirt": KubeVirtConfig.from_kubevirt(spec, status)}


@kopf.on.startup(registry=REGISTRY)
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **indexes: t.Any) -> None:
    # The webhook only reads: no Events to post (its ServiceAccount may not), no state to keep.
    settings.posting.enabled = False
    # kopf hands startup handlers the very index objects the watches fill later.
    memo["indexes"].update(indexes)


# The `default` namespace always exists (the apiserver recreates it), so this runs once at start
# and on its rare changes, instead of logging a line for every namespace.
@kopf.on.event(*NAMESPACES, field="metadata.name", value="default", registry=REGISTRY)
async def indexed(memo: kopf.Memo, **_: t.Any) -> None:
    # kopf delivers events to handlers only after every index has listed the cluster.
    memo["indexed"].set()


def cluster_view(indexes: t.Mapping[str, t.Any]) -> admission.ClusterView:
    """The indexes as an admission reads them; a view, built in O(1) per call."""
    return admission.ClusterView(
        profiles=OneEach(indexes["profiles"]),
        node_labels=OneEach(indexes["node_labels"]),
        node_states=OneEach(indexes["node_states"]),
        allocatable=OneEach(indexes["node_allocatable"]),
        kubevirt=OneEach(indexes["kubevirt_config"]).get("kubevirt", DEFAULT_KUBEVIRT),
    )


async def serve(
    settings: WebhookSettings,
    kube: Kube,
    *,
    liveness: str | None = None,
    stop_flag: t.Any = None,
    ready_flag: t.Any = None,
    listening: t.Callable[[str], None] | None = None,
) -> None:
    """Run the webhook until stopped (a signal, or `stop_flag`); an error of either half stops
    both. `listening` is called with the webhook's URL once it listens and is published."""
    check(settings)
    kopf_toggles.install()  # it indexes every node, as the operator does
    indexes: dict[str, t.Any] = {}
    memo = kopf.Memo(indexes=indexes, indexed=asyncio.Event())

    def labels(namespace: str) -> t.Mapping[str, str] | None:
        index = indexes.get("namespace_labels")
        return OneEach(index).get(namespace) if index is not None else None

    server = AdmissionServer(settings, tls_source(settings, kube), kube,
                             lambda: cluster_view(indexes), labels, listening)
    watching = asyncio.create_task(kopf.operator(
        registry=REGISTRY, memo=memo, clusterwide=True, standalone=True,
        liveness_endpoint=liveness, stop_flag=stop_flag, ready_flag=ready_flag))
    serving = asyncio.create_task(server.serve(memo["indexed"]))
    try:
        done, _ = await asyncio.wait({watching, serving}, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
    finally:
        for task in (watching, serving):
            task.cancel()
        await asyncio.gather(watching, serving, return_exceptions=True)

