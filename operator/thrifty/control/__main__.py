"""``python -m thrifty.control``: run the operator (kopf, standalone) with thrifty's settings.

Namespaces come from ``--namespace`` (repeatable) or THRIFTY_NAMESPACES (comma-separated); without
either the operator serves the whole cluster. GPUPools are cluster-scoped and always served.
Standalone: kopf's peering is not leader election (see thrifty.control.leadership).
"""

from __future__ import annotations

import argparse
import logging
import sys

import kopf

from thrifty.control import settings  # the package import registers every handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m thrifty.control", description=__doc__)
    parser.add_argument("--namespace", "-n", action="append", default=[], help="serve only these")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    config = settings.from_env()
    namespaces = list(args.namespace) or list(config.namespaces)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    kopf.run(
        standalone=True,
        namespaces=namespaces,
        clusterwide=not namespaces,
        liveness_endpoint=config.liveness_endpoint,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
