"""The kubelet feature on host trees: one NeedsDrain step, written only on a drained node,
journaled, the kubelet restarted and asked for its health, and its old configuration back
(with the kubelet's own error in the result) when it does not come back."""

from __future__ import annotations

import datetime
import http.server
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kvtune_agent.engine import change
from kvtune_agent.engine.apply import apply, settle
from kvtune_agent.engine.cycle import restore_hold
from kvtune_agent.engine.journal import Journal
from kvtune_agent.engine.retry import hold, track
from kvtune_agent.features.base import Draft, Plan, PlanInputs
from kvtune_agent.features.kubelet import KUBELET_BACKOFF, Kubelet, config
from kvtune_agent.features.kubelet import drop_in as feature
from kvtune_agent.features.kubelet import probe as kubelet_probe
from kvtune_agent.wiring import probe_host
from kvtune_api.v1alpha1.host import HostReport, NumaNode
from kvtune_api.v1alpha1.nodestate import DisruptionGrant
from kvtune_api.v1alpha1.profile import KubeletSettings
from support.hosttree import HostTree, intel_two_socket

from ..specs import node_spec

NODES = [NumaNode(id=node, memory_total_kib=32 * 2**20) for node in (0, 1)]
DROP_INS = "/etc/kubernetes/kubelet.conf.d"
DROP_IN = f"{DROP_INS}/{config.DROP_IN_NAME}"
RESERVES = "systemReserved: {memory: 1Gi}\nevictionHard: {memory.available: 100Mi}\n"
ENFORCE = KubeletSettings(management="Enforce")
DRAINED = DisruptionGrant(allow_drain=True, approved=True)
#: What the real kubelet v1.37 prints last when its memory manager refuses its configuration.
FATAL = ('E1207 21:12:26.952823   32555 run.go:72] "command failed" err="failed to run Kubelet: '
         'the total amount \\"800Mi\\" of type \\"memory\\" is not equal to the value \\"900Mi\\" '
         'determined by Node Allocatable feature"')


def _node(tmp_path: Path, *flags: str, unit: str = "kubelet.service",
          base: Callable[[Path], HostTree] = HostTree, config_text: str = "") -> HostTree:
    tree = base(tmp_path).kubelet_config(f"kind: KubeletConfiguration\n{RESERVES}{config_text}")
    (tmp_path / DROP_INS.lstrip("/")).mkdir(parents=True)
    tree.process(77, "kubelet", "/usr/bin/kubelet", "--config=/var/lib/kubelet/config.yaml",
                 f"--config-dir={DROP_INS}", *flags)
    tree.file("/proc/77/cgroup", f"0::/system.slice/{unit}")
    tree.unit("kubelet.service").systemctl()
    tree.file(config.CPU_STATE, '{"policyName":"none","defaultCpuSet":"0-3"}')
    tree.file(config.MEMORY_STATE, '{"policyName":"None"}')
    # The host's journalctl, printing what a refused kubelet logs.
    tree.file("/usr/bin/journalctl", f"#!{sys.executable}\nprint({FATAL!r})")
    (tmp_path / "usr/bin/journalctl").chmod(0o755)
    return tree


def _observed(tree: HostTree) -> feature.Observed:
    fs = tree.fs()
    return feature.observe(fs, kubelet_probe.probe(fs, fs.processes()))


def _plan(tree: HostTree, settings: KubeletSettings = ENFORCE) -> Plan:
    out = Draft()
    feature.plan(settings, "single-numa-node", _observed(tree), NODES, frozenset({0, 1}),
                 "vms", out)
    return out.done()


def _healthy_without_drop_in(tree: HostTree) -> feature.Health:
    """A kubelet that refuses to start with kvtune's drop-in (as with a wrong reserve)."""
    return lambda timeout: ("Get http://127.0.0.1:10248/healthz: connection refused"
                            if (tree.root / DROP_IN.lstrip("/")).exists() else None)


def _kubelet(health: feature.Health) -> Kubelet:
    return Kubelet(health=health, ready_seconds=0.1)


def _apply(tree: HostTree, grant: DisruptionGrant, health: feature.Health) -> tuple[str, str]:
    """The step applied by the engine, with the kubelet feature's hooks."""
    [result] = apply([_kubelet(health)], _plan(tree), tree.fs(), Journal(tree.fs()),
                     tree.systemd(), grant, timeout=10)
    return result.result, result.message


def test_unmanaged_leaves_the_kubelet_to_today_s_checks(tmp_path: Path) -> None:
    assert _plan(_node(tmp_path), KubeletSettings()) == Plan()


def test_enforce_plans_one_drain_class_step_writing_the_drop_in(tmp_path: Path) -> None:
    [step] = _plan(_node(tmp_path)).steps

    assert (step.kind, step.planned.path, step.planned.current) == ("file", DROP_IN, "")
    assert step.planned.disruption == "NeedsDrain"
    assert "reservedMemory:\n- numaNode: 0\n  limits:\n    memory: 562Mi" in step.planned.desired


def test_report_shows_the_drop_in_as_a_warning_and_plans_nothing(tmp_path: Path) -> None:
    planned = _plan(_node(tmp_path), KubeletSettings(management="Report"))

    assert planned.steps == ()
    [finding] = planned.findings
    assert (finding.severity, finding.reason) == ("Warning", "KubeletChangeByHand")
    assert f"would write {DROP_IN} holding" in finding.message


@pytest.mark.parametrize(("flags", "unit", "reason", "says"), [
    pytest.param(("--cpu-manager-policy=none",), "kubelet.service", "KubeletChangeByHand",
                 "set --cpu-manager-policy=static on the kubelet's command line", id="a flag"),
    pytest.param((), "kubelet-custom.service", "KubeletChangeByHand",
                 "kvtune cannot restart it", id="a unit kvtune does not know"),
    pytest.param(("--eviction-hard=memory.available<5%",), "kubelet.service",
                 "KubeletConfigRefused", "write it as a quantity", id="a reserve not exact"),
])
def test_enforce_that_cannot_write_degrades_the_node_with_the_fix(
    tmp_path: Path, flags: tuple[str, ...], unit: str, reason: str, says: str
) -> None:
    planned = _plan(_node(tmp_path, *flags, unit=unit))

    assert planned.steps == ()
    [finding] = planned.findings
    assert (finding.severity, finding.reason) == ("Error", reason)
    assert says in finding.message


#: The kubelet's own reserved CPUs, which a partition replaces (CPUs 0 and 32 share a core).
OWN_RESERVED = "reservedSystemCPUs: 0,32\n"


def _feature_plan(tree: HostTree, partition: dict[str, object] | None) -> Plan:
    """The Kubelet feature's own plan (not drop_in's), with spec.cpu.partition as given."""
    cpu: dict[str, object] = {"kubelet": {"management": "Enforce"}}
    if partition is not None:
        cpu["partition"] = partition
    spec = node_spec(cpu=cpu, numa={"topologyManagerPolicy": "single-numa-node"})
    fs = tree.fs()
    host = probe_host(fs)
    out = Draft()
    Kubelet().plan(PlanInputs(spec, host), Kubelet().read(fs, host), out)
    return out.done()


@pytest.mark.parametrize("partition", [
    pytest.param({"housekeepingCpus": "0,16,32,48"}, id="a CPU list"),
    pytest.param({"housekeepingCoresPerNumaNode": 1}, id="cores per NUMA node"),
])
def test_the_drop_in_reserves_the_partition_s_housekeeping_cpus(
    tmp_path: Path, partition: dict[str, object]
) -> None:
    tree = _node(tmp_path, base=intel_two_socket, config_text=OWN_RESERVED)

    [step] = _feature_plan(tree, partition).steps

    assert step.planned.path == DROP_IN
    assert "reservedSystemCPUs: 0,16,32,48\n" in step.planned.desired


def test_without_a_partition_the_kubelet_keeps_its_own_reserved_cpus(tmp_path: Path) -> None:
    tree = _node(tmp_path, base=intel_two_socket, config_text=OWN_RESERVED)

    [step] = _feature_plan(tree, None).steps

    assert step.planned.path == DROP_IN
    assert "reservedSystemCPUs" not in step.planned.desired


@pytest.mark.parametrize("partition", [
    pytest.param({"housekeepingCpus": "0,32"}, id="a NUMA node without housekeeping"),
    pytest.param({"housekeepingCpus": "0,16,99"}, id="an absent CPU"),
    pytest.param({"housekeepingCoresPerNumaNode": 16}, id="no core left for VMs"),
])
def test_a_partition_refused_on_the_node_writes_no_kubelet_configuration(
    tmp_path: Path, partition: dict[str, object]
) -> None:
    tree = _node(tmp_path, base=intel_two_socket, config_text=OWN_RESERVED)

    planned = _feature_plan(tree, partition)

    assert planned.steps == ()
    [finding] = planned.findings
    assert (finding.feature, finding.severity, finding.reason) == (
        "Kubelet", "Warning", "KubeletWaitsForCpuPartition")
    assert "spec.cpu.partition" in finding.message and "CPUIsolation" in finding.message


def test_without_a_drain_nothing_is_written(tmp_path: Path) -> None:
    tree = _node(tmp_path)

    result, message = _apply(tree, DisruptionGrant(allow_drain=False), lambda timeout: None)

    assert result == "Waiting" and "rollout.allowDrain" in message
    assert not (tmp_path / DROP_IN.lstrip("/")).exists()
    assert Journal(tree.fs()).entries() == [] and tree.systemctl_calls() == []


def test_on_a_drained_node_the_kubelet_restarts_without_its_checkpoints(tmp_path: Path) -> None:
    tree = _node(tmp_path)

    result, message = _apply(tree, DRAINED, lambda timeout: None)

    assert result == "Applied", message
    assert (tmp_path / DROP_IN.lstrip("/")).exists()
    assert not (tmp_path / config.CPU_STATE.lstrip("/")).exists()
    assert not (tmp_path / config.MEMORY_STATE.lstrip("/")).exists()
    assert tree.systemctl_calls() == ["restart kubelet.service"]
    [entry] = Journal(tree.fs()).entries()
    assert (entry.kind, entry.path, entry.original, entry.step) == (
        "file", DROP_IN, None, feature.STEP_ID)
    assert _plan(tree).steps == ()  # read back: the kubelet's files now say what was wanted


def test_a_kubelet_that_does_not_come_back_gets_its_old_configuration_and_names_its_error(
    tmp_path: Path,
) -> None:
    tree = _node(tmp_path)

    result, message = _apply(tree, DRAINED, _healthy_without_drop_in(tree))

    assert result == "Failed"
    assert 'the total amount "800Mi" of type "memory" is not equal to the value "900Mi"' in message
    assert f"{DROP_IN} is back as it was" in message
    assert not (tmp_path / DROP_IN.lstrip("/")).exists()
    assert tree.systemctl_calls() == ["restart kubelet.service"] * 2


def test_leaving_the_profile_restores_the_file_on_a_drained_node_and_restarts_the_kubelet(
    tmp_path: Path,
) -> None:
    tree = _node(tmp_path)
    _apply(tree, DRAINED, lambda timeout: None)
    features = [_kubelet(lambda timeout: None)]

    def revert(approved: bool) -> list[str]:
        fs = tree.fs()
        results = Journal(fs).revert(
            tree.systemd(), timeout=10, sequence=change.sequences(features),
            hold=restore_hold(features, fs, approved, 10),
            settle=lambda entry: settle(features, fs, tree.systemd(), entry.path, 10))
        return [r.result for r in results]

    assert revert(approved=False) == ["Waiting"]
    assert (tmp_path / DROP_IN.lstrip("/")).exists()
    assert revert(approved=True) == ["Applied"]
    assert not (tmp_path / DROP_IN.lstrip("/")).exists()
    assert tree.systemctl_calls() == ["restart kubelet.service"] * 2  # applied, then restored


def _started(tree: HostTree, booted: int, after_boot: int) -> None:
    ticks = os.sysconf("SC_CLK_TCK")
    tree.file("/proc/stat", f"cpu  1 2 3\nbtime {booted}\n")
    fields = ["S", *["0"] * 18, str(after_boot * ticks), "0"]
    tree.file("/proc/77/stat", f"77 (kubelet) {' '.join(fields)}")


def test_a_drop_in_written_after_the_kubelet_started_is_restarted_into(tmp_path: Path) -> None:
    # kvtune stopped between its write and the restart: the files say what is wanted, the
    # running kubelet does not run it.
    tree = _node(tmp_path)
    [step] = _plan(tree).steps
    tree.file(DROP_IN, step.planned.desired.rstrip("\n"))
    now = int(time.time())
    _started(tree, booted=now - 3600, after_boot=1800)  # started half an hour ago

    [again] = _plan(tree).steps

    assert again.planned.current == again.planned.desired
    assert "has not been restarted since" in again.planned.reason
    _started(tree, booted=now - 3600, after_boot=3600 + 60)  # restarted since
    assert _plan(tree).steps == ()


@pytest.mark.parametrize(("unit", "distribution"), [
    ("k3s.service", "k3s"), ("k3s-agent.service", "k3s"), ("rke2-agent.service", "rke2"),
    ("kubelet.service", "kubelet"), ("user-1000.slice", "unknown"),
])
def test_the_kubelet_s_unit_says_which_distribution_runs_it(
    tmp_path: Path, unit: str, distribution: str
) -> None:
    assert _observed(_node(tmp_path, unit=unit)).distribution == distribution


def test_the_kubelet_s_own_error_is_read_from_its_last_words() -> None:
    log = f'I1207 kubelet.go:1] "Starting"\n{FATAL}\n'

    assert feature.kubelet_error(log) == (
        'failed to run Kubelet: the total amount "800Mi" of type "memory" is not equal to the '
        'value "900Mi" determined by Node Allocatable feature')
    assert feature.kubelet_error("I1207 nothing fatal\n") is None


@pytest.mark.parametrize(("answer", "expected"), [("ok", None), ("[-]ping failed", "[-]ping")])
def test_healthz_is_ok_only_when_the_kubelet_says_ok(answer: str, expected: str | None) -> None:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(answer.encode())

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        # No namespace to enter in a test: the prefix that enters the host's is left out.
        ask = feature.healthz(f"http://127.0.0.1:{server.server_port}/healthz", prefix=())
        said = ask(10)
    finally:
        server.shutdown()

    assert said == expected if expected is None else (said or "").startswith(expected)


def test_healthz_of_a_kubelet_that_is_not_listening_is_not_ok() -> None:
    assert "Connection refused" in (feature.healthz("http://127.0.0.1:9/healthz", prefix=())(10)
                                    or "")


def test_settling_leaves_other_files_alone_and_names_a_kubelet_it_cannot_restart(
    tmp_path: Path,
) -> None:
    tree = _node(tmp_path, unit="kubelet-custom.service")
    healthy: feature.Health = lambda timeout: None  # noqa: E731

    assert feature.settle(tree.fs(), tree.systemd(), "/etc/modprobe.d/x.conf", healthy,
                          timeout=10) is None
    why = feature.settle(tree.fs(), tree.systemd(), DROP_IN, healthy, timeout=10)

    assert why is not None and "restart it by hand" in why
    assert tree.systemctl_calls() == []
    assert (tmp_path / config.CPU_STATE.lstrip("/")).exists()  # nothing removed either


def test_a_configuration_the_kubelet_did_not_take_waits_instead_of_draining_every_cycle(
    tmp_path: Path,
) -> None:
    tree = _node(tmp_path)
    work = _plan(tree)
    [failed] = apply([_kubelet(_healthy_without_drop_in(tree))], work, tree.fs(),
                     Journal(tree.fs()), tree.systemd(), DRAINED, timeout=10)
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)

    [record] = track(KUBELET_BACKOFF, [], [failed], work, HostReport(), now)
    held = hold(_plan(tree), KUBELET_BACKOFF, [record], now)

    assert held.steps == ()  # no NeedsDrain step, so no drain until the wait is over
    [finding] = held.findings
    assert finding.reason == "KubeletConfigNotTaken" and "not equal to the value" in (
        finding.message)
    assert hold(_plan(tree), KUBELET_BACKOFF, [record], record.next_attempt).steps != ()
