"""The Kubernetes client both processes build: how each finds its API server, and reading an
object that may be gone.

Why shared: the operator and the webhook reach the same API server the same way (in a pod, its
service account; else $KUBECONFIG) and each treats a missing object as an answer, not an error.
What each process then calls is its own `kube` module (`controller.kube`, `webhook.kube`), so
each process's RBAC (deploy/base/*-rbac.yaml) follows one module.
"""

from __future__ import annotations

import os
import typing as t

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException


def api_client(connections: int = 16) -> client.ApiClient:
    """A client for the cluster this process runs in, else the one $KUBECONFIG names.

    `connections` sizes the HTTP connection pool to the number of writes in flight at once.
    """
    cfg = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=cfg)
    except config.ConfigException:
        # Read $KUBECONFIG now: the client library reads it once, at import time.
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"), client_configuration=cfg)
    cfg.connection_pool_maxsize = connections
    return client.ApiClient(cfg)


def unless_missing(read: t.Callable[[], t.Any]) -> t.Any:
    """What `read` returns; None when the object does not exist (404)."""
    try:
        return read()
    except ApiException as err:
        if err.status == 404:
            return None
        raise
