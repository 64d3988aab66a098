"""Command line to start and stop a local cluster by hand (`make cluster-up`, `make cluster-down`).

    python -m harness up [--name N] [--apiserver-port P] [--prometheus-port P]
    python -m harness down [--name N]
    python -m harness status [--name N]
    python -m harness time        # start and stop a throwaway session, print the start time

`up` prints shell exports on stdout (progress goes to stderr), so `eval "$(make -s cluster-up)"`
points kubectl and the e2e tests at the cluster.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import time
from pathlib import Path

from harness import procs
from harness.session import STATE_FILE, HarnessError, Session, cache_dir, start_local


def _run_dir(name: str) -> Path:
    return cache_dir() / "run" / name


def _up(args: argparse.Namespace) -> int:
    began = time.monotonic()
    session = start_local(
        name=args.name,
        run_dir=_run_dir(args.name),
        kube_apiserver_port=args.apiserver_port,
        prometheus_port=args.prometheus_port,
        keep_run_dir=False,
    )
    cluster = session.cluster
    print(f"cluster {args.name} up in {time.monotonic() - began:.1f}s", file=sys.stderr)
    exports = {
        "KUBECONFIG": str(cluster.kubeconfig),
        "THRIFTY_E2E_KUBECONFIG": str(cluster.kubeconfig),
        "THRIFTY_E2E_PROMETHEUS_URL": cluster.prometheus_url,
        "THRIFTY_E2E_PROMETHEUS_SD_DIR": str(cluster.scrape_sd_dir),
        "PATH": f"{cluster.bin_dir}:$PATH",
    }
    for key, value in exports.items():
        quoted = f'"{value}"' if key == "PATH" else shlex.quote(value)
        print(f"export {key}={quoted}")
    return 0


def _down(args: argparse.Namespace) -> int:
    run_dir = _run_dir(args.name)
    if (run_dir / STATE_FILE).exists():
        problems = Session.load(run_dir).stop()
    else:
        # No state: a start that failed before recording it. End whatever still names the directory.
        procs.terminate(procs.pids_mentioning(f"{run_dir}/"))
        shutil.rmtree(run_dir, ignore_errors=True)
        problems = []
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"cluster {args.name} stopped", file=sys.stderr)
    return 1 if problems else 0


def _status(args: argparse.Namespace) -> int:
    run_dir = _run_dir(args.name)
    if not (run_dir / STATE_FILE).exists():
        print(f"no cluster {args.name} recorded in {run_dir}", file=sys.stderr)
        return 1
    session = Session.load(run_dir)
    print(f"kubeconfig: {session.cluster.kubeconfig}\nprometheus: {session.cluster.prometheus_url}")
    print(session.cluster.kubectl("get", "nodes", "-o", "wide", check=False).stdout)
    return 0


def _time(_: argparse.Namespace) -> int:
    began = time.monotonic()
    session = start_local()
    started = time.monotonic() - began
    problems = session.stop()
    stopped = time.monotonic() - began - started
    print(f"warm start of cluster + Prometheus: {started:.1f}s; stop: {stopped:.1f}s")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for command, handler in (("up", _up), ("down", _down), ("status", _status), ("time", _time)):
        sub = commands.add_parser(command)
        sub.set_defaults(handler=handler)
        sub.add_argument("--name", default="thrifty-dev", help="cluster name (default thrifty-dev)")
        if command == "up":
            sub.add_argument("--apiserver-port", type=int, help="fixed kube-apiserver port")
            sub.add_argument("--prometheus-port", type=int, help="fixed Prometheus port")
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except HarnessError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
