"""`kvtune demo --once`, the README's first command, works end to end on this machine."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.apiserver
@pytest.mark.skipif(bool(os.environ.get("KVTUNE_TEST_KUBECONFIG")),
                    reason="the demo always starts its own local control plane")
def test_the_demo_shows_this_host_probed_by_a_real_agent_and_rolled_up() -> None:
    done = subprocess.run([sys.executable, "-m", "kvtune_cli.main", "demo", "--once"],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "control plane up at https://127.0.0.1:" in out
    assert "Node " in out and "conditions reported by its agent" in out
    assert "VMsCompliant" in out
    assert "conditions rolled up by the operator" in out
    assert "audit-all-workers" in out
