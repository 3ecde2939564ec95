"""Building blocks shared by both kinds: selectors, conditions, quantities, CEL rules.

Every model derives from `BaseModel` here: pydantic's, with the camelCase names Kubernetes uses
for snake_case attributes. The kinds' roots derive from kube_custom_resource's CustomResource
(`resource.py`), which turns the models into structural CRD schemas; this module does not
import kube_custom_resource, because the node agent's probe loads these models on every run and
that library cost `kvtune probe` about 10 ms of its whole run (bench/probe_bench.py).
"""

from __future__ import annotations

import datetime
import typing as t

import pydantic
from pydantic import ConfigDict, Field
from pydantic.alias_generators import to_camel


class BaseModel(pydantic.BaseModel):
    """A model of the API: camelCase on the wire, snake_case in Python, checked on assignment.

    The same settings as kube_custom_resource's BaseModel, which the kinds' roots derive from:
    both names are accepted, dumps use the camelCase names, and an assignment is validated like
    the constructor's arguments. Its schema hook for models with `extra="allow"`
    (x-kubernetes-preserve-unknown-fields) is not carried over: no model of the API allows
    unknown fields, and the CRD test would show the schema change if one did.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        validate_assignment=True,
    )


class _Nullable:
    """kube_custom_resource's Nullable, imported only when a JSON schema is generated.

    It renders an optional field as its type with `nullable: true`, instead of the `anyOf` with
    null that a structural schema does not allow.
    """

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: t.Any, handler: pydantic.GetJsonSchemaHandler
    ) -> t.Any:
        from kube_custom_resource.schema import Nullable

        return Nullable.__get_pydantic_json_schema__(core_schema, handler)


T = t.TypeVar("T")
#: A field that may be absent; rendered as `nullable: true` instead of an `anyOf` with null,
#: which a structural schema does not allow.
Opt = t.Annotated[T | None, _Nullable]

#: A Kubernetes resource quantity such as `1Gi` or `512Mi` (the apiserver's own grammar).
QUANTITY_PATTERN = (
    r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
)
Quantity = t.Annotated[str, Field(pattern=QUANTITY_PATTERN)]

HugepageSize = t.Literal["2Mi", "1Gi"]

#: A count or a percentage (e.g. 1 or "10%"), kept as given so `1` stays an integer in the API.
IntOrString = t.Annotated[
    int | str, pydantic.WithJsonSchema({"x-kubernetes-int-or-string": True})
]


def cel(*rules: tuple[str, str]) -> ConfigDict:
    """Model config carrying CEL validation rules as (rule, message) pairs.

    Messages name the field and the fix, because they are what `kubectl apply` prints.
    """
    return ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [{"rule": r, "message": m} for r, m in rules]
        }
    )


def section(model: type[T], description: str) -> t.Any:
    """A sub-object that is always present, defaulted in the CRD schema to its full default value.

    The apiserver applies nested defaults only inside objects that exist, so an omitted section
    must itself have a default for its fields' defaults (e.g. KSM Disabled) to show up in the
    stored object, where `kubectl get -o yaml` and GitOps diffs can see them. The default is the
    whole defaulted section rather than `{}` because the apiserver checks a default against the
    section's CEL rules without defaulting inside it first.
    """
    default = model().model_dump(exclude_none=True, mode="json")  # type: ignore[attr-defined]
    return Field(
        default_factory=model,
        description=description,
        json_schema_extra={"default": default},
    )


class LabelSelectorRequirement(BaseModel):
    """One expression of a Kubernetes label selector."""

    key: str = Field(description="The label key the expression applies to.", min_length=1)
    operator: t.Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="How the key relates to the values."
    )
    values: list[str] = Field(
        default_factory=list,
        description="Values for In and NotIn; must be empty for Exists and DoesNotExist.",
    )


class LabelSelector(BaseModel):
    """A standard Kubernetes label selector (matchLabels AND matchExpressions)."""

    match_labels: dict[str, str] = Field(
        default_factory=dict, description="Labels that must all be present with these values."
    )
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, description="Expressions that must all hold."
    )

    def matches(self, labels: t.Mapping[str, str]) -> bool:
        """Whether an object with these labels is selected (an empty selector selects all)."""
        if any(labels.get(k) != v for k, v in self.match_labels.items()):
            return False
        return all(_requirement_holds(r, labels) for r in self.match_expressions)


def _requirement_holds(req: LabelSelectorRequirement, labels: t.Mapping[str, str]) -> bool:
    # Semantics of k8s.io/apimachinery/pkg/labels: NotIn and DoesNotExist hold for absent keys.
    present = req.key in labels
    if req.operator == "In":
        return present and labels[req.key] in req.values
    if req.operator == "NotIn":
        return not present or labels[req.key] not in req.values
    if req.operator == "Exists":
        return present
    return not present


ConditionStatus = t.Literal["True", "False", "Unknown"]


class Condition(BaseModel):
    """A standard metav1.Condition."""

    type: str = Field(description="Condition type, e.g. Ready, Degraded, Hugepages.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(description="A CamelCase word a machine can match on.")
    message: str = Field(default="", description="What happened and what to do, for a person.")
    last_transition_time: Opt[datetime.datetime] = Field(
        default=None, description="When status last changed (not when the message changed)."
    )
    observed_generation: Opt[int] = Field(
        default=None, description="The spec generation this condition was computed from."
    )
