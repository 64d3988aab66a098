"""extraArgs cannot set what the operator renders, in any spelling vLLM's parser would accept."""

from __future__ import annotations

import argparse
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from thrifty.api import engine_flags, gpupool, modelservice
from thrifty.reconciler import render

# From the adversarial run, plus the spellings argparse and vLLM's parser also accept.
OWNED_SPELLINGS = [
    ["-tp", "8"],
    ["-tp=8"],
    ["-t", "8"],
    ["--tensor_parallel_size=8"],
    ["--tensor-parallel", "8"],
    ["-pp", "2"],
    ["--port", "9000"],
    ["--por=9000"],
    ["--port.x=1"],
    ["--served_model_name=other"],
    ["--served-model", "other"],
    ["--shutdown_timeout=0"],
    ["--host", "127.0.0.1"],
    ["--data-parallel-size", "2"],
    ["-dp", "2"],
    ["--config", "/etc/passwd"],
    ["-q", "fp8"],
    ["-qfp8"],
    ["--max-model", "1000000"],
    ["--disable-log-stats"],
    ["--model=other/model"],
    ["--load_format", "dummy"],
    ["--", "other/model"],
]

ACCEPTED = [
    ["--enable-prefix-caching"],
    ["--max-num-batched-tokens", "8192"],
    ["--max_num_batched_tokens=8192"],
    ["--dtype", "bfloat16"],
    ["--enable-chunked-prefill"],
    ["-O3"],
    ["--compilation-config.level=3"],
    ["--enable-lora", "--lora-modules", "sql=org/sql-lora", "--max-loras", "2"],
    ["--config-format", "mistral"],
    ["--no-trust-remote-code"],
    ["-dcp", "2"],
    ["--seed", "-1"],
]

UNSAFE = [
    ["--trust-remote-code"],
    ["--trust_remote_code"],
    ["--trust"],
    ["--allowed-local-media-path", "/"],
    ["--middleware", "evil.Middleware"],
]


def spec_with(**engine: Any) -> dict[str, Any]:
    return {"model": {"uri": "hf://Qwen/Qwen3-0.6B"}, "pools": ["a"], "engine": engine}


@pytest.mark.parametrize("args", OWNED_SPELLINGS, ids=" ".join)
def test_every_spelling_of_an_owned_flag_is_refused_naming_the_entry(args: list[str]) -> None:
    with pytest.raises(ValidationError) as raised:
        modelservice.ModelServiceSpec.model_validate(spec_with(extraArgs=args))
    assert f"extraArgs[0] {args[0]!r}" in str(raised.value)


@pytest.mark.parametrize("args", ACCEPTED, ids=" ".join)
def test_ordinary_engine_flags_pass(args: list[str]) -> None:
    parsed = modelservice.ModelServiceSpec.model_validate(spec_with(extraArgs=args))
    assert list(parsed.engine.extra_args) == args


@pytest.mark.parametrize("args", UNSAFE, ids=" ".join)
def test_unsafe_flags_need_the_explicit_field(args: list[str]) -> None:
    with pytest.raises(ValidationError, match="allowUnsafeArgs"):
        modelservice.ModelServiceSpec.model_validate(spec_with(extraArgs=args))
    allowed = spec_with(extraArgs=args, allowUnsafeArgs=True)
    assert modelservice.ModelServiceSpec.model_validate(allowed).engine.allow_unsafe_args


@pytest.mark.parametrize("name", sorted(engine_flags.MANAGED_ENV))
def test_env_cannot_set_what_the_operator_sets(name: str) -> None:
    with pytest.raises(ValidationError, match=f"env {name}"):
        modelservice.ModelServiceSpec.model_validate(spec_with(env=[{"name": name, "value": "x"}]))


def _maximal_spec(uri: str) -> modelservice.ModelServiceSpec:
    return modelservice.ModelServiceSpec.model_validate(
        {
            "model": {"uri": uri, **({"revision": "main"} if uri.startswith("hf://") else {})},
            "servedModelName": "m",
            "pools": ["a"],
            "engine": {
                "tensorParallelSize": 2,
                "pipelineParallelSize": 2,
                "maxModelLen": 8192,
                "gpuMemoryUtilization": 0.9,
                "maxNumSeqs": 64,
                "quantization": "fp8",
                "kvCacheDtype": "fp8",
            },
        }
    )


@pytest.mark.parametrize("uri", ["hf://org/model", "s3://bucket/model", "pvc://claim/model"])
def test_every_flag_render_writes_is_in_the_owned_list(uri: str) -> None:
    """The list is derived from what render writes: a new rendered flag must join it."""
    rendered = [a for a in render.engine_args("m", _maximal_spec(uri)) if a.startswith("-")]
    assert rendered
    for flag in rendered:
        owned = engine_flags.owned_flag(flag)
        assert owned is not None and owned.name == flag, flag


# --- agreement with argparse itself -------------------------------------------------------------

# A slice of vLLM's option table: the owned flags (with their aliases) and neighbours that share
# prefixes with them, so abbreviations are ambiguous exactly where they are in vLLM.
_NEIGHBOURS = [
    "--max-num-batched-tokens",
    "--max-loras",
    "--model-impl",
    "--config-format",
    "--tokenizer",
    "--port-range",
    "--seed",
    "--enable-prefix-caching",
    "--data-parallel-address",
    "-dcp",
    "-O",
]


def _vllm_like_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(exit_on_error=False, add_help=False)  # allow_abbrev: on
    for flag in engine_flags.MANAGED:
        parser.add_argument(flag.name, *flag.short, dest="owned_" + flag.name[2:])
    for name in _NEIGHBOURS:
        parser.add_argument(name, dest="other_" + name.strip("-"))
    return parser


def _vllm_normalise(arg: str) -> str:
    """FlexibleArgumentParser: ``_`` -> ``-`` in a ``--`` name before the first ``.``."""
    if not arg.startswith("--"):
        return arg
    key, eq, value = arg.partition("=")
    head, dot, tail = key.partition(".")
    return head.replace("_", "-") + dot + tail + eq + value


_NAME_PARTS = st.sampled_from(
    [f.name for f in engine_flags.MANAGED]
    + [s for f in engine_flags.MANAGED for s in f.short]
    + _NEIGHBOURS
)


@st.composite
def _spellings(draw: st.DrawFn) -> str:
    """Prefixes, underscore variants and attached values of real option names."""
    name = draw(_NAME_PARTS)
    cut = draw(st.integers(min_value=2, max_value=len(name)))
    spelled = name[:cut]
    if draw(st.booleans()):
        spelled = spelled[:2] + spelled[2:].replace("-", "_")
    suffix = draw(st.sampled_from(["", "=1", "1"]))
    return spelled + suffix


@given(arg=_spellings())
def test_an_argument_the_check_passes_never_sets_an_owned_flag_in_argparse(arg: str) -> None:
    if engine_flags.owned_flag(arg) is not None:
        return
    try:
        parsed, _ = _vllm_like_parser().parse_known_args([_vllm_normalise(arg), "1"])
    except (argparse.ArgumentError, SystemExit):
        return  # ambiguous or malformed: vLLM stops, it does not run with another value
    owned = {k: v for k, v in vars(parsed).items() if k.startswith("owned_") and v is not None}
    assert not owned, f"{arg!r} passed the check but argparse set {owned}"


def test_gpu_pool_names_are_label_values() -> None:
    """Pool names reach a pod label: the same limit as the GPUPool's own name rule."""
    with pytest.raises(ValidationError, match="pools"):
        modelservice.ModelServiceSpec.model_validate(
            {"model": {"uri": "hf://a/b"}, "pools": ["p" * 64]}
        )
    assert gpupool.MAX_NAME_LENGTH == 63


def test_a_flags_value_is_read_as_vllms_parser_reads_it() -> None:
    name = engine_flags.MAX_NUM_BATCHED_TOKENS
    assert engine_flags.value_of(["--enable-prefix-caching"], name) is None
    assert engine_flags.value_of(["--max-num-batched-tokens", "2048"], name) == (0, "2048")
    assert engine_flags.value_of(["-x", "--max_num_batched_tokens=512"], name) == (1, "512")
    # The last setting wins; a flag with no value left after it sets nothing.
    args = ["--max-num-batched-tokens=1024", "--max-num-batched-tokens", "4096"]
    assert engine_flags.value_of(args, name) == (1, "4096")
    assert engine_flags.value_of(["--max-num-batched-tokens"], name) is None
    assert engine_flags.value_of(["--max-num-batched-tokens-x=1"], name) is None
