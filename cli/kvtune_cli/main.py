"""Entry point of the `kvtune` console script; each subcommand delegates to its own module."""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
from collections.abc import Sequence


def _cmd_crds(args: argparse.Namespace) -> int:
    from kvtune_api import crdgen

    for path in crdgen.write_crds(args.out):
        print(f"wrote {path}")
    return 0


def _cmd_probe(args: argparse.Namespace) -> int:
    from kvtune_agent.hostfs import HostFS
    from kvtune_agent.probe import probe_host
    from kvtune_agent.report import format_report

    fs = HostFS(args.root)
    report = probe_host(fs)
    if args.vms:  # the running VMs' audit too (kvtune_agent.audit), as in a node's status
        from kvtune_agent.audit.report import probe_output

        print(probe_output(fs, report, as_json=args.json, host_uri=args.libvirt_uri))
        return 0
    if args.json:
        print(report.model_dump_json(indent=2, exclude_none=True))
    else:
        print(format_report(report))
    return 0


def _cmd_operator(args: argparse.Namespace) -> int:
    import kopf
    import kvtune_operator.handlers  # noqa: F401  (registers the handlers)
    from kvtune_operator.kube import Kube, api_client
    from kvtune_operator.settings import Settings

    if args.kubeconfig:
        # One setting for both clients: kopf's login and ours read $KUBECONFIG.
        os.environ["KUBECONFIG"] = args.kubeconfig
    settings = Settings(
        webhook=args.webhook,
        webhook_port=args.webhook_port,
        webhook_host=args.webhook_host,
        webhook_service=args.webhook_service,
        webhook_cert_dir=args.webhook_cert_dir,
        webhook_failure_policy=args.webhook_failure_policy,
        webhook_timeout_seconds=args.webhook_timeout,
    )
    memo = kopf.Memo(settings=settings, kube=Kube(api_client()))
    kopf.run(clusterwide=True, standalone=args.standalone, memo=memo,
             liveness_endpoint=args.liveness)
    return 0


def _add_webhook_flags(parser: argparse.ArgumentParser) -> None:
    from kvtune_operator.settings import Settings

    default = Settings()  # the defaults, and their reasons, live in Settings
    group = parser.add_argument_group("VMI admission webhook (see docs/webhook.md)")
    group.add_argument("--no-webhook", dest="webhook", action="store_false",
                       help="do not serve it, and delete kvtune's webhook configurations")
    group.add_argument("--webhook-port", type=int, default=default.webhook_port,
                       help="port to listen on (default %(default)s)")
    group.add_argument("--webhook-host", default=default.webhook_host,
                       help="without --webhook-service: the host of the webhook URL given to the "
                       "apiserver, and the address listened on (default %(default)s)")
    group.add_argument("--webhook-service", metavar="NAMESPACE/NAME",
                       help="the Service in front of the operator (in a cluster): the webhook "
                       "configurations name it, port 443, instead of a URL")
    group.add_argument("--webhook-cert-dir", type=pathlib.Path,
                       help="directory with tls.crt, tls.key and ca.crt (a mounted Secret); a "
                       "CA and certificate are generated there when none exists (default: a "
                       "temporary directory)")
    group.add_argument("--webhook-failure-policy", choices=("Ignore", "Fail"),
                       default=default.webhook_failure_policy,
                       help="what the apiserver does with a VMI when the webhook cannot answer "
                       "(default %(default)s: admit it unshaped)")
    group.add_argument("--webhook-timeout", type=int, default=default.webhook_timeout_seconds,
                       help="seconds the apiserver waits for each call, 1 to 30 "
                       "(default %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kvtune", description="Prepare KubeVirt nodes to run many VMs side by side."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    crds = sub.add_parser("crds", help="write the CRDs generated from the API models")
    crds.add_argument("--out", type=pathlib.Path, default=pathlib.Path("crds"))
    crds.set_defaults(func=_cmd_crds)

    probe = sub.add_parser("probe", help="report what this host offers VMs (read-only)")
    probe.add_argument(
        "--root", type=pathlib.Path, default=pathlib.Path("/"),
        help="host root to read (/proc/1/root in a pod, a test tree in tests)",
    )
    probe.add_argument("--json", action="store_true", help="print the HostReport as JSON")
    probe.add_argument("--vms", action="store_true",
                       help="also audit the running VMs through libvirt, read-only (with --json: "
                       '{"host": HostReport, "vms": NodeVmAudit})')
    probe.add_argument("--libvirt-uri", help="with --vms: a host-level libvirt (e.g. "
                       "qemu:///system) for VMs without a virt-launcher socket")
    probe.set_defaults(func=_cmd_probe)

    operator = sub.add_parser("operator", help="run the operator (and its admission webhook)")
    operator.add_argument("--kubeconfig", help="kubeconfig to use (default: in-cluster, then "
                          "$KUBECONFIG or ~/.kube/config)")
    operator.add_argument("--standalone", action="store_true",
                          help="no peering with other replicas (single replica, tests, demo)")
    operator.add_argument("--liveness", metavar="URL",
                          help="serve kopf's liveness endpoint for the kubelet's probe, e.g. "
                          "http://0.0.0.0:8080/healthz (default: none)")
    _add_webhook_flags(operator)
    operator.set_defaults(func=_cmd_operator)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
