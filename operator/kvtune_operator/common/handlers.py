"""kopf handler functions that both kopf processes register, the operator
(`controller/handlers.py`) and the webhook (`webhook/handlers.py`): the login, and what the
in-memory indexes hold for each watched object. Plain functions; each module registers the ones
it needs.

Each index function returns {object name: one value}; `OneEach` reads such an index back as a
plain mapping.
"""

from __future__ import annotations

import dataclasses
import os
import typing as t
from collections.abc import Iterator, Mapping

import kopf

from .nodestate import StateView
from .profiles import Profile

V = t.TypeVar("V")

PROFILES = ("kvtune.io", "v1alpha1", "hypervisorprofiles")
STATES = ("kvtune.io", "v1alpha1", "hypervisornodestates")
NODES = ("", "v1", "nodes")
NAMESPACES = ("", "v1", "namespaces")
KUBEVIRTS = ("kubevirt.io", "v1", "kubevirts")


def login(**kwargs: t.Any) -> kopf.ConnectionInfo | None:
    # kopf's own client-library login reads $KUBECONFIG at import time; these read it now, and
    # the service account token anew whenever kopf re-authenticates after a 401.
    in_pod = kopf.login_with_service_account(**kwargs)
    if in_pod is not None:
        return _at_service_address(in_pod, os.environ)
    return kopf.login_with_kubeconfig(**kwargs)


def _at_service_address(
    info: kopf.ConnectionInfo, environ: Mapping[str, str]
) -> kopf.ConnectionInfo:
    """The API server at the address the kubelet puts in every pod's environment, as client-go's
    in-cluster config and the kubernetes client (kvtune's writes) reach it, instead of kopf's
    `https://kubernetes.default.svc`, which needs cluster DNS: an operator whose watches stop
    while CoreDNS is down (or on a cluster without it) would leave its node states stale."""
    host = environ.get("KUBERNETES_SERVICE_HOST")
    port = environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        return info
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    return dataclasses.replace(info, server=f"https://{host}:{port}")


def node_labels(name: str, labels: kopf.Labels, **_: t.Any) -> dict[str, dict[str, str]]:
    return {name: dict(labels)}


def node_states(body: kopf.Body, name: str, **_: t.Any) -> dict[str, StateView]:
    return {name: StateView.from_body(body)}


def profiles(body: kopf.Body, name: str, **_: t.Any) -> dict[str, Profile]:
    return {name: Profile.from_body(body)}


class OneEach(Mapping[str, V]):
    """A kopf index in which every key holds one value (its object's), read as a mapping.

    A view, not a copy: building a dict of every node for each admission would cost O(nodes)
    each time. It follows the watches as they change the index, so read it only where nothing
    awaits between the first read and the last (an admission decision does not)."""

    def __init__(self, index: kopf.Index[str, V]) -> None:
        self._index = index

    def __getitem__(self, key: str) -> V:
        for value in self._index[key]:
            return value
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)
