"""The fleet mirror (`thrifty_runtime.fleet_mirror`) as a process, for e2e tests and benchmarks.

KWOK pods run no containers; the mirror serves a simulated vLLM engine per Running pod of one
namespace and writes their scrape targets into a Prometheus file_sd file. Requests reach the
engines through thrifty-gateway (gateway_process.py): start the mirror with
`--loopback-pod-network` so that each engine listens where its pod's EndpointSlice address leads.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def start_fleet_mirror(
    kubeconfig: Path,
    namespace: str,
    file_sd: Path,
    state_file: Path,
    log_path: Path,
    extra_args: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    """Starts the mirror; its output goes to `log_path`, its engines' list to `state_file`.
    `extra_args` are more of the mirror's options (e.g. `--vllm-work-dir DIR`)."""
    command = [sys.executable, "-m", "thrifty_runtime.fleet_mirror", "--namespace", namespace]
    command += ["--file-sd", str(file_sd), "--state-file", str(state_file), *extra_args]
    with log_path.open("wb") as log:
        return subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env={**os.environ, "KUBECONFIG": str(kubeconfig)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def stop(process: subprocess.Popen[bytes], timeout_seconds: float = 30) -> None:
    """SIGTERM (the mirror drains its engines), then SIGKILL if it does not exit in time."""
    process.terminate()
    try:
        process.wait(timeout=timeout_seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
