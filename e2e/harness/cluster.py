"""The object e2e tests get from the `cluster` fixture: kubectl, kubeconfig and Prometheus access.

It holds no processes (those belong to `harness.session.Session`), so the same object describes a
cluster the harness started and an existing one named by THRIFTY_E2E_KUBECONFIG.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

_JOB_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
# kubectl calls get a generous bound so a wedged API server fails a test instead of hanging CI;
# callers that wait longer on purpose (kubectl wait --timeout=...) pass their own.
DEFAULT_KUBECTL_TIMEOUT_SECONDS = 300.0
# kubectl's own words when no request reached the API server: no TCP connection or no TLS
# session. On two cores busy with real vLLM engines the API server can miss kubectl's 10 s TLS
# handshake; the request was never sent, so sending it again is safe for every verb (unlike a
# timeout awaiting headers, where the server may have acted).
_NOT_SENT = re.compile(
    r"Unable to connect to the server: (net/http: TLS handshake timeout|dial tcp [^\n]*)"
)
NOT_SENT_ATTEMPTS = 4

T = TypeVar("T")


class KubectlError(subprocess.CalledProcessError):
    """A failed kubectl call whose message carries kubectl's stderr, so test failures explain
    themselves."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstderr: {self.stderr}\nstdout: {self.output}"


@dataclass(frozen=True)
class Cluster:
    """Access to a running cluster and its Prometheus (the e2e fixture contract)."""

    kubeconfig: Path
    bin_dir: Path
    prometheus_url: str
    kubectl_path: Path
    # Directory Prometheus's file_sd watches; None when Prometheus is remote and no directory was
    # named, in which case add_scrape_targets cannot work and says so.
    scrape_sd_dir: Path | None
    # True when the harness started this cluster (so tests may rely on the exact versions built).
    local: bool

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float | None = DEFAULT_KUBECTL_TIMEOUT_SECONDS,
        attempts: int = NOT_SENT_ATTEMPTS,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster; raise KubectlError on a non-zero exit when `check`.

        A call that never reached the API server is sent again, up to `attempts` times in all;
        a probe of whether the server is up passes 1.
        """
        cmd = [str(self.kubectl_path), "--kubeconfig", str(self.kubeconfig), *args]
        for attempt in range(1, attempts + 1):
            result = subprocess.run(
                cmd, input=input, capture_output=True, text=True, timeout=timeout, check=False
            )
            if result.returncode == 0 or not _NOT_SENT.search(result.stderr):
                break
            if attempt < attempts:
                time.sleep(attempt)
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, cmd, result.stdout, result.stderr)
        return result

    def kubectl_json(self, *args: str) -> dict[str, Any]:
        """Run kubectl with `-o json` and return the parsed object."""
        parsed = json.loads(self.kubectl(*args, "-o", "json").stdout)
        if not isinstance(parsed, dict):
            raise TypeError(f"kubectl {' '.join(args)} did not return a JSON object")
        return parsed

    def apply(self, manifest: str) -> None:
        """`kubectl apply` a YAML or JSON manifest given as text."""
        self.kubectl("apply", "-f", "-", input=manifest)

    def add_scrape_targets(self, job: str, targets: list[str], labels: Mapping[str, str]) -> None:
        """Make Prometheus scrape `targets` (host:port) under `job`, with extra target `labels`.

        Written as one file_sd file per job (replacing that job's previous targets) and picked up
        by Prometheus without a reload. Labels may include `__metrics_path__` and `__scheme__`.
        """
        if self.scrape_sd_dir is None:
            raise RuntimeError(
                "Prometheus is remote (THRIFTY_E2E_PROMETHEUS_URL) and no file_sd directory was "
                "named: set THRIFTY_E2E_PROMETHEUS_SD_DIR to a directory its file_sd_configs watch"
            )
        if not _JOB_NAME.match(job):
            raise ValueError(f"job name {job!r} must match {_JOB_NAME.pattern}")
        groups = [{"targets": list(targets), "labels": {**labels, "job": job}}]
        final = self.scrape_sd_dir / f"{job}.json"
        # Prometheus reads every *.json in the directory: write beside it under another suffix and
        # rename, so it never sees a half-written file.
        partial = self.scrape_sd_dir / f"{job}.json.partial"
        partial.write_text(json.dumps(groups))
        os.replace(partial, final)

    def remove_scrape_targets(self, job: str) -> None:
        """Stop scraping the targets added under `job`."""
        if self.scrape_sd_dir is not None:
            (self.scrape_sd_dir / f"{job}.json").unlink(missing_ok=True)


def wait_until(
    probe: Callable[[], T | None],
    *,
    timeout_seconds: float,
    what: str,
    interval_seconds: float = 0.5,
) -> T:
    """Poll `probe` until it returns something other than None; raise TimeoutError naming `what`.

    The last exception raised by `probe` (if any) is chained: a timeout shows why it kept failing.
    """
    deadline = time.monotonic() + timeout_seconds
    last_error: Exception | None = None
    while True:
        try:
            value = probe()
        except Exception as error:  # the probe is retried; the last error explains a timeout
            last_error = error
        else:
            if value is not None:
                return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout_seconds:.0f}s waiting for {what}") from (
                last_error
            )
        time.sleep(interval_seconds)
