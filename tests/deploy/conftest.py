"""Fixtures of the deploy tests: the rendered installation, and that installation's cluster-wide
parts applied for real to the session's cluster (kubectl itself comes from ../conftest.py).

Applied for real, not dry-run: the Namespace, the CRDs, the RBAC and the admission policy. The
RBAC and policy tests need them in force, and a server-side dry-run of a custom resource (the
kopf peering object) or of objects in a new namespace fails while its CRD or namespace exist only
in the same dry-run. The operator's Deployment and Service are only ever dry-run here: nothing
would run them (there is no kubelet), and on an existing cluster they would start an operator.
"""

from __future__ import annotations

from typing import Any

import pytest

from deploy.kubectl import DEPLOY, Kubectl, of_kind

#: Everything but the workload: what test_rbac and test_agent_policy need in force.
CLUSTER_SETUP_KINDS = (
    "Namespace",
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
)


@pytest.fixture(scope="session")
def installation(kubectl_binary: Kubectl) -> list[dict[str, Any]]:
    """`kubectl kustomize deploy/default`: the objects of the whole installation."""
    return kubectl_binary.render(DEPLOY / "default")


@pytest.fixture(scope="session")
def installed(kubectl: Kubectl, installation: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The installation's CRDs, namespace, RBAC and admission policy, applied and in force."""
    crds = of_kind(installation, "CustomResourceDefinition")
    kubectl.apply(crds, "--server-side", "--force-conflicts")
    kubectl.run(
        "wait", "--for=condition=Established", "--timeout=60s",
        *(f"crd/{crd['metadata']['name']}" for crd in crds),
    )
    kubectl.apply(of_kind(installation, *CLUSTER_SETUP_KINDS), "--server-side", "--force-conflicts")
    return installation
