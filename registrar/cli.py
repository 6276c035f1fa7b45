"""`hallmark-registrar`: register a Kubernetes cluster's pods as a Hallmark tenant's entries."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from types import FrameType

from registrar.controller import Registrar, Settings
from registrar.hallmark_api import HallmarkApi, HallmarkError
from registrar.kube import KubeClient, KubeConfig, KubeError
from registrar.templates import TemplateError

DESCRIPTION = """\
Watches Pods, Namespaces and ClusterSPIFFEID resources (hallmark.dev/v1alpha1) and keeps the
tenant's registration entries in step through Hallmark's batch API: an entry for each pod a
ClusterSPIFFEID selects, deleted when the pod goes, updated when the resource changes. Its
entries are those under its node aliases (--parent-id-template) carrying a k8s:pod-uid:
selector; it never changes any other entry. Use an API token with role "registrar" (and a
spiffe_id_prefix, so a wrong template cannot claim identities outside it).
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hallmark-registrar",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--server",
        default=os.environ.get("HALLMARK_URL"),
        help="Hallmark's URL, e.g. https://hallmark.example.com (env HALLMARK_URL)",
    )
    p.add_argument(
        "--token-file",
        default=os.environ.get("HALLMARK_TOKEN_FILE"),
        help="file holding the registrar's API token (env HALLMARK_TOKEN_FILE; or HALLMARK_TOKEN)",
    )
    p.add_argument("--server-ca", help="CA bundle for Hallmark's TLS (default: system CAs)")
    p.add_argument("--cluster-name", required=True, help="this cluster's name (in node aliases)")
    p.add_argument("--cluster-domain", default="cluster.local", help="for {{ .ClusterDomain }}")
    p.add_argument(
        "--parent-id-template",
        default=Settings.parent_id_template,
        help="each pod's parent: the alias of its node's agent (default: %(default)s)",
    )
    p.add_argument(
        "--kubeconfig",
        default=os.environ.get("KUBECONFIG"),
        help="kubeconfig file (default: the pod's service account, in the cluster)",
    )
    p.add_argument("--context", help="kubeconfig context (default: current-context)")
    p.add_argument(
        "--resync", type=float, default=300.0, help="full resync period, seconds (%(default)s)"
    )
    p.add_argument(
        "--settle",
        type=float,
        default=0.5,
        help="seconds to gather a burst of events before reconciling (%(default)s)",
    )
    p.add_argument("--once", action="store_true", help="list, reconcile once and exit")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    log = logging.getLogger("hallmark.registrar")
    if not args.server:
        print("hallmark-registrar: --server (or HALLMARK_URL) is required", file=sys.stderr)
        return 2
    token = os.environ.get("HALLMARK_TOKEN", "")
    if args.token_file:
        token = open(args.token_file).read().strip()  # noqa: SIM115, PTH123
    if not token:
        print("hallmark-registrar: --token-file (or HALLMARK_TOKEN) is required", file=sys.stderr)
        return 2
    try:
        config = (
            KubeConfig.from_kubeconfig(args.kubeconfig, args.context)
            if args.kubeconfig
            else KubeConfig.in_cluster()
        )
    except (KubeError, OSError, KeyError) as exc:
        print(f"hallmark-registrar: Kubernetes credentials: {exc}", file=sys.stderr)
        return 2
    registrar = Registrar(
        KubeClient(config),
        HallmarkApi(args.server, token, ca_path=args.server_ca),
        Settings(
            cluster_name=args.cluster_name,
            cluster_domain=args.cluster_domain,
            parent_id_template=args.parent_id_template,
            resync=args.resync,
            settle=args.settle,
        ),
    )
    try:
        registrar.start()
    except (HallmarkError, TemplateError) as exc:
        print(f"hallmark-registrar: {exc}", file=sys.stderr)
        return 1

    def stop(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        registrar.stop_event.set()
        registrar.wake.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.once:
        registrar.idle.wait()
        registrar.stop()
        return 1 if registrar.failures else 0
    registrar.stop_event.wait()
    registrar.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
