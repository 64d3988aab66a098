"""``python -m thrifty.control``: run the operator (kopf, standalone) with thrifty's settings.

Namespaces come from ``--namespace`` (repeatable) or THRIFTY_NAMESPACES (comma-separated); without
either the operator serves the whole cluster. GPUPools are cluster-scoped and always served.
Standalone: kopf's peering is not leader election (see thrifty.control.leadership).
THRIFTY_LOG_FORMAT picks the log lines: `plain` text (default) or `json`, one object per line.
"""

from __future__ import annotations

import argparse
import logging
import sys

import kopf

from thrifty.control import settings  # the package import registers every handler


def configure_logging(log_format: settings.LogFormat, *, verbose: bool) -> None:
    if log_format == "json":
        # kopf's JSON formatter also carries the Kubernetes object a handler's record is about.
        kopf.configure(log_format=kopf.LogFormat.JSON, verbose=verbose)
        return
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m thrifty.control", description=__doc__)
    parser.add_argument("--namespace", "-n", action="append", default=[], help="serve only these")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    try:
        log_format = settings.log_format_from_env()
        config = settings.from_env()
    except settings.SettingsError as error:
        parser.error(str(error))  # exits 2 naming the variable, before kopf starts
    namespaces = list(args.namespace) or list(config.namespaces)
    configure_logging(log_format, verbose=args.verbose)
    kopf.run(
        memo=kopf.Memo(thrifty_namespaces=tuple(namespaces)),
        standalone=True,
        namespaces=namespaces,
        clusterwide=not namespaces,
        liveness_endpoint=config.liveness_endpoint,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
