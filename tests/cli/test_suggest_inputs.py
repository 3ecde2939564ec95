"""The probes `kvtune profile suggest` reads: `kvtune probe --json` stamps its version, and a
file of another version, a file that is no probe, or one with fields this kvtune does not know
is refused naming the file and what differs, with nothing written on stdout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kvtune_api import __version__
from kvtune_cli.hosts import HostInputError, read_probe_file
from kvtune_cli.main import main
from support.hosttree import intel_two_socket


def kvtune(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kvtune_cli.main", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def probe_file(tmp_path: Path) -> Path:
    """What `kvtune probe --json` wrote on a NUMA host."""
    intel_two_socket(tmp_path / "root")
    done = kvtune("probe", "--root", str(tmp_path / "root"), "--json")
    assert done.returncode == 0, done.stderr
    path = tmp_path / "numa.json"
    path.write_text(done.stdout)
    return path


def test_the_probe_is_stamped_with_its_api_and_kvtune_version(probe_file: Path) -> None:
    data = json.loads(probe_file.read_text())

    assert [data["apiVersion"], data["kind"], data["kvtuneVersion"]] == [
        "kvtune.io/v1alpha1", "HostReport", __version__]
    assert read_probe_file(probe_file).report.numa.sockets == 2


def test_a_profile_is_suggested_from_probe_files(probe_file: Path) -> None:
    done = kvtune("profile", "suggest", str(probe_file), "--vm", "4cpu/16Gi",
                  "--vms-per-node", "10", "--name", "pool-a")

    assert done.returncode == 0, done.stderr
    profile = yaml.safe_load(done.stdout)
    assert profile["metadata"]["name"] == "pool-a"
    assert profile["spec"]["mode"] == "Audit"
    header = " ".join(line[2:] for line in done.stdout.splitlines()[:4])
    assert header.startswith(f"Suggested by kvtune {__version__} `kvtune profile suggest` for: "
                             f"{probe_file}.")
    assert "in Audit the agents report what Enforce would change" in header


def test_an_enforce_profile_says_what_applying_it_does(probe_file: Path) -> None:
    done = kvtune("profile", "suggest", str(probe_file), "--mode", "Enforce")

    assert done.returncode == 0, done.stderr
    assert yaml.safe_load(done.stdout)["spec"]["mode"] == "Enforce"
    header = " ".join(line[2:] for line in done.stdout.splitlines()[:4])
    assert "in Enforce the agents make the changes at once" in header


def _rewrite(path: Path, **changes: object) -> Path:
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(("changes", "error"), [
    ({"kvtuneVersion": "0.0.9"}, f"was written by kvtune 0.0.9 (kvtune.io/v1alpha1), and this "
     f"is kvtune {__version__} (kvtune.io/v1alpha1)"),
    ({"apiVersion": "kvtune.io/v1beta1"}, "was written by kvtune "),
    ({"kind": "HypervisorProfile"}, "is a kvtune.io/v1alpha1 HypervisorProfile, not a kvtune "
     "probe"),
    ({"apiVersion": None, "kind": None, "kvtuneVersion": None},
     "has no apiVersion and kind (it looks like the output of a kvtune before"),
    ({"numaTopology": {"nodes": 2}}, f"has field(s) kvtune {__version__} does not know: "
     "numaTopology; it was written by another version"),
    ({"cpu": {"vendor": "GenuineIntel", "microcode": "0xd0003b9"}},
     "does not know: cpu.microcode"),
    ({"numa": {"sockets": "two"}}, "is not a host report this kvtune can read (numa.sockets:"),
])
def test_a_probe_of_another_version_or_shape_is_refused_naming_what_differs(
    probe_file: Path, changes: dict[str, object], error: str,
) -> None:
    _rewrite(probe_file, **changes)

    with pytest.raises(HostInputError) as refused:
        read_probe_file(probe_file)

    assert str(refused.value).startswith(str(probe_file))
    assert error in str(refused.value)
    assert "kvtune probe --json" in str(refused.value)


@pytest.mark.parametrize(("content", "error"), [
    ("spec:\n  mode: Audit\n", "is not a kvtune probe: it is not JSON"),
    ("[1, 2]", "it holds a JSON list, not an object"),
    ('{"name": "x"}', "is not a kvtune probe: it has no apiVersion and kind;"),
    ('{"host": {}, "vms": {}}', "the output of `kvtune probe --vms --json`, which audits VMs "
     "too: leave out --vms"),
])
def test_a_file_that_is_no_probe_is_refused_and_nothing_is_printed(
    tmp_path: Path, content: str, error: str, capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "notes.txt"
    path.write_text(content)

    assert main(["profile", "suggest", str(path)]) == 1

    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.startswith(f"kvtune profile suggest: {path} is not a kvtune probe")
    assert error in out.err


def test_vms_per_node_without_a_vm_shape_is_refused(
    probe_file: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["profile", "suggest", str(probe_file), "--vms-per-node", "10"]) == 1

    assert "--vms-per-node needs --vm" in capsys.readouterr().err


def test_a_host_that_cannot_hold_the_vms_is_named_on_stderr_and_in_the_profile(
    probe_file: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    # No kubelet was found: VMs share the 32 CPUs of each NUMA node, less one core kept.
    assert main(["profile", "suggest", str(probe_file), "--vm", "8cpu/16Gi",
                 "--vms-per-node", "10"]) == 0

    out = capsys.readouterr()
    line = f"{probe_file} cannot hold 10 VMs of 8cpu/16Gi (5, 5 on NUMA nodes 0, 1), only 6"
    assert f"kvtune profile suggest: {line}" in out.err
    assert "# WARNING: " + line[:60] in out.out


@pytest.mark.parametrize(("args", "error"), [
    (["--name", "Dedicated_VMs"], "--name 'Dedicated_VMs': a profile's name here is 1 to 58 "
     "lower-case letters"),
    (["--node-selector", "pool"], "--node-selector 'pool': write KEY=VALUE pairs"),
    (["--node-selector", "my pool=vms"], "the key 'my pool': a label key is"),
    (["--node-selector", "pool=big vms"], "the value 'big vms': a label value is"),
    (["--vms-per-node", "0", "--vm", "2cpu/4Gi"], "--vms-per-node must be at least 1"),
    (["--node", "a"], "--node needs --from-cluster"),
])
def test_options_the_apiserver_would_refuse_are_refused_first(
    probe_file: Path, args: list[str], error: str, capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["profile", "suggest", str(probe_file), *args]) == 1

    out = capsys.readouterr()
    assert out.out == ""
    assert error in out.err


def test_from_cluster_without_a_cluster_says_what_to_give(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))

    assert main(["profile", "suggest", "--from-cluster"]) == 1

    assert "--from-cluster: no cluster to read" in capsys.readouterr().err
