"""kvtune installed as users install it, then used, attacked and uninstalled, in that order.

One installation per provider (conftest.py): the tests below run in the order written and each
builds on the state the previous ones left (installed, a profile, ...); the last one uninstalls.
The parts that need no cluster (rendering, the API server accepting each manifest, RBAC swept
by impersonation) are tested in tests/deploy/; here the same things meet a real kubelet, real pod
tokens, the image built from the Dockerfile and the real Service in front of the webhook.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy.test_rbac import (
    ACCOUNTS,
    EXPECTED,
    UNBOUND,
    allowed,
    expected_allowed,
    grants,
    probes_for,
    served_resources,
)
from kubernetes import client
from kubernetes.client.rest import ApiException
from support import kubevirt
from support.cluster import wait_for
from support.realhost import guarded_tunables, read_tunables

from .conftest import NAMESPACE, Installation

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

GROUP, VERSION = "kvtune.io", "v1alpha1"
PROFILE = "e2e-node"
WEBHOOK_PROFILE = "e2e-webhook"
POOL_2M = "/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages"
KSM_RUN = "/sys/kernel/mm/ksm/run"
THP = "/sys/kernel/mm/transparent_hugepage/enabled"
JOURNAL_DIR = "/var/lib/kvtune"
JOURNAL = f"{JOURNAL_DIR}/journal.json"
AGENT_SELECTOR = "app.kubernetes.io/name=kvtune-agent"


def kubectl(installation: Installation, *args: str, stdin: str | None = None) -> str:
    # Waits (rollout status, delete) are bounded by their own --timeout of at most 300 s.
    return installation.kubectl.run(*args, stdin=stdin, timeout=360)


def get(installation: Installation, *args: str) -> Any:
    return json.loads(kubectl(installation, "get", "-o", "json", *args))


def custom(installation: Installation) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(installation.api)


def node_name(installation: Installation) -> str:
    nodes = get(installation, "nodes")["items"]
    return str(nodes[0]["metadata"]["name"])


def agent_pods(installation: Installation) -> list[dict[str, Any]]:
    pods: list[dict[str, Any]] = get(installation, "pods", "-n", NAMESPACE, "-l",
                                     AGENT_SELECTOR)["items"]
    return pods


def running(pod: dict[str, Any]) -> bool:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    return pod["status"].get("phase") == "Running" and all(s.get("ready") for s in statuses)


def apply_profile(installation: Installation, name: str, spec: dict[str, Any]) -> None:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "HypervisorProfile",
            "metadata": {"name": name}, "spec": spec}
    kubectl(installation, "apply", "--server-side", "--force-conflicts", "-f", "-",
            stdin=yaml.safe_dump(body))


def node_state(installation: Installation, node: str) -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = custom(installation).get_cluster_custom_object(
            GROUP, VERSION, "hypervisornodestates", node)
    except ApiException as e:
        if e.status == 404:
            return None
        raise
    return state


def host(installation: Installation) -> None:
    if installation.node is None:
        pytest.skip(f"{installation.provider}: the node is not this host; Enforce is tested on "
                    "the real-node provider only")


def read(path: str) -> str:
    return Path(path).read_text().strip()


def selected(path: str) -> str:
    """The [bracketed] choice of a sysfs choice file, or the file's value."""
    text = read(path)
    return text.split("[", 1)[1].split("]", 1)[0] if "[" in text else text


# --- 1. install -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def host_before(provider: Installation) -> dict[str, str]:
    """The host's tunables before kvtune was installed, and what the journal's directory held."""
    return {**read_tunables(), JOURNAL_DIR: journal_dir()}


def journal_dir() -> str:
    """What kvtune's state directory holds (its sorted entries), or `absent`."""
    directory = Path(JOURNAL_DIR)
    return str(sorted(p.name for p in directory.iterdir())) if directory.is_dir() else "absent"


def left_by_kvtune(before: str) -> str:
    """What journal_dir() must say once kvtune has restored everything, given what it said
    before: the agent removes its journal when nothing is left to restore, and then its own
    directory if empty (journal.py), so a directory that held nothing else is gone, even one
    an earlier kvtune left behind empty."""
    return "absent" if before in ("absent", "[]", "['journal.json']") else before


@pytest.fixture(scope="module")
def installed(provider: Installation, host_before: dict[str, str]) -> Iterator[Installation]:
    """`kubectl apply -k <overlay>` as deploy/README.md says, once; both Deployments rolled out."""
    kubectl(provider, "apply", "-k", str(provider.overlay))
    for deployment in ("kvtune-operator", "kvtune-webhook"):
        kubectl(provider, "-n", NAMESPACE, "rollout", "status", f"deployment/{deployment}",
                "--timeout=300s")
    yield provider


def test_install_runs_two_operators_one_leading_and_two_serving_webhooks(
    installed: Installation,
) -> None:
    for deployment in ("kvtune-operator", "kvtune-webhook"):
        status = get(installed, "deployment", "-n", NAMESPACE, deployment)["status"]
        assert status.get("readyReplicas") == 2, f"{deployment}: {status}"
    # kopf peering: both replicas announce themselves; the one of lower priority pauses.
    def both_peers() -> bool:
        peering = get(installed, "clusterkopfpeering", "kvtune-operator")
        return len(peering.get("status") or {}) == 2

    wait_for(both_peers, "both operator replicas in the kopf peering", 120, interval=2)
    pods = [p["metadata"]["name"] for p in get(installed, "pods", "-n", NAMESPACE, "-l",
                                                "app.kubernetes.io/name=kvtune-operator")["items"]]

    def working() -> list[str]:
        # kopf logs each switch; a replica starts paused until it has read the peering, so one
        # that never switched is paused too.
        return [p for p in pods if _last_switch(kubectl(installed, "logs", "-n", NAMESPACE, p))
                == "Resuming operations"]

    try:
        wait_for(lambda: len(working()) == 1, "exactly one operator replica working", 120,
                 interval=2)
    except TimeoutError as e:
        logs = {p: kubectl(installed, "logs", "-n", NAMESPACE, p)[-3000:] for p in pods}
        peering = get(installed, "clusterkopfpeering", "kvtune-operator")
        raise AssertionError(f"{e}; peering: {peering}; logs: {logs}") from None
    assert working() == [_leader(installed)]
    # The webhook: its Service has both replicas behind it, its own TLS Secret and the two
    # configurations it writes, carrying the Secret's CA.
    slices = get(installed, "endpointslices", "-n", NAMESPACE, "-l",
                 "kubernetes.io/service-name=kvtune-webhook")["items"]
    ready = [e for s in slices for e in s.get("endpoints") or []
             if e.get("conditions", {}).get("ready")]
    assert len(ready) == 2, slices
    secret = get(installed, "secret", "-n", NAMESPACE, "kvtune-webhook-tls")
    assert {"tls.crt", "tls.key", "ca.crt"} <= set(secret["data"])
    for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
        configuration = get(installed, kind, "kvtune.io")
        for webhook in configuration["webhooks"]:
            assert webhook["clientConfig"]["caBundle"] == secret["data"]["ca.crt"], kind
            assert webhook["clientConfig"]["service"]["name"] == "kvtune-webhook"
    # The operator wrote the agents' DaemonSet with its own image.
    operator_image = get(installed, "deployment", "-n", NAMESPACE,
                         "kvtune-operator")["spec"]["template"]["spec"]["containers"][0]["image"]
    daemonset = get(installed, "daemonset", "-n", NAMESPACE, "kvtune-agent")
    assert daemonset["spec"]["template"]["spec"]["containers"][0]["image"] == operator_image


# --- 2. Audit -> Enforce -> leave -----------------------------------------------------------------


def _probe_here() -> dict[str, Any]:
    done = subprocess.run([str(Path(sys.executable).with_name("kvtune")), "probe", "--json"],
                          capture_output=True, text=True, timeout=120, check=True)
    report: dict[str, Any] = json.loads(done.stdout)
    return report


#: Sections of the host report that do not move between two probes a minute apart.
STABLE = (("cpu", ("vendor", "modelName", "logicalCpus", "virtualization", "kvmDevice")),
          ("numa", ("onlineCpus", "sockets")),
          ("ksm", ("run",)))


def _stable(report: dict[str, Any]) -> dict[str, Any]:
    picked: dict[str, Any] = {section: {k: report.get(section, {}).get(k) for k in keys}
                              for section, keys in STABLE}
    picked["numaNodes"] = [(n["id"], n.get("cpus")) for n in report["numa"].get("nodes", [])]
    # The node's kubelet, found and read by the agent in its pod (hostPID, the host's root) as
    # from outside: the same process, config file, flags and resource-manager settings.
    picked["kubelet"] = report.get("kubelet")
    return picked


def test_audit_reports_the_host_as_kvtune_probe_sees_it_from_outside(
    installed: Installation,
) -> None:
    node = node_name(installed)
    apply_profile(installed, PROFILE, {
        "nodeSelector": {"matchLabels": {"kubernetes.io/hostname": node}}, "mode": "Audit"})

    def reported() -> bool:
        state = node_state(installed, node)
        return bool(state and (state.get("status") or {}).get("host"))

    wait_for(reported, f"the agent on {node} reporting its host", 300, interval=2)
    pods = agent_pods(installed)
    assert [p["spec"]["nodeName"] for p in pods] == [node] and running(pods[0]), pods
    state = node_state(installed, node)
    assert state is not None
    if installed.node is not None:
        kubelet = state["status"]["host"].get("kubelet") or {}
        assert kubelet.get("pid") and kubelet.get("configPath"), (
            f"the agent did not find this node's kubelet: {kubelet}")
        assert _stable(state["status"]["host"]) == _stable(_probe_here())
    else:
        assert state["status"]["host"]["cpu"]["logicalCpus"] > 0


@pytest.fixture(scope="module")
def enforced_change() -> dict[str, str]:
    """A small change: four 2Mi pages on NUMA node 0, KSM the other way, THP `never` (or
    `madvise` where it is `never`)."""
    return {
        POOL_2M: str(int(read(POOL_2M)) + 4),
        KSM_RUN: "1" if read(KSM_RUN) == "0" else "0",
        THP: "madvise" if selected(THP) == "never" else "never",
    }


def _enforce_spec(node: str, change: dict[str, str]) -> dict[str, Any]:
    return {
        "nodeSelector": {"matchLabels": {"kubernetes.io/hostname": node}},
        "mode": "Enforce",
        "memory": {
            "ksm": "Enabled" if change[KSM_RUN] == "1" else "Disabled",
            "transparentHugepages": change[THP],
            "hugepages": {"pages": [{"size": "2Mi",
                                     "perNode": [{"node": 0, "count": int(change[POOL_2M])}]}]},
        },
    }


@contextlib.contextmanager
def enforcing(installation: Installation, change: dict[str, str]) -> Iterator[str]:
    """The profile in Enforce making `change` on the node (this host), the node's name inside;
    on leaving, the profile is deleted, and the node must end unlabelled and without an agent,
    the journal gone and every tunable as before (guarded_tunables restores and fails
    otherwise), and the agent must not have left the node while its journal still held
    something to restore."""
    host(installation)
    node = node_name(installation)
    before = read_tunables()
    directory_before = journal_dir()
    with guarded_tunables():
        apply_profile(installation, PROFILE, _enforce_spec(node, change))
        yield node
        with leave_watched(installation) as left_early:
            kubectl(installation, "delete", "hypervisorprofile", PROFILE, "--timeout=300s")

            def restored() -> bool:
                labels = get(installation, "node", node)["metadata"].get("labels", {})
                return not any(k.startswith("kvtune.io/") for k in labels) and not agent_pods(
                    installation)

            wait_for(restored, f"{node} restored, unlabelled and without an agent", 300,
                     interval=2)
        assert not left_early, (
            f"the agent left {node} while {JOURNAL} still held what to restore: {left_early}")
        assert read_tunables() == before
        assert journal_dir() == left_by_kvtune(directory_before), f"{JOURNAL_DIR} after restore"


@contextlib.contextmanager
def leave_watched(installation: Installation) -> Iterator[list[str]]:
    """Watches a leave as it happens, not only its end: the list inside collects each moment
    the node had no agent pod (the DaemonSet had left) although the journal still existed. The
    journal is looked at after the pods were listed, so a journal seen then existed while the
    agent was already gone. The watch must have seen the leave start (an agent and its journal
    both there), or it proved nothing."""
    left_early: list[str] = []
    started = threading.Event()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            try:
                gone = not agent_pods(installation)
            except (subprocess.SubprocessError, AssertionError, ValueError):
                continue  # a failed listing says nothing either way
            journal = Path(JOURNAL).exists()
            if gone and journal:
                left_early.append(f"{time.strftime('%H:%M:%S')}: no agent pod, {journal_dir()}")
            elif journal:
                started.set()
            stop.wait(0.2)

    watcher = threading.Thread(target=watch, name="leave-watcher")
    watcher.start()
    try:
        # The first look before the profile goes.
        wait_for(started.is_set, "the leave's watch seeing the agent and its journal", 60,
                 interval=0.1)
        yield left_early
    finally:
        stop.set()
        watcher.join()


def changed(change: dict[str, str]) -> bool:
    """The host shows the whole change, read from /sys (not through kvtune)."""
    return {path: selected(path) for path in change} == change


def test_enforce_changes_the_host_and_leaving_restores_every_value(
    installed: Installation, enforced_change: dict[str, str]
) -> None:
    with enforcing(installed, enforced_change):
        wait_for(lambda: changed(enforced_change), f"the host showing {enforced_change}", 300,
                 interval=2)
        assert Path(JOURNAL).exists(), "the agent changed the host without a journal"


# --- 3. the webhook through its Service -----------------------------------------------------------


@pytest.fixture(scope="module")
def vmi_namespace(installed: Installation) -> str:
    """KubeVirt's CRDs (its real schema), an Enforce profile shaping VMIs in a namespace of its
    own and selecting no node, and that namespace."""
    for crd in kubevirt.kubevirt_crds():
        kubectl(installed, "apply", "--server-side", "-f", "-", stdin=yaml.safe_dump(crd))
    kubectl(installed, "wait", "--for=condition=Established", "--timeout=60s",
            "crd/virtualmachineinstances.kubevirt.io")
    name = f"e2e-vmis-{uuid.uuid4().hex[:6]}"
    kubectl(installed, "create", "namespace", name)
    kubectl(installed, "label", "namespace", name, "kvtune.io/e2e=webhook")
    apply_profile(installed, WEBHOOK_PROFILE, {
        "nodeSelector": {"matchLabels": {"kvtune.io/e2e": "no-such-node"}},
        "mode": "Enforce",
        "vmi": {"namespaceSelector": {"matchLabels": {"kvtune.io/e2e": "webhook"}},
                "dedicatedCpus": True},
    })
    return name


def _create_vmi(
    installation: Installation, vmi: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    """A server-side dry run: the apiserver calls the webhook through its Service and answers
    with the stored object, stored nowhere."""
    command = [str(installation.kubectl.binary), "--kubeconfig", str(installation.kubeconfig),
               "create", "--dry-run=server", "-o", "json", "-f", "-"]
    return subprocess.run(command, input=yaml.safe_dump(vmi), capture_output=True, text=True,
                          timeout=60)


def _vmi(name: str, namespace: str, cpu: dict[str, Any] | None = None) -> dict[str, Any]:
    vmi = kubevirt.minimal_vmi(name, namespace)
    vmi["spec"]["domain"]["cpu"] = {"cores": 2, **(cpu or {})}
    return vmi


def _shaped(installation: Installation, namespace: str) -> bool:
    done = _create_vmi(installation, _vmi("shaped", namespace))
    if done.returncode != 0:
        return False
    stored = json.loads(done.stdout)
    return bool(stored["spec"]["domain"]["cpu"].get("dedicatedCpuPlacement"))


def test_the_webhook_shapes_a_vmi_and_refuses_one_naming_field_and_fix(
    installed: Installation, vmi_namespace: str
) -> None:
    wait_for(lambda: _shaped(installed, vmi_namespace), "a VMI shaped through the Service",
             120, interval=2)
    stored = json.loads(_create_vmi(installed, _vmi("shaped", vmi_namespace)).stdout)
    assert stored["spec"]["nodeSelector"]["kvtune.io/profile"] == WEBHOOK_PROFILE
    assert stored["metadata"]["annotations"]["kvtune.io/mutated-by"] == WEBHOOK_PROFILE
    refused = _create_vmi(installed, _vmi("refused", vmi_namespace,
                                          {"dedicatedCpuPlacement": False}))
    assert refused.returncode != 0
    assert "spec.domain.cpu.dedicatedCpuPlacement is false" in refused.stderr, refused.stderr
    assert WEBHOOK_PROFILE in refused.stderr, refused.stderr


def test_killing_a_webhook_replica_loses_no_admission(
    installed: Installation, vmi_namespace: str
) -> None:
    # What a SIGKILLed replica may cost, and what it must not. Until the endpoints controller and
    # kube-proxy drop the dead pod (about a second), the apiserver can still send a call to it;
    # it retries a webhook call only on a reset connection, not on "no route to host", so that
    # one create fails. Failing closed is the promise: no VMI is ever stored unshaped, every
    # failure is the apiserver's failed webhook call, and the same create done again (as kubectl
    # apply loops and GitOps controllers do) is shaped.
    results: list[subprocess.CompletedProcess[str]] = []
    stop = threading.Event()

    def create_in_a_loop() -> None:
        while not stop.is_set():
            results.append(_create_vmi(installed, _vmi("shaped", vmi_namespace)))

    worker = threading.Thread(target=create_in_a_loop)
    worker.start()
    try:
        time.sleep(3)
        pods = get(installed, "pods", "-n", NAMESPACE, "-l",
                   "app.kubernetes.io/name=kvtune-webhook")["items"]
        # Killed, not deleted: no graceful removal from the Service's endpoints first.
        kubectl(installed, "delete", "pod", "-n", NAMESPACE, pods[0]["metadata"]["name"],
                "--grace-period=0", "--force")
        time.sleep(15)
        kubectl(installed, "-n", NAMESPACE, "rollout", "status", "deployment/kvtune-webhook",
                "--timeout=300s")
        time.sleep(3)
    finally:
        stop.set()
        worker.join()
    admitted = [json.loads(r.stdout) for r in results if r.returncode == 0]
    failed = [r.stderr for r in results if r.returncode != 0]
    assert len(results) > 10
    assert all(vmi["spec"]["domain"]["cpu"].get("dedicatedCpuPlacement") for vmi in admitted), (
        "a VMI was admitted unshaped while a webhook replica died")
    assert all("failed calling webhook" in err for err in failed), failed
    assert len(failed) <= max(2, len(results) // 50), (
        f"{len(failed)} of {len(results)} creations failed, more than the kill window explains: "
        f"{failed[:3]}")
    assert _shaped(installed, vmi_namespace), "the same create, done again, is not shaped"


# --- 4. security as shipped -----------------------------------------------------------------------


def _agent_token(installation: Installation) -> tuple[str, str]:
    """The agent pod's own ServiceAccount token, read inside the pod, and the pod's node."""
    pods = [p for p in agent_pods(installation) if running(p)]
    assert pods, "no running agent pod"
    pod = pods[0]["metadata"]["name"]
    token = kubectl(installation, "exec", "-n", NAMESPACE, pod, "--", "cat",
                    "/var/run/secrets/kubernetes.io/serviceaccount/token")
    return token.strip(), pods[0]["spec"]["nodeName"]


def _as_token(installation: Installation, token: str) -> client.ApiClient:
    configuration = client.Configuration()
    admin = installation.api.configuration
    configuration.host = admin.host
    configuration.ssl_ca_cert = admin.ssl_ca_cert
    configuration.verify_ssl = True
    configuration.api_key = {"authorization": f"Bearer {token}"}
    return client.ApiClient(configuration)


def _label(api: client.ApiClient, node: str, value: str) -> int:
    try:
        client.CoreV1Api(api).patch_node(node, {"metadata": {"labels": {"kvtune.io/ready": value}}})
    except ApiException as e:
        return int(e.status)
    return 200


@pytest.fixture
def agent_running(installed: Installation) -> Iterator[str]:
    """An Audit profile on the node, its agent running; deleted afterwards."""
    node = node_name(installed)
    apply_profile(installed, PROFILE, {
        "nodeSelector": {"matchLabels": {"kubernetes.io/hostname": node}}, "mode": "Audit"})
    wait_for(lambda: any(running(p) for p in agent_pods(installed)), "a running agent", 300,
             interval=2)
    yield node
    kubectl(installed, "delete", "hypervisorprofile", PROFILE, "--timeout=300s")
    wait_for(lambda: not agent_pods(installed), "the agent gone", 300, interval=2)


def _patch_state_status(api: client.ApiClient, name: str) -> int:
    try:
        client.CustomObjectsApi(api).patch_cluster_custom_object_status(
            GROUP, VERSION, "hypervisornodestates", name, {"status": {}})
    except ApiException as e:
        return int(e.status)
    return 200


def test_the_agents_own_token_writes_its_own_node_and_nothing_of_another(
    installed: Installation, agent_running: str
) -> None:
    token, node = _agent_token(installed)
    other = f"e2e-other-{uuid.uuid4().hex[:6]}"
    own = node_state(installed, node)
    assert own is not None
    # Another node and its state, as the operator would write it (with this node's spec).
    client.CoreV1Api(installed.api).create_node({"metadata": {"name": other}})
    custom(installed).create_cluster_custom_object(
        GROUP, VERSION, "hypervisornodestates",
        {"apiVersion": f"{GROUP}/{VERSION}", "kind": "HypervisorNodeState",
         "metadata": {"name": other}, "spec": own["spec"]})
    try:
        with _as_token(installed, token) as api:
            assert _label(api, node, "true") == 200
            assert _patch_state_status(api, node) == 200
            assert _label(api, other, "true") in (403, 422)
            assert _patch_state_status(api, other) in (403, 422)
        labels = get(installed, "node", other)["metadata"].get("labels", {})
        assert "kvtune.io/ready" not in labels
    finally:
        custom(installed).delete_cluster_custom_object(
            GROUP, VERSION, "hypervisornodestates", other)
        client.CoreV1Api(installed.api).delete_node(other)


@pytest.mark.parametrize("account", ACCOUNTS)
def test_each_account_may_do_exactly_the_reviewed_things_on_the_installed_cluster(
    installed: Installation, account: str
) -> None:
    resources = served_resources(installed.api)
    namespaced = {(g, r): n for g, r, n in resources}
    for name in ACCOUNTS:
        for _, group, resource, _, _ in grants(EXPECTED[name]):
            namespaced.setdefault((group, resource), group == "kubevirt.io")
    probes = probes_for((g, r, n) for (g, r), n in namespaced.items())
    baseline = allowed(installed.api, UNBOUND, probes)
    extra = allowed(installed.api, account, probes) - baseline
    want = expected_allowed(account, namespaced) - baseline
    assert sorted(extra - want) == [], f"{account} may do more than reviewed"
    assert sorted(want - extra) == [], f"{account} may not do what was reviewed"


def test_the_agent_pod_runs_as_docs_safety_and_deploy_readme_promise(
    installed: Installation, agent_running: str
) -> None:
    pod = next(p for p in agent_pods(installed) if running(p))
    spec = pod["spec"]
    container = spec["containers"][0]
    assert spec["hostPID"] is True
    assert not spec.get("hostNetwork"), "the agent serves metrics on the pod network"
    assert spec["serviceAccountName"] == "kvtune-agent"
    security = container["securityContext"]
    assert security["privileged"] is True and security["runAsUser"] == 0
    assert security["readOnlyRootFilesystem"] is True
    assert container["resources"]["limits"] == {"memory": "256Mi"}
    assert "cpu" not in container["resources"]["limits"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    # /tmp and the token; on the node provider the test-only host root (agent-host-root.yaml).
    extra = mounts - {"/tmp", "/var/run/secrets/kubernetes.io/serviceaccount"}
    assert extra == ({"/host"} if installed.node is not None else set()), mounts
    assert spec["terminationGracePeriodSeconds"] == 60
    # What the container really got: root, a read-only root filesystem, and the host's PIDs.
    name = pod["metadata"]["name"]
    out = kubectl(installed, "exec", "-n", NAMESPACE, name, "--", "python", "-c",
                  "import os; print(os.getuid());"
                  "print(os.access('/usr', os.W_OK)); print(os.path.exists('/proc/1/comm'))")
    assert out.split() == ["0", "False", "True"], out



# --- 5. faults ------------------------------------------------------------------------------------


def _leader(installation: Installation) -> str:
    """The operator pod whose kopf peer has the highest priority (identity `user@<pod>/...`)."""
    peers = get(installation, "clusterkopfpeering", "kvtune-operator").get("status") or {}
    identity = max(peers, key=lambda peer: peers[peer]["priority"])
    listed = get(installation, "pods", "-n", NAMESPACE, "-l",
                 "app.kubernetes.io/name=kvtune-operator")
    pods: list[str] = [p["metadata"]["name"] for p in listed["items"]]
    [pod] = [p for p in pods if p in identity]
    return pod


def _last_switch(log: str) -> str | None:
    """The last of kopf's peering switches in an operator's log."""
    switches = [line for line in log.splitlines()
                if "Pausing operations" in line or "Resuming operations" in line]
    return None if not switches else (
        "Pausing operations" if "Pausing operations" in switches[-1] else "Resuming operations")


def _profile_ready(installation: Installation) -> bool:
    profile = get(installation, "hypervisorprofile", PROFILE)
    conditions = (profile.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _peers(installation: Installation) -> dict[str, Any]:
    peers: dict[str, Any] = get(installation, "clusterkopfpeering",
                                "kvtune-operator").get("status") or {}
    return peers


def _restarts(installation: Installation, pod: str) -> int:
    statuses = get(installation, "pod", "-n", NAMESPACE, pod)["status"]["containerStatuses"]
    return sum(int(s.get("restartCount", 0)) for s in statuses)


def _sigkill(installation: Installation, pod: str) -> list[int]:
    """SIGKILL every process of the pod's containers, found on this host by the container's id
    in their cgroup: no SIGTERM first, so kopf cannot withdraw its peering record, as when a
    node loses power or the OOM killer strikes. The pids killed."""
    statuses = get(installation, "pod", "-n", NAMESPACE, pod)["status"]["containerStatuses"]
    ids = [s["containerID"].partition("://")[2] for s in statuses if s.get("containerID")]
    killed = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cgroup = (proc / "cgroup").read_text()
        except OSError:
            continue  # gone meanwhile
        if any(i and i in cgroup for i in ids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)
                killed.append(int(proc.name))
    return killed


def test_a_rollout_whose_leader_was_killed_is_finished_once_its_peering_record_expires(
    installed: Installation, enforced_change: dict[str, str]
) -> None:
    host(installed)
    leader = _leader(installed)
    peers = _peers(installed)
    dead = max(peers, key=lambda peer: peers[peer]["priority"])
    restarts = _restarts(installed, leader)
    with enforcing(installed, enforced_change):
        # Mid-rollout: the agent has not yet reported the profile applied.
        assert not _profile_ready(installed), "the rollout was over before the leader was killed"
        assert _sigkill(installed, leader), f"no process of {leader} found on this host"
        # The kubelet restarts the killed container in the same pod, under a new identity
        # with a new random priority: it or the standby leads once the dead record expires
        # (the peering lifetime, 60 s), or at once if the new priority is higher still.
        wait_for(lambda: changed(enforced_change), "the host changed after the leader was killed",
                 300, interval=2)
        wait_for(lambda: _profile_ready(installed), f"profile {PROFILE} Ready", 300, interval=2)
        wait_for(lambda: dead not in _peers(installed),
                 f"the killed leader's peering record {dead} expired and removed", 180,
                 interval=2)
        assert _restarts(installed, leader) > restarts, "the leader was not killed in place"
        pods = [p["metadata"]["name"] for p in get(installed, "pods", "-n", NAMESPACE, "-l",
                                                    "app.kubernetes.io/name=kvtune-operator")[
                                                        "items"]]
        wait_for(lambda: [p for p in pods if _last_switch(kubectl(
            installed, "logs", "-n", NAMESPACE, p)) == "Resuming operations"] == [
                _leader(installed)], "exactly the leader working after the kill", 120,
            interval=2)


def test_an_agent_killed_mid_apply_and_a_containerd_restart_leave_no_half_applied_host(
    installed: Installation, enforced_change: dict[str, str]
) -> None:
    host(installed)
    assert installed.node is not None
    with enforcing(installed, enforced_change):
        # The moment the agent has started changing the host (its journal exists) it is killed,
        # and containerd restarted under the running pods, as a node's runtime update would.
        wait_for(lambda: Path(JOURNAL).exists(), "the agent's journal", 300, interval=0.05)
        for pod in agent_pods(installed):
            kubectl(installed, "delete", "pod", "-n", NAMESPACE, pod["metadata"]["name"],
                    "--grace-period=0", "--force")
        installed.node.restart_containerd()
        # The new agent completes the journal: the whole change is there, not a part of it.
        wait_for(lambda: changed(enforced_change), "the whole change after the kill", 300,
                 interval=2)
        wait_for(lambda: _profile_ready(installed), f"profile {PROFILE} Ready", 300, interval=2)


# --- 6. uninstall ---------------------------------------------------------------------------------


def test_uninstall_as_the_readme_says_leaves_nothing_behind(
    installed: Installation, host_before: dict[str, str]
) -> None:
    # deploy/README.md: delete the profiles and wait until they are gone and no node carries the
    # journal label; then `kubectl delete -k`.
    kubectl(installed, "delete", "hypervisorprofiles", "--all", "--timeout=300s")
    wait_for(lambda: not get(installed, "nodes", "-l", "kvtune.io/journal")["items"],
             "no node labelled kvtune.io/journal", 300, interval=2)
    kubectl(installed, "delete", "-k", str(installed.overlay), "--timeout=300s")
    kubectl(installed, "wait", "--for=delete", f"namespace/{NAMESPACE}", "--timeout=300s")

    def webhooks_gone() -> bool:
        names = [c["metadata"]["name"] for kind in ("mutatingwebhookconfigurations",
                                                    "validatingwebhookconfigurations")
                 for c in get(installed, kind)["items"]]
        return "kvtune.io" not in names

    wait_for(webhooks_gone, "the webhook configurations garbage-collected", 120, interval=2)
    left = [f"{o['kind']} {o['metadata']['name']}"
            for kind in ("customresourcedefinitions", "clusterroles", "clusterrolebindings",
                         "validatingadmissionpolicies", "validatingadmissionpolicybindings",
                         "mutatingadmissionpolicies", "mutatingadmissionpolicybindings")
            for o in get(installed, kind)["items"]
            if "kvtune" in o["metadata"]["name"]]
    assert left == []
    for node in get(installed, "nodes")["items"]:
        labels = node["metadata"].get("labels", {})
        assert not [k for k in labels if k.startswith("kvtune.io/")], labels
    if installed.node is not None:
        assert {**read_tunables(), JOURNAL_DIR: journal_dir()} == {
            **host_before, JOURNAL_DIR: left_by_kvtune(host_before[JOURNAL_DIR])}
