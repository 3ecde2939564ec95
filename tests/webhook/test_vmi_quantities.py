"""A VMI's quantities are read as the apiserver reads them: what Python's Decimal also takes is
refused naming the field and the accepted form, never rewritten into a valid VMI."""

from __future__ import annotations

import pytest
from kvtune_operator.webhook.vmi import validate_vmi
from kvtune_operator.webhook.vmi.mutate import mutate_vmi
from kvtune_operator.webhook.vmi.read import VmiFieldError

from webhook import Obj, make_profile, make_vmi

#: Each was once read by Decimal and written back as a valid quantity the user never gave.
LOOSE = ["2 Gi", " 2Gi", "2Gi ", "1_000Mi", "1e3Mi", "\u0662Gi", "\uff18Gi", "NaN", "Infinity"]
REQUEST = "spec.domain.resources.requests.memory"
#: (field given, where it is given, the field the refusal names). A guest size alone is copied to
#: the memory request by KubeVirt's defaulting, which the mutation replays; the refusal still
#: names the field the author wrote.
FIELDS: list[tuple[str, Obj, str]] = [
    (REQUEST, {"resources": {"requests": {"memory": "{}"}}}, REQUEST),
    ("spec.domain.memory.guest", {"memory": {"guest": "{}"}}, "spec.domain.memory.guest"),
    ("spec.domain.memory.guest",
     {"memory": {"guest": "{}"}, "resources": {"requests": {"memory": "8Gi"}}},
     "spec.domain.memory.guest"),
    # Without a CPU topology, the vCPUs come from the CPU request (copied to the limit by the
    # mutation's replay of KubeVirt's defaulting): the error names the field its author wrote.
    ("spec.domain.resources.requests.cpu",
     {"cpu": {}, "resources": {"requests": {"memory": "8Gi", "cpu": "{}"}}},
     "spec.domain.resources.requests.cpu"),
]


def _with(domain: Obj, value: str) -> Obj:
    """`domain` with its "{}" placeholder replaced by `value`."""
    def fill(node: object) -> object:
        if isinstance(node, dict):
            return {k: fill(v) for k, v in node.items()}
        return value if node == "{}" else node
    filled = fill(domain)
    assert isinstance(filled, dict)
    return {"cpu": {"cores": 2}, **filled}


@pytest.mark.parametrize("value", LOOSE)
@pytest.mark.parametrize(("given", "domain", "field"), FIELDS, ids=[
    "memory request", "guest alone", "guest and request", "cpu request"])
def test_a_quantity_kubernetes_would_not_parse_is_refused_naming_the_field(
    given: str, domain: Obj, field: str, value: str
) -> None:
    message = _refusal(make_vmi(_with(domain, value)))
    assert message.startswith(f"{field}: {value!r} is not a Kubernetes quantity")
    assert "without spaces or underscores, e.g. 8Gi" in message


def _refusal(vmi: Obj) -> str:
    """Why the webhook refuses `vmi`: the mutation's error (a 400), or else the validation's."""
    profile = make_profile()
    try:
        mutate_vmi(profile, vmi, namespace_labels={})
    except VmiFieldError as unreadable:
        return str(unreadable)
    errors, _ = validate_vmi(profile, vmi, namespace_labels={})
    return "; ".join(errors)
