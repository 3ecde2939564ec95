"""The root model of each kind: kube_custom_resource's CustomResource, which renders the CRD.

Apart from common.py so that the host report's models, which the probe loads on every run, do
not import kube_custom_resource (bench/probe_bench.py).
"""

from __future__ import annotations

import typing as t

import kube_custom_resource
from kube_custom_resource import Scope

from .common import BaseModel

if t.TYPE_CHECKING:
    # kube_custom_resource ships no type annotations; mypy sees a plain pydantic model, while at
    # run time its class adds camelCase aliases and the CRD schema output.
    class CustomResource(BaseModel):
        metadata: t.Any

        def __init_subclass__(cls, **kwargs: t.Any) -> None: ...

else:
    CustomResource = kube_custom_resource.CustomResource

__all__ = ["CustomResource", "Scope"]
