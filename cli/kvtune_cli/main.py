"""Entry point of the `kvtune` console script; each subcommand delegates to its own module."""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import pathlib
import shlex
import sys
from collections.abc import Sequence

#: Default ports of /metrics (docs/metrics.md). The operator's 8080 is its liveness endpoint, so
#: its metrics take the next port, and the webhook's the one after (apart, for one host running
#: both, as the demo does); the agent's 9101 is apart from the ports of node exporters
#: (9100) and kubelets (10250 and up), for a person who runs it on a host outside a pod.
OPERATOR_METRICS_PORT = 8081
AGENT_METRICS_PORT = 9101
WEBHOOK_METRICS_PORT = 8082


def _cmd_crds(args: argparse.Namespace) -> int:
    from kvtune_api import crdgen

    for path in crdgen.write_crds(args.out):
        print(f"wrote {path}")
    return 0


def _cmd_docs(args: argparse.Namespace) -> int:
    from kvtune_api import apidocs

    args.out.write_text(apidocs.render_files(args.crds))
    print(f"wrote {args.out}")
    return 0


def _cmd_probe(args: argparse.Namespace) -> int:
    # The engine's probe and the registry, not kvtune_agent.wiring: the cycle it also binds
    # would import prometheus_client, which a probe has no use for.
    from kvtune_agent.engine.probe import probe_host
    from kvtune_agent.features import FEATURES
    from kvtune_agent.host.hostfs import HostFS

    fs = HostFS(args.root)
    processes = fs.processes()  # read once, for the probe and the VM audit
    report = probe_host(FEATURES, fs, processes)
    if args.vms:  # the running VMs' audit too (kvtune_agent.audit), as in a node's status
        from kvtune_agent.audit.report import probe_output

        print(probe_output(fs, report, processes, as_json=args.json, host_uri=args.libvirt_uri))
        return 0
    if args.json:
        print(report.model_dump_json(indent=2, exclude_none=True))
    else:
        from kvtune_agent.report import format_report

        print(format_report(report))
    return 0


def _cmd_operator(args: argparse.Namespace) -> int:
    import kopf
    import kvtune_operator.controller.handlers  # noqa: F401  (registers the handlers)
    from kvtune_operator.common.kube import api_client
    from kvtune_operator.controller.kube import Kube
    from kvtune_operator.controller.settings import Settings

    if args.kubeconfig:
        # One setting for both clients: kopf's login and ours read $KUBECONFIG.
        os.environ["KUBECONFIG"] = args.kubeconfig
    settings = Settings(
        **({"peering_priority": args.peering_priority} if args.peering_priority is not None
           else {}),
        peering_lifetime_seconds=args.peering_lifetime,
        agent_image=args.agent_image,
        namespace=args.namespace,
    )
    # Structured (JSON) logs for log collectors in a cluster; plain text for people.
    kopf.configure(log_format=kopf.LogFormat[args.log_format.upper()])
    serve_metrics(args)
    memo = kopf.Memo(settings=settings, kube=Kube(api_client()))
    kopf.run(clusterwide=True, standalone=args.standalone, memo=memo,
             liveness_endpoint=args.liveness)
    return 0


def _cmd_webhook(args: argparse.Namespace) -> int:
    import asyncio

    import kopf
    from kvtune_operator.common.kube import api_client
    from kvtune_operator.webhook.configuration import WebhookSetupError
    from kvtune_operator.webhook.handlers import serve
    from kvtune_operator.webhook.kube import Kube
    from kvtune_operator.webhook.settings import WebhookSettings

    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig
    settings = WebhookSettings(
        port=args.port,
        host=args.host,
        service=args.service,
        cert_dir=args.cert_dir,
        tls_secret=args.tls_secret,
        failure_policy=args.failure_policy,
        timeout_seconds=args.timeout,
        namespace=args.namespace,
    )
    kopf.configure(log_format=kopf.LogFormat[args.log_format.upper()])
    serve_metrics(args)
    try:
        asyncio.run(serve(settings, Kube(api_client()), liveness=args.liveness))
    except WebhookSetupError as err:
        raise SystemExit(f"kvtune webhook: {err}") from err
    return 0


def _cmd_agent(args: argparse.Namespace) -> int:
    import signal
    import threading

    from kvtune_agent.agent import Agent, AgentSettings
    from kvtune_agent.kube import AgentKube, api_client

    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = AgentSettings(node=args.node, root=args.root, interval_seconds=args.interval)
    if args.systemctl:
        settings = dataclasses.replace(settings, systemctl=tuple(shlex.split(args.systemctl)))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    serve_metrics(args)
    Agent(AgentKube(api_client(), args.node), settings).run(stop)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from kvtune_cli.demo import run_demo

    return run_demo(once=args.once)


def serve_metrics(args: argparse.Namespace) -> None:
    """Serve prometheus_client's registry in a background thread, unless the port is 0."""
    if not args.metrics_port:
        return
    import prometheus_client

    try:
        prometheus_client.start_http_server(args.metrics_port, addr=args.metrics_address)
    except OSError as err:
        raise SystemExit(
            f"cannot serve metrics on {args.metrics_address}:{args.metrics_port}: {err}; choose "
            "another --metrics-port, or 0 to serve none"
        ) from err


def _add_metrics_flags(parser: argparse.ArgumentParser, port: int) -> None:
    group = parser.add_argument_group("Prometheus metrics (see docs/metrics.md)")
    group.add_argument("--metrics-port", type=int, default=port,
                       help="port serving /metrics (default %(default)s; 0: no metrics)")
    group.add_argument("--metrics-address", default="0.0.0.0",
                       help="address /metrics listens on (default %(default)s: every interface, "
                       "so that Prometheus can scrape the pod)")


def _add_webhook_flags(parser: argparse.ArgumentParser) -> None:
    from kvtune_operator.webhook.settings import WebhookSettings

    default = WebhookSettings()  # the defaults, and their reasons, live in WebhookSettings
    parser.add_argument("--port", type=int, default=default.port,
                        help="port to listen on (default %(default)s)")
    parser.add_argument("--host", default=default.host,
                        help="without --service: the host of the webhook URL given to the "
                        "apiserver, and the address listened on (default %(default)s)")
    parser.add_argument("--service", metavar="NAMESPACE/NAME",
                        help="the Service in front of the webhook pods (in a cluster): the "
                        "webhook configurations name it, port 443, instead of a URL")
    parser.add_argument("--cert-dir", type=pathlib.Path,
                        help="directory with tls.crt, tls.key and ca.crt made outside (e.g. a "
                        "mounted cert-manager Secret), reread every 5 minutes")
    parser.add_argument("--tls-secret", metavar="NAMESPACE/NAME",
                        help="Secret in which the replicas share a CA and certificate that "
                        "the webhook makes and renews itself (default: a CA in memory, for "
                        "one local process)")
    parser.add_argument("--failure-policy", choices=("Ignore", "Fail"),
                        default=default.failure_policy,
                        help="what the apiserver does with a VMI when the webhook cannot answer "
                        "(default %(default)s: admit it unshaped)")
    parser.add_argument("--timeout", type=int, default=default.timeout_seconds,
                        help="seconds the apiserver waits for each call, 1 to 30 "
                        "(default %(default)s)")
    parser.add_argument("--namespace", default=os.environ.get("POD_NAMESPACE"),
                        help="kvtune's namespace, whose VMIs never reach the webhook "
                        "(default: $POD_NAMESPACE)")


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", help="kubeconfig to use (default: in-cluster, then "
                        "$KUBECONFIG or ~/.kube/config)")
    parser.add_argument("--log-format", choices=["plain", "full", "json"], default="full",
                        help="log lines as text (plain/full) or one JSON object each (json)")
    parser.add_argument("--liveness", metavar="URL",
                        help="serve kopf's liveness endpoint for the kubelet's probe, e.g. "
                        "http://0.0.0.0:8080/healthz (default: none)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kvtune", description="Prepare KubeVirt nodes to run many VMs side by side."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    crds = sub.add_parser("crds", help="write the CRDs generated from the API models")
    crds.add_argument("--out", type=pathlib.Path, default=pathlib.Path("crds"))
    crds.set_defaults(func=_cmd_crds)

    docs = sub.add_parser("docs", help="write the API reference (docs/api.md) from the CRDs")
    docs.add_argument("--crds", type=pathlib.Path, default=pathlib.Path("crds"),
                      help="directory of the CRDs (default %(default)s)")
    docs.add_argument("--out", type=pathlib.Path, default=pathlib.Path("docs/api.md"),
                      help="file to write (default %(default)s)")
    docs.set_defaults(func=_cmd_docs)

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

    operator = sub.add_parser("operator", help="run the operator")
    _add_run_flags(operator)
    operator.add_argument("--standalone", action="store_true",
                          help="no peering with other replicas (single replica, tests, demo)")
    operator.add_argument("--agent-image", default=os.environ.get("KVTUNE_AGENT_IMAGE"),
                          help="image of the node-agent DaemonSet to keep (default: "
                          "$KVTUNE_AGENT_IMAGE; unset: no DaemonSet is managed)")
    operator.add_argument("--namespace", default=os.environ.get("POD_NAMESPACE"),
                          help="namespace of the agent DaemonSet (default: $POD_NAMESPACE)")
    operator.add_argument("--peering-priority", type=int,
                          help="this replica's peering priority (default: random; the highest "
                          "replica works, the others stand by)")
    operator.add_argument("--peering-lifetime", type=int, default=60,
                          help="seconds after which a silent replica is presumed dead and "
                          "another takes over (default 60)")
    _add_metrics_flags(operator, OPERATOR_METRICS_PORT)
    operator.set_defaults(func=_cmd_operator)

    hook = sub.add_parser("webhook", help="serve the VMI admission webhook (docs/webhook.md)")
    _add_run_flags(hook)
    _add_webhook_flags(hook)
    _add_metrics_flags(hook, WEBHOOK_METRICS_PORT)
    hook.set_defaults(func=_cmd_webhook)

    agent = sub.add_parser("agent", help="run the node agent for one node")
    agent.add_argument("--node", required=True, help="the Node this agent prepares")
    agent.add_argument("--root", type=pathlib.Path, default=pathlib.Path("/"),
                       help="host root (/proc/1/root in a pod, a test tree in tests)")
    agent.add_argument("--interval", type=float, default=30.0,
                       help="seconds between drift checks (default 30)")
    agent.add_argument("--kubeconfig", help="kubeconfig (default: in-cluster, then $KUBECONFIG)")
    agent.add_argument("--systemctl", help="command reaching the host's systemctl (default: "
                       "nsenter into PID 1's namespaces, then systemctl)")
    _add_metrics_flags(agent, AGENT_METRICS_PORT)
    agent.set_defaults(func=_cmd_agent)

    demo = sub.add_parser("demo", help="local control plane + operator + webhook + agent on "
                          "this host (Audit: nothing on the host is changed)")
    demo.add_argument("--once", action="store_true",
                      help="exit after showing the result instead of waiting for Ctrl-C")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None, *, at_once: bool = False) -> int:
    """Run the command `argv` names; `at_once` (the `kvtune` command itself) lets `kvtune probe`,
    a short read-only process, skip the cyclic garbage collector and the interpreter's teardown.

    Both cost the probe about a fifth of its run (bench/probe_bench.py): the collector keeps
    walking the objects pydantic builds at import, which live to the end anyway, and the
    teardown frees them one by one just before the process ends. The probe holds nothing that
    needs finalising (no file open for writing, no atexit handler, no thread to wait for: a
    device read that hangs is a daemon thread), so once its output is flushed the process ends
    at once. Tests call main() in process without it.
    """
    args = build_parser().parse_args(argv)
    if not (at_once and args.func is _cmd_probe):
        code: int = args.func(args)
        return code
    gc.disable()
    try:
        code = args.func(args)
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:  # e.g. `kvtune probe --json | head`: the reader left early
        code = 1
    os._exit(code)


def run() -> None:
    """The `kvtune` console script."""
    sys.exit(main(at_once=True))


if __name__ == "__main__":
    run()
