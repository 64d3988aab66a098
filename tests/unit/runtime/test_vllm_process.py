"""Which of the operator's rendered vLLM flags reach the real vLLM on a CPU."""

from __future__ import annotations

from pathlib import Path

from thrifty.api import modelservice
from thrifty.reconciler import render
from thrifty_runtime.vllm_process import CPU_FLAGS, cpu_engine_args

MODEL = Path("/cache/models/tiny-llama")


def _flags(args: list[str]) -> dict[str, str | None]:
    pairs: dict[str, str | None] = {}
    for index, token in enumerate(args):
        if token.startswith("--"):
            following = args[index + 1] if index + 1 < len(args) else None
            pairs[token] = None if following is None or following.startswith("--") else following
    return pairs


def test_rendered_gpu_flags_are_dropped_and_cpu_ones_added() -> None:
    spec = modelservice.ModelServiceSpec.model_validate(
        {
            "model": {"uri": "hf://meta-llama/Llama-3.1-70B-Instruct", "revision": "main"},
            "servedModelName": "llama-70b",
            "engine": {
                "tensorParallelSize": 4,
                "maxModelLen": 32768,
                "gpuMemoryUtilization": 0.92,
                "maxNumSeqs": 64,
                "quantization": "fp8",
                "kvCacheDtype": "fp8",
                "shutdownTimeoutSeconds": 45,
            },
            "pools": ["h100-on-demand"],
        }
    )
    args = cpu_engine_args(render.engine_args("llama-70b", spec), model_dir=MODEL, port=9001)
    flags = _flags(args)
    assert flags["--model"] == str(MODEL)
    assert flags["--served-model-name"] == "llama-70b"
    assert flags["--max-num-seqs"] == "64"
    assert flags["--shutdown-timeout"] == "45"
    assert flags["--max-model-len"] == "512"  # capped to what the tiny model holds
    assert flags["--port"] == "9001" and flags["--host"] == "127.0.0.1"
    for gpu_only in ("--tensor-parallel-size", "--gpu-memory-utilization", "--quantization",
                     "--kv-cache-dtype", "--revision"):  # fmt: skip
        assert gpu_only not in flags
    assert args[-len(CPU_FLAGS) :] == list(CPU_FLAGS)
    assert args.count("--model") == 1


def test_inline_values_bare_flags_and_a_missing_model_len() -> None:
    args = cpu_engine_args(
        [
            "vllm",
            "serve",
            "m",
            "--enable-prefix-caching",
            "--max-num-seqs=8",
            "--max-model-len",
            "128",
        ],
        model_dir=MODEL,
        port=1,
    )
    flags = _flags(args)
    assert flags["--max-num-seqs"] == "8"
    assert flags["--max-model-len"] == "128"
    assert "--enable-prefix-caching" not in flags
    assert _flags(cpu_engine_args([], model_dir=MODEL, port=1))["--max-model-len"] == "512"


def test_a_pods_loopback_twin_is_the_address_vllm_listens_on() -> None:
    # The fleet mirror with a loopback pod network: the pod IP's twin, at the container's port.
    args = cpu_engine_args(["--host", "0.0.0.0"], model_dir=MODEL, port=8000, host="127.7.0.4")
    flags = _flags(args)
    assert flags["--host"] == "127.7.0.4" and flags["--port"] == "8000"
    assert args.count("--host") == 1
