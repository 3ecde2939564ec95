"""`kvtune profile suggest`: the command line around `suggest` (which hosts, which VMs, where
the YAML goes); the choices themselves are made in suggest.py.

The parser is built for every kvtune command, `kvtune probe` included, whose start-up is
measured in milliseconds (bench/probe_bench.py): the profile's models and the agent's planner
are imported only when the command runs.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import typing as t

if t.TYPE_CHECKING:
    from .hosts import ProbedHost


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    profile = sub.add_parser("profile", help="work with HypervisorProfiles")
    verbs = profile.add_subparsers(dest="verb", required=True)
    cmd = verbs.add_parser(
        "suggest", help="propose a profile every given host can satisfy, each choice with why",
        description="Propose a HypervisorProfile that every given host can satisfy, from "
        "their probes: hugepage pools within the memory budget the agent enforces, dedicated "
        "CPUs and NUMA passthrough where every kubelet allows them, SR-IOV, macvtap and LUN "
        "rules for devices every host offers alike. Without files or --from-cluster, this "
        "host is probed (read-only).")
    cmd.add_argument("files", nargs="*", type=pathlib.Path, metavar="PROBE.json",
                     help="files written by `kvtune probe --json` on each host")
    cmd.add_argument("--from-cluster", action="store_true",
                     help="read the hosts from the node states of the cluster of --kubeconfig")
    cmd.add_argument("--node", action="append", default=[], metavar="NAME",
                     help="with --from-cluster: only this node (repeatable; default: all)")
    cmd.add_argument("--kubeconfig", help="with --from-cluster: the kubeconfig (default: "
                     "$KUBECONFIG or ~/.kube/config)")
    cmd.add_argument("--root", type=pathlib.Path, default=pathlib.Path("/"),
                     help="without files: the host root to probe (default %(default)s)")
    cmd.add_argument("--name", default="suggested", help="the profile's name (default "
                     "%(default)s)")
    cmd.add_argument("--mode", choices=("Audit", "Enforce"), default="Audit",
                     help="spec.mode (default %(default)s: report, change nothing)")
    cmd.add_argument("--node-selector", metavar="KEY=VALUE[,KEY=VALUE]",
                     help="spec.nodeSelector.matchLabels (default: the probed nodes by name)")
    cmd.add_argument("--vm", metavar="Ncpu/MEMORY",
                     help="size the pools for VMs of this shape, e.g. 4cpu/16Gi")
    cmd.add_argument("--vms-per-node", type=int, metavar="N",
                     help="with --vm: VMs each node is to hold; a node that cannot is named")
    cmd.add_argument("-o", "--output", type=pathlib.Path,
                     help="write the profile to this file (default: stdout)")
    cmd.set_defaults(func=run)


def _labels(text: str) -> dict[str, str]:
    import pydantic
    from kvtune_api.v1alpha1.common import (
        LABEL_KEY_FORM,
        LABEL_VALUE_FORM,
        LabelSelectorRequirement,
    )

    from .suggestion import SuggestError

    form = ("write KEY=VALUE pairs separated by commas, e.g. "
            "node-role.kubernetes.io/hypervisor=")
    labels = {}
    for pair in text.split(","):
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SuggestError(f"--node-selector {text!r}: {form}")
        labels[key.strip()] = value.strip()
    for key, value in labels.items():  # the forms the CRD checks in matchLabels
        try:
            LabelSelectorRequirement(key=key, operator="In", values=[value])
        except pydantic.ValidationError as err:
            what = (f"the key {key!r}: {LABEL_KEY_FORM}" if err.errors()[0]["loc"][0] == "key"
                    else f"the value {value!r}: {LABEL_VALUE_FORM}")
            raise SuggestError(f"--node-selector {text!r}: {what}") from err
    return labels


def _hosts(args: argparse.Namespace) -> list[ProbedHost]:
    from .hosts import from_cluster, probe_this_host, read_probe_file
    from .suggestion import SuggestError

    if args.from_cluster:
        if args.files:
            raise SuggestError("give probe files or --from-cluster, not both")
        from kubernetes.config import ConfigException
        from kvtune_operator.common.kube import api_client

        if args.kubeconfig:
            import os

            os.environ["KUBECONFIG"] = args.kubeconfig
        try:
            api = api_client()
        except ConfigException as err:
            raise SuggestError(f"--from-cluster: no cluster to read ({err}); give "
                               "--kubeconfig or set $KUBECONFIG") from err
        return from_cluster(api, args.node)
    if args.node:
        raise SuggestError("--node needs --from-cluster")
    if args.files:
        return [read_probe_file(path) for path in args.files]
    return [probe_this_host(args.root)]


def run(args: argparse.Namespace) -> int:
    from kvtune_api import __version__

    from .hosts import HostInputError
    from .suggest import Options, suggest
    from .suggest_yaml import render
    from .suggestion import SuggestError, VmShape, profile_name

    try:
        if args.vms_per_node is not None and args.vms_per_node < 1:
            raise SuggestError("--vms-per-node must be at least 1")
        options = Options(
            name=profile_name(args.name), mode=args.mode,
            node_labels=_labels(args.node_selector) if args.node_selector else None,
            vm=VmShape.parse(args.vm) if args.vm else None, vms_per_node=args.vms_per_node)
        hosts = _hosts(args)
        suggestion = suggest(hosts, options)
    except (HostInputError, SuggestError) as err:
        print(f"kvtune profile suggest: {err}", file=sys.stderr)
        return 1
    header = [
        f"Suggested by kvtune {__version__} `kvtune profile suggest` for: "
        + ", ".join(h.source for h in hosts) + ".",
        "Each choice says why; what is not asked for says why not. Apply it with "
        "`kubectl apply -f` this file: " + (
            "in Audit the agents report what Enforce would change (kubectl get hvns -o yaml: "
            "status.plan), then set spec.mode: Enforce." if options.mode == "Audit" else
            "in Enforce the agents make the changes at once; those that need a drain wait "
            "for one (rollout.allowDrain is false)."),
        *(f"WARNING: {line}" for line in suggestion.shortfalls),
    ]
    text = render(suggestion, header)
    for line in suggestion.shortfalls:
        print(f"kvtune profile suggest: {line}", file=sys.stderr)
    if args.output:
        args.output.write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
