"""How API-tier tests reach their cluster, and how they install CRDs into it.

Why: the same tests run against the local control plane started for the session and against an
existing cluster (`KVTUNE_TEST_KUBECONFIG`, e.g. kind), so they see the cluster only through
`ClusterAccess` and an `ApiClient`. CRDs are handled as plain dicts with `_preload_content=False`
because the typed CRD models of the kubernetes client add nothing here and choke on some
server-filled fields.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException


@dataclass(frozen=True)
class ClusterAccess:
    """Where the test cluster is and how to authenticate to it."""

    kubeconfig: Path
    server: str
    """The API server URL, e.g. https://127.0.0.1:41234."""
    token: str | None
    """An admin bearer token; None for an existing cluster, whose kubeconfig decides."""
    ca_file: Path | None
    """The CA of the API server's certificate; None for an existing cluster."""
    local: bool
    """True when started for this session (and thrown away after it)."""


def wait_for(
    condition: Callable[[], bool], what: str, timeout: float = 30.0, interval: float = 0.1
) -> None:
    """Polls `condition` every `interval` seconds until it holds; raises TimeoutError naming
    `what` otherwise."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(interval)


def is_gone(read: Callable[[], object]) -> bool:
    """True when `read` (e.g. `lambda: core.read_namespace(name)`) answers 404 Not Found."""
    try:
        read()
    except ApiException as e:
        if e.status == 404:
            return True
        raise
    return False


@contextlib.contextmanager
def fresh_namespace(api: client.ApiClient, prefix: str) -> Iterator[str]:
    """A namespace named `prefix` and a random suffix, deleted afterwards (without waiting)."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


def impersonating(kubeconfig: Path, user: str) -> client.ApiClient:
    """A client that acts as `user`, e.g. `system:serviceaccount:<ns>:<name>`, to test RBAC.

    The kubeconfig's user must be allowed to impersonate (an admin is). For a ServiceAccount the
    apiserver adds its groups (system:serviceaccounts, system:serviceaccounts:<ns>) itself."""
    api = config.new_client_from_config(config_file=str(kubeconfig))
    api.set_default_header("Impersonate-User", user)
    return api


def apply_crds(
    api: client.ApiClient,
    crds: Sequence[Mapping[str, Any]],
    *,
    owned_label: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> list[str]:
    """Creates or replaces each CRD, waits until all are Established, and returns their names.

    With `owned_label`, an existing CRD that lacks the label is left alone: on an existing cluster
    it belongs to a real installation (KubeVirt itself), which tests must not overwrite.
    """
    extensions = client.ApiextensionsV1Api(api)
    names = []
    for crd in crds:
        name = crd["metadata"]["name"]
        names.append(name)
        try:
            extensions.create_custom_resource_definition(body=crd, _preload_content=False)
            continue
        except ApiException as e:
            if e.status != 409:
                raise
        existing = _read_crd(extensions, name)
        labels = existing["metadata"].get("labels", {})
        if owned_label is not None and not owned_label.items() <= labels.items():
            continue
        body = copy.deepcopy(dict(crd))
        body["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
        extensions.replace_custom_resource_definition(name, body=body, _preload_content=False)
    for name in names:
        try:
            established = functools.partial(_established, extensions, name)
            wait_for(established, f"CRD {name} becoming Established", timeout)
        except TimeoutError as e:
            status = _read_crd(extensions, name).get("status") or {}
            raise TimeoutError(
                f"{e}; its conditions: {json.dumps(status.get('conditions'))}"
            ) from None
    return names


def _read_crd(extensions: client.ApiextensionsV1Api, name: str) -> dict[str, Any]:
    response = extensions.read_custom_resource_definition(name, _preload_content=False)
    crd: dict[str, Any] = json.loads(response.data)
    return crd


def _established(extensions: client.ApiextensionsV1Api, name: str) -> bool:
    conditions = (_read_crd(extensions, name).get("status") or {}).get("conditions") or []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)
