"""A real Prometheus (Debian's /usr/bin/prometheus) for one test session.

The configuration comes from e2e/prometheus/prometheus.yml.tmpl; the data directory is fresh in the
session's run directory, so sessions never see each other's series. A second Prometheus may share
the first one's file_sd directory (it then scrapes the same targets) and serve its API behind a web
configuration (TLS, client certificates, basic auth), as clusters run it.
"""

from __future__ import annotations

import shutil
import string
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.cluster import wait_until
from harness.ports import LOOPBACK

TEMPLATE = Path(__file__).resolve().parent.parent / "prometheus" / "prometheus.yml.tmpl"
READY_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class PrometheusProcess:
    pid: int
    url: str
    sd_dir: Path
    log_path: Path


def find_binary() -> Path:
    found = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None
    )
    if found is None:
        raise FileNotFoundError(
            "prometheus is not installed: run `bash scripts/bootstrap.sh` "
            "(or `apt-get install -y prometheus`)"
        )
    return Path(found)


def _ready(url: str) -> bool | None:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
            return True if response.status == 200 else None
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def start(
    run_dir: Path,
    port: int,
    *,
    sd_dir: Path | None = None,
    web_config: str | None = None,
    ready: Callable[[str], bool | None] | None = None,
) -> PrometheusProcess:
    """Start Prometheus on 127.0.0.1:`port` and wait until it is ready.

    `sd_dir`: scrape the targets another Prometheus's harness writes (default: its own directory).
    `web_config`: the YAML of `--web.config.file` (TLS, basic auth); with it the URL is https:// if
    it has `tls_server_config`, and `ready(url)` must probe readiness with the credentials."""
    binary = find_binary()
    home = run_dir / ("prometheus" if web_config is None else f"prometheus-{port}")
    sd_dir = sd_dir or home / "file_sd"
    data_dir = home / "data"
    sd_dir.mkdir(parents=True, exist_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    address = f"{LOOPBACK}:{port}"
    config = string.Template(TEMPLATE.read_text()).substitute(SD_DIR=str(sd_dir), SELF=address)
    config_path = home / "prometheus.yml"
    config_path.write_text(config)
    log_path = home / "prometheus.log"
    command = [
        str(binary),
        f"--config.file={config_path}",
        f"--storage.tsdb.path={data_dir}",
        f"--web.listen-address={address}",
        "--web.enable-lifecycle",
        "--storage.tsdb.retention.time=1d",
    ]
    scheme = "http"
    if web_config is not None:
        web_config_path = home / "web.yml"
        web_config_path.write_text(web_config)
        command.append(f"--web.config.file={web_config_path}")
        scheme = "https" if "tls_server_config" in web_config else "http"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own session: it survives the CLI that started it (`make cluster-up`) and a
            # Ctrl-C in the terminal does not reach it before the harness stops it.
            start_new_session=True,
        )
    url = f"{scheme}://{address}"
    is_ready = ready or _ready
    started = PrometheusProcess(pid=process.pid, url=url, sd_dir=sd_dir, log_path=log_path)

    def probe() -> bool | None:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"prometheus exited with {process.returncode}:\n{tail}")
        return is_ready(url)

    try:
        wait_until(probe, timeout_seconds=READY_TIMEOUT_SECONDS, what=f"prometheus ready at {url}")
    except Exception as error:
        process.kill()
        process.wait()
        raise RuntimeError(f"prometheus did not start (log: {log_path}): {error}") from error
    return started
