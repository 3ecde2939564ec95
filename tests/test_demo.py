"""`kvtune demo --once`, the README's first command, works end to end on this machine: it
suggests a profile for this very host, applies it in Audit and shows what Enforce would do."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import yaml
from kvtune_cli.demo import enforce_command


@pytest.mark.apiserver
@pytest.mark.skipif(bool(os.environ.get("KVTUNE_TEST_KUBECONFIG")),
                    reason="the demo always starts its own local control plane")
def test_the_demo_shows_this_host_probed_by_a_real_agent_and_rolled_up() -> None:
    done = subprocess.run([sys.executable, "-m", "kvtune_cli.main", "demo", "--once"],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "control plane up at https://127.0.0.1:" in out
    # The profile is the one `kvtune profile suggest` proposes for this host, shown in full.
    suggested = re.search(r"\$ kvtune profile suggest --name this-host --output (\S+)\n"
                          r"(.*?)\n\$ kubectl apply -f \1\n", out, re.S)
    assert suggested, out[-3000:]
    profile = yaml.safe_load(suggested.group(2))
    assert profile["metadata"]["name"] == "this-host"
    assert profile["spec"]["mode"] == "Audit"
    assert "# Suggested by kvtune" in suggested.group(2)
    assert "Node " in out and "conditions reported by its agent" in out
    assert "VMsCompliant" in out
    # Suggested for this host, it leaves the host Degraded on nothing.
    assert re.search(r"^  Degraded +False +AsExpected", out, re.M), out[-3000:]
    # Each step Enforce would take is shown with why.
    [count] = re.findall(r"What Enforce would change on this host \((\d+) step\(s\)", out)
    assert out.count("      why: ") == int(count)
    assert "conditions rolled up by the operator" in out
    # Audit changes nothing: the roll-up must not claim it is applying the steps it lists.
    rolled_up = out.split("conditions rolled up by the operator", 1)[1]
    assert not re.search(r"^  Progressing +True", rolled_up, re.M), rolled_up[:2000]
    assert "To let kvtune make these changes on this host for real" in out
    assert "kubectl patch hvp this-host --type merge -p '{\"spec\":{\"mode\":\"Enforce\"" in out


@pytest.mark.parametrize(("disruptions", "patch"), [
    ([], '{"spec":{"mode":"Enforce"}}'),
    (["Live"], '{"spec":{"mode":"Enforce"}}'),
    (["Live", "NeedsDrain"], '{"spec":{"mode":"Enforce","rollout":{"allowDrain":true}}}'),
])
def test_the_command_that_applies_the_plan_allows_a_drain_only_where_a_step_needs_one(
    disruptions: list[str], patch: str,
) -> None:
    plan = [{"disruption": d} for d in disruptions]

    assert enforce_command(plan) == f"kubectl patch hvp this-host --type merge -p '{patch}'"
