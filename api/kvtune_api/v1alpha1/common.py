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

from .. import quantity as _quantity


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

class Rules:
    """CEL rules on a field's own schema (`x-kubernetes-validations`), as Annotated metadata.

    A rule on the field itself is reported at the field's path, and it is checked even when a
    sibling field is invalid, which a rule on the enclosing object would not always be.
    """

    def __init__(self, *rules: tuple[str, str]) -> None:
        self.rules = [{"rule": r, "message": m} for r, m in rules]

    def __get_pydantic_json_schema__(
        self, core_schema: t.Any, handler: pydantic.GetJsonSchemaHandler
    ) -> t.Any:
        schema = handler(core_schema)
        schema.setdefault("x-kubernetes-validations", []).extend(self.rules)
        return schema


def spelled(pattern: str, form: str) -> Rules:
    """The CEL twin of a string field's `pattern`, whose message says `form`.

    The apiserver reports a pattern mismatch with the bare regular expression; the rule, checked
    beside it (a mismatch does not stop CEL), tells a person what to write instead.
    """
    literal = pattern.replace("\\", "\\\\").replace("'", "\\'")
    return Rules((f"self.matches('{literal}')", form))


#: A Kubernetes resource quantity such as `1Gi` or `512Mi`: the apiserver's own grammar
#: (`kvtune_api.quantity`), so that what the schema lets in, the code can read.
Quantity = t.Annotated[
    str,
    Field(pattern=_quantity.PATTERN, max_length=_quantity.MAX_LENGTH),
    spelled(_quantity.PATTERN, f"must be {_quantity.ACCEPTED_FORM}"),
]


def _not_negative(value: str) -> str:
    if _quantity.parse(value, "quantity") < 0:
        raise ValueError(f"{value!r} is negative: a size is 0 or more")
    return value


#: A quantity that is a size: never negative (a negative floor or headroom would turn the
#: reservation off without a word). The schema refuses it through CEL's own quantity parser.
Size = t.Annotated[
    Quantity,
    Rules(("!isQuantity(self) || quantity(self).compareTo(quantity('0')) >= 0",
           "a size must not be negative: write e.g. 4Gi, or 0")),
    pydantic.AfterValidator(_not_negative),
]


def quantity_at_most(field: str, maximum: str, fix: str) -> tuple[str, str, str]:
    """A CEL rule (for `cel`) bounding the quantity `field` of the model from above.

    Only a rule can compare quantities (`1Ti` and `1099511627776` are one size); it reads the
    field only where it is a quantity, so a malformed one gets the pattern's error alone.
    """
    rule = (
        f"!has(self.{field}) || !isQuantity(self.{field}) || "
        f"quantity(self.{field}).compareTo(quantity('{maximum}')) <= 0"
    )
    return rule, f"may be at most {maximum}: {fix}", f".{field}"


HugepageSize = t.Literal["2Mi", "1Gi"]


def cel(*rules: tuple[str, str] | tuple[str, str, str]) -> ConfigDict:
    """Model config carrying CEL validation rules as (rule, message) or (rule, message, field)
    triples.

    Messages name the field and the fix, because they are what `kubectl apply` prints; a rule
    about one field names it as its fieldPath (e.g. ".minSize"), so the apiserver reports the
    error at that field rather than at the object holding it.
    """
    validations: list[pydantic.JsonValue] = [_rule(*r) for r in rules]
    return ConfigDict(json_schema_extra={"x-kubernetes-validations": validations})


def _rule(rule: str, message: str, field: str = "") -> pydantic.JsonValue:
    return {"rule": rule, "message": message, **({"fieldPath": field} if field else {})}


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


#: A label key as Kubernetes validates it (IsQualifiedName): an optional DNS subdomain prefix of
#: at most 253 characters and "/", then a name of at most 63 alphanumerics, "-", "_" and ".",
#: beginning and ending with an alphanumeric.
LABEL_KEY_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
#: A label value as Kubernetes validates it (IsValidLabelValue): empty, or a name as above.
LABEL_VALUE_PATTERN = r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$"
#: Longest label key: a 253-character prefix, "/" and a 63-character name.
LABEL_KEY_MAX = 317
#: Longest prefix (a DNS subdomain): the pattern cannot count it, so a rule does.
LABEL_PREFIX_MAX = 253
LABEL_KEY_FORM = (
    "a label key is an optional DNS subdomain prefix and '/', then at most 63 letters, "
    "digits, '-', '_' or '.', beginning and ending with a letter or digit, e.g. "
    "kubernetes.io/hostname or pool"
)
#: CEL: the key `k` has no prefix or one of at most LABEL_PREFIX_MAX characters.
_PREFIX_FITS = f"{{k}}.indexOf('/') <= {LABEL_PREFIX_MAX}"


def _prefix_fits(key: str) -> str:
    if key.find("/") > LABEL_PREFIX_MAX:
        raise ValueError(f"{key[:40]!r}...: {LABEL_KEY_FORM} (a prefix of at most "
                         f"{LABEL_PREFIX_MAX} characters)")
    return key

LABEL_VALUE_FORM = (
    "a label value is empty or at most 63 letters, digits, '-', '_' or '.', beginning and "
    "ending with a letter or digit, e.g. vms"
)
LabelKey = t.Annotated[
    str,
    Field(min_length=1, max_length=LABEL_KEY_MAX, pattern=LABEL_KEY_PATTERN),
    spelled(LABEL_KEY_PATTERN, LABEL_KEY_FORM),
    Rules((_PREFIX_FITS.format(k="self"),
           f"{LABEL_KEY_FORM}; the prefix is at most {LABEL_PREFIX_MAX} characters")),
    pydantic.AfterValidator(_prefix_fits),
]
LabelValue = t.Annotated[
    str,
    Field(max_length=63, pattern=LABEL_VALUE_PATTERN),
    spelled(LABEL_VALUE_PATTERN, LABEL_VALUE_FORM),
]
#: Bounds a selector needs no more than: they keep each profile small and CEL's cost low.
MAX_SELECTOR_TERMS = 32
MAX_SELECTOR_VALUES = 64


class LabelSelectorRequirement(BaseModel):
    """One expression of a Kubernetes label selector."""

    model_config = cel(
        (
            "!(self.operator in ['In', 'NotIn']) || (has(self.values) && size(self.values) > 0)",
            "matchExpressions: operator In and NotIn need at least one value in values",
        ),
        (
            "!(self.operator in ['Exists', 'DoesNotExist']) || "
            "!has(self.values) || size(self.values) == 0",
            "matchExpressions: operator Exists and DoesNotExist take no values: remove values",
        ),
    )

    key: LabelKey = Field(description="The label key the expression applies to.")
    operator: t.Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="How the key relates to the values."
    )
    values: list[LabelValue] = Field(
        default_factory=list,
        max_length=MAX_SELECTOR_VALUES,
        description="Values for In and NotIn; must be empty for Exists and DoesNotExist.",
    )


class LabelSelector(BaseModel):
    """A standard Kubernetes label selector (matchLabels AND matchExpressions)."""

    model_config = cel(
        (
            "!has(self.matchLabels) || self.matchLabels.all(k, k.matches('"
            + LABEL_KEY_PATTERN.replace("\\", "\\\\")
            + "') && size(k) <= " + str(LABEL_KEY_MAX) + " && "
            + _PREFIX_FITS.format(k="k") + ")",
            f"matchLabels: a key is not a label key: {LABEL_KEY_FORM}",
        ),
    )

    match_labels: dict[str, LabelValue] = Field(
        default_factory=dict,
        max_length=MAX_SELECTOR_TERMS,
        description="Labels that must all be present with these values.",
    )
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list,
        max_length=MAX_SELECTOR_TERMS,
        description="Expressions that must all hold.",
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
