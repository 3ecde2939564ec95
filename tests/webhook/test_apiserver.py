"""The mutation's JSON patch, applied by a real kube-apiserver to a VMI under KubeVirt's schema.

Why: in production the apiserver, not our code, applies the patch an AdmissionReview returns, and
then checks the result against the CRD's schema. Sending the same patch to a stored VMI exercises
both: the RFC 6902 paths (escaped annotation keys, added parents, replaced values) and the
schema of the shaped VMI, with unknown fields refused (fieldValidation=Strict).
"""

from __future__ import annotations

import copy
import uuid

import pytest
from kubernetes import client
from kvtune_operator.webhook.vmi.mutate import mutate_vmi
from support.kubevirt import GROUP, VERSION

from webhook import Obj, make_profile, make_vmi

PLURAL = "virtualmachineinstances"
HUGE_1G = {"memory": {"hugepages": {"pages": [{"size": "1Gi", "count": 64}]}}}

CASES: dict[str, tuple[Obj, Obj]] = {
    "a plain VMI on a hugepage profile with NUMA passthrough": (
        make_vmi({"cpu": {"cores": 4}, "resources": {"requests": {"memory": "8Gi"}}}),
        {"vmi": {"hugepageSize": "1Gi", "numaPassthrough": True}, **HUGE_1G},
    ),
    "a VMI with its own annotations, nodeSelector and a small added overhead": (
        make_vmi(
            {
                "memory": {"guest": "2Gi", "reservedOverhead": {"addedOverhead": "64Mi"}},
                "devices": {"interfaces": [{"name": "vf", "sriov": {}}]},
                "resources": {"limits": {"cpu": "2"}},
            },
            annotations={"team": "db"},
            nodeSelector={"disk": "ssd"},
            networks=[{"name": "vf", "multus": {"networkName": "sriov-net"}}],
        ),
        {"memory": {"vmOverheadFloor": "3Gi"}},
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_the_apiserver_applies_the_patch_and_stores_the_shaped_vmi(
    case: str, api_client: client.ApiClient, kubevirt_crds: list[str], namespace: str
) -> None:
    vmi, profile = copy.deepcopy(CASES[case][0]), CASES[case][1]
    vmi["metadata"].update(name=f"vm-{uuid.uuid4().hex[:8]}", namespace=namespace)
    api = client.CustomObjectsApi(api_client)
    api.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, vmi, field_validation="Strict"
    )

    result = mutate_vmi(make_profile(**profile), vmi, namespace_labels={})
    stored: Obj = api.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        vmi["metadata"]["name"],
        result.patch,
        field_validation="Strict",
        # An AdmissionReview's patch is RFC 6902; the client would send a merge patch otherwise.
        _content_type="application/json-patch+json",
    )

    assert stored["spec"] == result.vmi["spec"]
    assert stored["metadata"]["annotations"] == result.vmi["metadata"]["annotations"]
