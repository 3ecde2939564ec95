"""Kubernetes resource quantities, read as the apiserver reads them and never more loosely.

Why: `kubernetes.utils.parse_quantity` hands the number to Python's Decimal, which also takes
"2 Gi", " 2Gi", "1_000", "1e3Mi", "NaN" and digits of other scripts ("٢Gi"). The webhook then
rewrote such a VMI into a valid one the user never wrote, and a profile's "1.2.3" reached code that
could not read it. This module is the one reader of quantities for the profile's fields (whose
CRD pattern is `PATTERN`, the same grammar) and for the VMI fields the webhook reads.

The grammar is k8s.io/apimachinery/pkg/api/resource's (quantity.go):

    <quantity>        ::= <signedNumber><suffix>
    <number>          ::= <digits> | <digits>.<digits> | <digits>. | .<digits>
    <signedNumber>    ::= <number> | <sign><number>
    <suffix>          ::= <binarySI> | <decimalExponent> | <decimalSI>
    <binarySI>        ::= Ki | Mi | Gi | Ti | Pi | Ei
    <decimalSI>       ::= n | u | m | "" | k | M | G | T | P | E
    <decimalExponent> ::= "e" <integer> | "E" <integer>

with ASCII digits only. Go's parser is a little looser than its own grammar (".", "+" and a
bare "Gi" read as 0); those are refused here, so whatever this module accepts, the apiserver
accepts too. As in Go, a value is rounded up (away from zero) to a multiple of 1n. Go caps only
binary-suffixed values at 2^63-1; here every value is, since nothing read through it (bytes,
CPUs) can exceed what Kubernetes' Quantity.Value() gives as an int64.
"""

from __future__ import annotations

import decimal
import math
import re
from decimal import Decimal

#: The grammar as one regular expression, in the dialect both Python's `re` and the apiserver's
#: RE2 read the same way (no look-arounds, `$` only at the end of the text).
PATTERN = (
    r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)"
    r"([KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?$"
)
#: What a person is told to write, in every refusal.
ACCEPTED_FORM = (
    "a Kubernetes quantity: ASCII digits with an optional fraction, then one suffix "
    "(Ki, Mi, Gi, Ti, Pi, Ei; n, u, m, k, M, G, T, P, E; or e and an integer exponent), "
    "without spaces or underscores, e.g. 8Gi, 512Mi or 1500m"
)
#: Longest quantity string taken: far above any real one (2^63-1 is 19 digits), and short
#: enough that CEL's cost estimate of a rule reading it stays small.
MAX_LENGTH = 64

_GRAMMAR = re.compile(PATTERN)
_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_MAX = Decimal(2**63 - 1)
_NANO = Decimal("1e-9")
#: Exponents beyond these give the cap or the smallest step whatever the digits, so a "1e999999999"
#: costs no more to read than "1e40".
_EXPONENT_RANGE = 64
#: Exact arithmetic for every value the grammar can spell within MAX_LENGTH characters.
_EXACT = decimal.Context(prec=200, Emax=10_000, Emin=-10_000, traps=[decimal.Overflow])


class QuantityError(ValueError):
    """A value that is not a Kubernetes quantity; the message names the field and the form."""


def parse(value: object, field: str) -> Decimal:
    """The number a quantity stands for, or QuantityError naming `field` and the accepted form.

    Integers and finite floats are taken as the apiserver takes a JSON number in a quantity field.
    """
    text = _text(value)
    match = _GRAMMAR.fullmatch(text) if len(text) <= MAX_LENGTH else None
    if match is None:
        raise QuantityError(f"{field}: {value!r} is not {ACCEPTED_FORM}")
    number, suffix = match.group(1), match.group(3) or ""
    sign = -1 if text.startswith("-") else 1
    with decimal.localcontext(_EXACT):
        amount = Decimal(number)
        if suffix in _BINARY:
            amount *= 2 ** _BINARY[suffix]
        else:
            exponent = _DECIMAL[suffix] if suffix in _DECIMAL else int(suffix[1:])
            exponent = max(-_EXPONENT_RANGE, min(_EXPONENT_RANGE, exponent))
            amount = amount.scaleb(exponent)
        if amount and amount % _NANO:
            amount = (amount / _NANO).to_integral_value(decimal.ROUND_CEILING) * _NANO
        return sign * min(amount, _MAX)


def parse_bytes(value: object, field: str) -> int:
    """A quantity in whole units, rounded up as Kubernetes' Quantity.Value() does."""
    return math.ceil(parse(value, field))


def _text(value: object) -> str:
    """The quantity's text; "" (refused by the grammar) for what is no quantity at all."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):  # a bool is an int to Python, never a quantity to Kubernetes
        return ""
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    return ""
