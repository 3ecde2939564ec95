"""Argo CD health checks (deploy/argocd/health-checks.yaml) run with Lua 5.1 (lupa), as Argo CD's
gopher-lua runs them: the script sees the object as the global `obj` and returns {status, message}.
"""

from __future__ import annotations

import typing as t
from typing import Any

import lupa.lua51 as lua51
import pytest
import yaml

from deploy.kubectl import DEPLOY

CHECKS: dict[str, str] = yaml.safe_load((DEPLOY / "argocd/health-checks.yaml").read_text())["data"]
KINDS = ("HypervisorProfile", "HypervisorNodeState")


def health(kind: str, obj: dict[str, Any]) -> tuple[str, str]:
    lua = lua51.LuaRuntime(unpack_returned_tuples=False)  # lupa's default, required by its stubs
    lua.globals()["obj"] = lua.table_from(obj, recursive=True)
    script = CHECKS[f"resource.customizations.health.kvtune.io_{kind}"]
    # The Lua boundary: a health script returns a table, which lupa hands back as `object`.
    result = t.cast("lua51._LuaTable", lua.execute(script))
    return result["status"], result["message"]


def condition(type_: str, status: str, message: str = "") -> dict[str, str]:
    return {"type": type_, "status": status, "reason": f"{type_}{status}", "message": message}


def obj(generation: int = 2, status: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"metadata": {"name": "x", "generation": generation}}
    if status is not None:
        body["status"] = status
    return body


def test_both_kinds_have_a_check() -> None:
    assert set(CHECKS) == {f"resource.customizations.health.kvtune.io_{k}" for k in KINDS}


CASES = {
    "no status yet": (obj(), "Progressing", "Waiting for the operator to report status"),
    "ready": (obj(status={"observedGeneration": 2, "conditions": [
        condition("Ready", "True", "3/3 nodes ready")]}), "Healthy", "3/3 nodes ready"),
    "ready but for an older generation": (obj(status={"observedGeneration": 1, "conditions": [
        condition("Ready", "True")]}), "Progressing", "Waiting for generation 2 to be observed"),
    "no observed generation": (obj(status={"conditions": [condition("Ready", "True")]}),
                               "Progressing", "Waiting for generation 2 to be observed"),
    "degraded": (obj(status={"observedGeneration": 2, "conditions": [
        condition("Ready", "False"), condition("Degraded", "True", "node-b: KSM write failed")]}),
        "Degraded", "node-b: KSM write failed"),
    "degraded wins over ready": (obj(status={"observedGeneration": 2, "conditions": [
        condition("Ready", "True"), condition("Degraded", "True", "1 node failing")]}),
        "Degraded", "1 node failing"),
    "not ready, not degraded": (obj(status={"observedGeneration": 2, "conditions": [
        condition("Ready", "False", "waiting for drain of node-a"),
        condition("Degraded", "False")]}), "Progressing", "waiting for drain of node-a"),
    "status without conditions": (obj(status={"observedGeneration": 2}), "Progressing",
                                  "Waiting for the operator to report status"),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_health_follows_the_conditions(kind: str, case: str) -> None:
    body, status, message = CASES[case]
    assert health(kind, body) == (status, message)
