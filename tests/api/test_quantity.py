"""Quantities read by the apiserver's grammar: what kvtune accepts, Kubernetes accepts, with the
same value; what Python's Decimal would also take ("2 Gi", "1_000", "٢Gi") is refused."""

from __future__ import annotations

import json
import typing as t
import uuid
from decimal import Decimal

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kvtune_api import quantity
from kvtune_api.quantity import QuantityError
from support.cluster import apply_crds

ACCEPTED: list[tuple[object, Decimal]] = [
    ("1Gi", Decimal(2**30)),
    ("512Mi", Decimal(512 * 2**20)),
    ("1500m", Decimal("1.5")),
    ("0", Decimal(0)),
    ("+1k", Decimal(1000)),
    ("-5Gi", Decimal(-5 * 2**30)),
    ("1.", Decimal(1)),
    (".5Ki", Decimal(512)),
    ("1e3", Decimal(1000)),
    ("1E-3", Decimal("0.001")),
    ("2.5e+2", Decimal(250)),
    ("100n", Decimal("1E-7")),
    ("3u", Decimal("0.000003")),
    ("1Ei", Decimal(2**60)),
    ("0.1n", Decimal("1E-9")),  # rounded up to 1n, as Go does
    ("9Ei", Decimal(2**63 - 1)),  # capped, as Go caps binary values
    (1024, Decimal(1024)),  # JSON numbers in a quantity field
    (1.5, Decimal("1.5")),
]

REFUSED: list[object] = [
    "2 Gi", " 2Gi", "2Gi ", "2Gi\n", "1_000", "1e3Mi", "\u0662Gi", "\uff12Gi", "1.2.3", "5Ki5",
    "NaN", "Infinity", "", ".", "+", "-", "1e", "1e1.5", "Gi", "1gi", "1KiB", "0x10", "1,5",
    "1" * 65, True, None, float("nan"), float("inf"), [1], {"v": 1},
]


@pytest.mark.parametrize(("value", "expected"), ACCEPTED, ids=[repr(v) for v, _ in ACCEPTED])
def test_a_quantity_is_read_as_kubernetes_reads_it(value: object, expected: Decimal) -> None:
    assert quantity.parse(value, "f") == expected


@pytest.mark.parametrize("value", REFUSED, ids=[repr(v)[:20] for v in REFUSED])
def test_what_is_no_quantity_is_refused_with_the_field_and_the_accepted_form(value: object) -> None:
    with pytest.raises(QuantityError) as refused:
        quantity.parse(value, "spec.domain.memory.guest")
    assert str(refused.value).startswith(f"spec.domain.memory.guest: {value!r} is not")
    assert "e.g. 8Gi" in str(refused.value)


def test_a_huge_exponent_costs_nothing_to_read() -> None:
    assert quantity.parse("1e999999999", "f") == 2**63 - 1
    assert quantity.parse("1e-999999999", "f") == Decimal("1E-9")


def test_bytes_are_rounded_up() -> None:
    assert quantity.parse_bytes("1500m", "f") == 2


# The apiserver as the judge: a CRD whose rule asks Go's own parser (CEL's isQuantity/quantity)
# whether each string is a quantity and whether it equals the value kvtune read.
PROBE_GROUP, PROBE_PLURAL = "quantityprobes.kvtune.test", "probes"
PROBE_CRD: dict[str, t.Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{PROBE_PLURAL}.{PROBE_GROUP}"},
    "spec": {
        "group": PROBE_GROUP,
        "scope": "Cluster",
        "names": {"plural": PROBE_PLURAL, "singular": "probe", "kind": "Probe"},
        "versions": [{
            "name": "v1", "served": True, "storage": True,
            "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {"spec": {
                    "type": "object",
                    "properties": {
                        "text": {"type": "string", "maxLength": 128},
                        "expected": {"type": "string", "maxLength": 128},
                    },
                    "x-kubernetes-validations": [
                        {"rule": "isQuantity(self.text)", "message": "not a quantity"},
                        {"rule": "!isQuantity(self.text) || "
                                 "quantity(self.text).compareTo(quantity(self.expected)) == 0",
                         "message": "another value"},
                    ],
                }},
            }},
        }],
    },
}


def _judged(api_client: client.ApiClient, text: str, expected: str) -> str:
    """"" when the apiserver's parser takes `text` as `expected`, else its message."""
    body: dict[str, t.Any] = {"apiVersion": f"{PROBE_GROUP}/v1", "kind": "Probe",
            "metadata": {"name": f"p-{uuid.uuid4().hex[:8]}"},
            "spec": {"text": text, "expected": expected}}
    objects = client.CustomObjectsApi(api_client)
    try:
        objects.create_cluster_custom_object(PROBE_GROUP, "v1", PROBE_PLURAL, body)
    except ApiException as e:
        return str(json.loads(e.body)["message"])
    objects.delete_cluster_custom_object(PROBE_GROUP, "v1", PROBE_PLURAL, body["metadata"]["name"])
    return ""


@pytest.fixture(scope="module")
def probe_crd(api_client: client.ApiClient) -> None:
    apply_crds(api_client, [PROBE_CRD])


@pytest.mark.usefixtures("probe_crd")
def test_every_quantity_kvtune_accepts_is_the_same_quantity_to_the_apiserver(
    api_client: client.ApiClient,
) -> None:
    strings = [(v, e) for v, e in ACCEPTED if isinstance(v, str) and abs(e) < 2**63 - 1]
    verdicts = {v: _judged(api_client, v, format(e, "f")) for v, e in strings}
    assert verdicts == dict.fromkeys(verdicts, "")


@pytest.mark.usefixtures("probe_crd")
def test_what_kvtune_refuses_beyond_go_s_quirks_the_apiserver_refuses_too(
    api_client: client.ApiClient,
) -> None:
    # Go's parser reads "." and "+" (and "-"), and a bare suffix ("Gi"), as 0 against its own
    # grammar; kvtune does not, being stricter than the apiserver, never looser.
    looser_in_go = {".", "+", "-", "Gi"}
    strings = [v for v in REFUSED if isinstance(v, str) and v and v not in looser_in_go
               and len(v) <= 64]
    verdicts = {v: _judged(api_client, v, "0") for v in strings}
    assert {v: m for v, m in verdicts.items() if "not a quantity" not in m} == {}
