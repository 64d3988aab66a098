"""``python -m thrifty.control``: run the operator (kopf, standalone) with thrifty's settings.

Namespaces come from ``--namespace`` (repeatable) or THRIFTY_NAMESPACES (comma-separated); without
either the operator serves the whole cluster. GPUPools are cluster-scoped and always served.
Standalone: kopf's peering is not leader election (see thrifty.control.leadership).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import kopf

from thrifty.control import settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m thrifty.control", description=__doc__)
    parser.add_argument("--namespace", "-n", action="append", default=[], help="serve only these")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    if args.namespace:
        # The handlers read THRIFTY_NAMESPACES at import; keep flag and variable in agreement.
        os.environ["THRIFTY_NAMESPACES"] = ",".join(args.namespace)
    config = settings.from_env()
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    import thrifty.control  # noqa: F401  (registers the handlers)

    kopf.run(
        standalone=True,
        namespaces=list(config.namespaces),
        clusterwide=not config.namespaces,
        liveness_endpoint=config.liveness_endpoint,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
