"""The hosts a profile is suggested for, read into the agent's own HostReport: `kvtune probe
--json` files, this host, or the node states of a running cluster.

Why a module of its own: a profile suggested from facts read wrongly fails on the very nodes it
was made for. A file written by another kvtune may name fields this one does not know, or mean
others differently, and pydantic would drop the unknown ones without a word; a file that is no
probe at all would read as a host with nothing. So every probe is stamped with the API version
and the kvtune version that wrote it (`stamped`), and a file is read only when both match and
it holds no field this kvtune does not know; anything else is refused, naming the file and what
differs. The node states of a cluster are checked the same way (their agent may be newer).
"""

from __future__ import annotations

import json
import pathlib
import typing as t
from collections.abc import Mapping
from dataclasses import dataclass, field

import pydantic
from kvtune_api import __version__
from kvtune_api.v1alpha1 import API_GROUP, API_VERSION, GROUP_VERSION
from kvtune_api.v1alpha1.host import HostReport

#: The kind a probe file declares: its body is a HostReport.
PROBE_KIND = "HostReport"
#: The stamp's keys, written before the report's own (which never use these names).
STAMP_KEYS = ("apiVersion", "kind", "kvtuneVersion")
PROBE_HOW = "run `kvtune probe --json > FILE` with this kvtune on that host"


class HostInputError(Exception):
    """A host's facts cannot be used; the message names the file or node, and what to do."""


@dataclass(frozen=True)
class ProbedHost:
    """One host's probe and where it came from."""

    #: How messages name it: the file, "this host (<name>)" or "node <name>".
    source: str
    report: HostReport
    #: The Node's name, where known (this host, a node of a cluster); None for a file.
    node: str | None = None
    #: The Node's labels and annotations, where read from a cluster (the planner's view).
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)


def stamped(report: HostReport) -> str:
    """The report as `kvtune probe --json` prints it: the stamp, then the report's fields.

    The report's own fields stay at the top level, so a reader of older output (and
    HostReport.model_validate_json, which ignores the stamp) reads it as before.
    """
    stamp = {"apiVersion": GROUP_VERSION, "kind": PROBE_KIND, "kvtuneVersion": __version__}
    # pydantic's own serialiser (the probe's hot path), the stamp put in front of its fields
    body = report.model_dump_json(indent=2, exclude_none=True)
    head = "".join(f"  {json.dumps(key)}: {json.dumps(value)},\n" for key, value in stamp.items())
    return "{\n" + head + body.removeprefix("{\n")


def _unknown_fields(data: t.Any, parsed: t.Any, path: str = "") -> list[str]:
    """The paths of `data` (JSON as given) that the model `parsed` from it did not keep: the
    fields another version of the report has and this one does not."""
    if isinstance(data, dict) and isinstance(parsed, dict):
        found: list[str] = []
        for key, value in data.items():
            where = f"{path}.{key}" if path else key
            found += ([where] if key not in parsed
                      else _unknown_fields(value, parsed[key], where))
        return found
    if isinstance(data, list) and isinstance(parsed, list):
        return [w for i, (a, b) in enumerate(zip(data, parsed, strict=False))
                for w in _unknown_fields(a, b, f"{path}[{i}]")]
    return []


def _report(data: Mapping[str, t.Any], source: str, fix: str) -> HostReport:
    """A HostReport from `data`, refused when it does not validate or has fields this kvtune
    does not know."""
    try:
        report = HostReport.model_validate(data)
    except pydantic.ValidationError as invalid:
        fields = "; ".join(
            ".".join(str(part) for part in error["loc"]) + ": " + error["msg"]
            for error in invalid.errors()[:5])
        raise HostInputError(f"{source} is not a host report this kvtune can read ({fields}); "
                             f"{fix}") from invalid
    kept = report.model_dump(mode="json", exclude_unset=True)
    extra = _unknown_fields(dict(data), kept)
    if extra:
        shown = ", ".join(extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
        raise HostInputError(
            f"{source} has field(s) kvtune {__version__} does not know: {shown}; it was written "
            f"by another version of kvtune, whose facts this one could read wrongly; {fix}")
    return report


def read_probe_file(path: pathlib.Path) -> ProbedHost:
    """The probe in `path`; raises HostInputError naming the file and what is wrong."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise HostInputError(f"cannot read {path}: {err}") from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise HostInputError(
            f"{path} is not a kvtune probe: it is not JSON ({err}); {PROBE_HOW}") from err
    if not isinstance(data, dict):
        raise HostInputError(f"{path} is not a kvtune probe: it holds a JSON "
                             f"{type(data).__name__}, not an object; {PROBE_HOW}")
    stamp = {key: data.get(key) for key in STAMP_KEYS}
    if stamp["kind"] is None and stamp["apiVersion"] is None:
        looks = (f" (it looks like the output of a kvtune before {__version__}, which did not "
                 "stamp its probes)" if {"cpu", "numa", "memory"} <= data.keys() else
                 " (it looks like the output of `kvtune probe --vms --json`, which audits VMs "
                 "too: leave out --vms)" if {"host", "vms"} <= data.keys() else "")
        raise HostInputError(
            f"{path} is not a kvtune probe: it has no apiVersion and kind{looks}; {PROBE_HOW}")
    if stamp["kind"] != PROBE_KIND or not str(stamp["apiVersion"]).startswith(f"{API_GROUP}/"):
        raise HostInputError(
            f"{path} is a {stamp['apiVersion']} {stamp['kind']}, not a kvtune probe "
            f"({GROUP_VERSION} {PROBE_KIND}); {PROBE_HOW}")
    if stamp["apiVersion"] != GROUP_VERSION or stamp["kvtuneVersion"] != __version__:
        raise HostInputError(
            f"{path} was written by kvtune {stamp['kvtuneVersion']} ({stamp['apiVersion']}), "
            f"and this is kvtune {__version__} ({GROUP_VERSION}): a report of another version "
            f"may name or mean fields otherwise; {PROBE_HOW}")
    body = {key: value for key, value in data.items() if key not in STAMP_KEYS}
    return ProbedHost(str(path), _report(body, str(path), PROBE_HOW))


def probe_this_host(root: pathlib.Path) -> ProbedHost:
    """This host, probed now (read-only), as the agent probes it."""
    import socket

    from kvtune_agent.host.hostfs import HostFS
    from kvtune_agent.wiring import probe_host

    node = socket.gethostname()
    return ProbedHost(f"this host ({node})", probe_host(HostFS(root)), node=node)


PLURAL = "hypervisornodestates"


def from_cluster(api: t.Any, nodes: list[str]) -> list[ProbedHost]:
    """The hosts that the node states of the cluster behind `api` (a kubernetes ApiClient)
    report, all of them or those of `nodes`; raises HostInputError naming the node."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        states = client.CustomObjectsApi(api).list_cluster_custom_object(
            API_GROUP, API_VERSION, PLURAL)["items"]
    except (ApiException, HTTPError) as err:
        why = f"{err.status} {err.reason}" if isinstance(err, ApiException) else str(err)
        raise HostInputError(
            f"cannot list the {PLURAL}.{API_GROUP} of the cluster at {api.configuration.host} "
            f"({why}): check the kubeconfig, and that kvtune's CRDs are installed") from err
    by_name = {state["metadata"]["name"]: state for state in states}
    missing = [name for name in nodes if name not in by_name]
    if missing or not by_name:
        raise HostInputError(
            f"the cluster has no HypervisorNodeState for {', '.join(missing) or 'any node'}: "
            "node states exist for the nodes a profile selects; apply an Audit profile that "
            "selects them (e.g. deploy/samples/audit-only.yaml) and wait for their agents' "
            "reports, or probe the nodes with `kvtune probe --json` and give the files")
    core = client.CoreV1Api(api)
    hosts = []
    for name in nodes or sorted(by_name):
        source = f"node {name}"
        host = (by_name[name].get("status") or {}).get("host")
        if not host:
            raise HostInputError(
                f"{source} has not reported its host yet (its HypervisorNodeState has no "
                "status.host): wait for its agent's first report, or leave the node out")
        fix = "run the agent of this kvtune version on it, or use this version's probe file"
        try:
            meta = core.read_node(name).metadata
        except ApiException as err:
            raise HostInputError(f"cannot read the Node of {source} ({err.status} "
                                 f"{err.reason}), whose annotations the agent plans with; "
                                 "leave the node out") from err
        hosts.append(ProbedHost(source, _report(host, source, fix), node=name,
                                labels=dict(meta.labels or {}),
                                annotations=dict(meta.annotations or {})))
    return hosts
