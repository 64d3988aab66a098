"""`thrifty-gateway` (or `python -m thrifty_runtime.gateway`): serve until SIGTERM, then drain.

In a pod it uses the service account (in-cluster config); elsewhere `--kubeconfig` or
$KUBECONFIG. On SIGTERM it fails readiness, refuses new and held requests with 503 and waits up to
`--drain-timeout` seconds for those in flight (keep terminationGracePeriodSeconds above it).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Sequence

from thrifty_runtime import podnet
from thrifty_runtime.gateway.holding import HoldSettings
from thrifty_runtime.gateway.kube import Watches
from thrifty_runtime.gateway.server import Gateway, GatewaySettings

log = logging.getLogger("thrifty_runtime.gateway")


def build_parser() -> argparse.ArgumentParser:
    hold = HoldSettings()
    gateway = GatewaySettings()
    parser = argparse.ArgumentParser(
        prog="thrifty-gateway",
        description="OpenAI-compatible gateway in front of thrifty's ModelServices.",
    )
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    parser.add_argument(
        "--namespace",
        action="append",
        default=[],
        help="serve this namespace (repeatable; default: all namespaces)",
    )
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=gateway.port)
    parser.add_argument("--max-body-bytes", type=int, default=gateway.max_body_bytes)
    parser.add_argument(
        "--max-concurrent-requests", type=int, default=gateway.max_concurrent_requests
    )
    parser.add_argument("--hold-timeout", type=float, default=hold.timeout_seconds)
    parser.add_argument("--hold-per-model", type=int, default=hold.per_service_cap)
    parser.add_argument("--hold-total", type=int, default=hold.total_cap)
    parser.add_argument("--release-per-endpoint", type=int, default=hold.release_per_endpoint)
    parser.add_argument("--retry-after", type=int, default=hold.retry_after_seconds)
    parser.add_argument("--drain-timeout", type=float, default=30.0)
    parser.add_argument(
        "--api-key-namespace",
        default=os.environ.get("POD_NAMESPACE"),
        help="namespace of the API-key Secrets (label thrifty.dev/tenant); default $POD_NAMESPACE",
    )
    parser.add_argument(
        "--allow-anonymous",
        action="store_true",
        help="serve requests without an API key as the tenant `anonymous`",
    )
    parser.add_argument(
        "--loopback-pod-network",
        type=podnet.parse_network,
        help="local cluster only: connect to the 127/8 twins of pod IPs in this network",
    )
    parser.add_argument("--log-level", default="info")
    return parser


def settings_from_args(args: argparse.Namespace) -> GatewaySettings:
    return GatewaySettings(
        host=args.host,
        port=args.port,
        max_body_bytes=args.max_body_bytes,
        max_concurrent_requests=args.max_concurrent_requests,
        allow_anonymous=args.allow_anonymous,
        loopback_pod_network=args.loopback_pod_network,
        hold=HoldSettings(
            per_service_cap=args.hold_per_model,
            total_cap=args.hold_total,
            timeout_seconds=args.hold_timeout,
            release_per_endpoint=args.release_per_endpoint,
            retry_after_seconds=args.retry_after,
        ),
    )


def _api_client(kubeconfig: str | None) -> object:
    from kubernetes import client, config

    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    else:
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_kube_config()  # type: ignore[no-untyped-call]
    return client.ApiClient()


async def serve(args: argparse.Namespace) -> None:
    gateway = Gateway(settings_from_args(args))
    loop = asyncio.get_running_loop()

    def synced() -> None:
        gateway.synced = True
        log.info("watches synced: serving %d models", len(gateway.catalog.models()))

    watches = Watches(
        _api_client(args.kubeconfig),
        gateway.catalog,
        loop,
        namespaces=args.namespace,
        tenants=gateway.tenants,
        key_namespace=args.api_key_namespace,
        on_synced=synced,
    )
    await gateway.start()
    # What exists now (modules, the app) lives as long as the process: out of the collector's
    # sight, so a full collection scans only per-request garbage (shorter pauses at p99).
    gc.freeze()
    watches.start()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("signal received: draining for up to %.0f s", args.drain_timeout)
    finished = await gateway.drain(args.drain_timeout)
    if not finished:
        log.warning("drain timeout reached with requests still in flight")
    watches.stop()
    await gateway.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
