"""The vLLM flags and variables the operator owns, and how vLLM's parser would read an argument.

One list, used three ways: ``render`` spells the flags it writes from these constants, the CRD's
CEL rules are generated from it (admission refuses ``engine.extraArgs`` entries that would set one),
and the pydantic model applies the same test (so an object admitted before a CRD upgrade becomes
``Degraded`` naming the entry instead of running an engine that disagrees with its spec).

How vLLM reads ``vllm serve`` arguments (``vllm/utils/argparse_utils.py``, FlexibleArgumentParser):
a plain ``argparse.ArgumentParser`` with ``allow_abbrev`` left on, so ``--por`` is ``--port`` when
no other option starts with ``--por``; ``_`` becomes ``-`` in a ``--`` name up to the first ``.``;
``--name.key value`` is a JSON sub-key of ``--name``; ``--name=value`` carries its value; a single
dash takes a short alias, its abbreviation (``-t`` for ``-tp``) or an attached value (``-qfp8``);
a later repetition of a flag wins. The test here is deliberately wider than argparse: any entry
that *could* resolve to an owned flag (every prefix, any attached value) is refused, because the
operator cannot see vLLM's full option table at admission. A bare ``--`` (end of options) is
refused too: what follows would become the positional model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Flag:
    """A vLLM option with its short aliases, and why the operator owns or guards it."""

    name: str
    """The long form, e.g. ``--port``."""
    why: str
    """What to use instead (owned flags) or what it opens (unsafe flags)."""
    short: tuple[str, ...] = ()
    """Single-dash aliases, e.g. ``-tp``."""


# Rendered from the spec by thrifty.reconciler.render (the constants are the spellings it writes).
MODEL = "--model"
REVISION = "--revision"
LOAD_FORMAT = "--load-format"
SERVED_MODEL_NAME = "--served-model-name"
TENSOR_PARALLEL_SIZE = "--tensor-parallel-size"
PIPELINE_PARALLEL_SIZE = "--pipeline-parallel-size"
PORT = "--port"
SHUTDOWN_TIMEOUT = "--shutdown-timeout"
MAX_MODEL_LEN = "--max-model-len"
GPU_MEMORY_UTILIZATION = "--gpu-memory-utilization"
MAX_NUM_SEQS = "--max-num-seqs"
QUANTIZATION = "--quantization"
KV_CACHE_DTYPE = "--kv-cache-dtype"

MANAGED: tuple[Flag, ...] = (
    Flag(MODEL, "set spec.model.uri"),
    Flag(REVISION, "set spec.model.revision"),
    Flag(LOAD_FORMAT, "the operator picks it from the model.uri scheme"),
    Flag(SERVED_MODEL_NAME, "set spec.servedModelName"),
    Flag(TENSOR_PARALLEL_SIZE, "set spec.engine.tensorParallelSize", ("-tp",)),
    Flag(PIPELINE_PARALLEL_SIZE, "set spec.engine.pipelineParallelSize", ("-pp",)),
    Flag(PORT, "the Service, probes and routing use port 8000"),
    Flag(SHUTDOWN_TIMEOUT, "set spec.engine.shutdownTimeoutSeconds"),
    Flag(MAX_MODEL_LEN, "set spec.engine.maxModelLen"),
    Flag(GPU_MEMORY_UTILIZATION, "set spec.engine.gpuMemoryUtilization"),
    Flag(MAX_NUM_SEQS, "set spec.engine.maxNumSeqs"),
    Flag(QUANTIZATION, "set spec.engine.quantization", ("-q",)),
    Flag(KV_CACHE_DTYPE, "set spec.engine.kvCacheDtype"),
    # Not rendered, but the operator's accounting and wiring assume their defaults.
    Flag("--host", "the probes and the Service reach the engine on all interfaces"),
    Flag("--uds", "the probes and the Service need the TCP port"),
    Flag("--headless", "a replica must serve the API"),
    Flag(
        "--data-parallel-size",
        "GPUs per replica are tensorParallelSize x pipelineParallelSize; add replicas instead",
        ("-dp",),
    ),
    Flag("--data-parallel-size-local", "GPUs per replica are fixed by the spec", ("-dpl",)),
    Flag("--disable-log-stats", "the autoscaler reads the engine's /metrics"),
    Flag("--config", "a config file can set any owned flag; use the engine fields"),
    Flag("--disable-log-requests", "removed from vLLM: the engine would not start"),
)
"""Flags ``extraArgs`` may not set, in any spelling vLLM's parser accepts."""

UNSAFE: tuple[Flag, ...] = (
    Flag("--trust-remote-code", "runs Python code shipped with the model"),
    Flag("--allowed-local-media-path", "lets requests read files of the container"),
    Flag("--tool-parser-plugin", "imports a Python file"),
    Flag("--middleware", "imports Python code into the API server"),
    Flag("--worker-cls", "imports Python code into the workers"),
    Flag("--worker-extension-cls", "imports Python code into the workers"),
    Flag("--logits-processors", "imports Python code into the sampler"),
)
"""Flags that widen what the engine may read or run: only with ``engine.allowUnsafeArgs``."""

MANAGED_ENV: dict[str, str] = {
    "HF_TOKEN": "set spec.engine.hfTokenSecretRef",
    "HUGGING_FACE_HUB_TOKEN": "set spec.engine.hfTokenSecretRef",
    "VLLM_PORT": "vLLM's internal port; a wrong value stops the engine from starting",
    "VLLM_HOST_IP": "vLLM's internal address",
}
"""Environment variables ``engine.env`` may not set (exact names: variables are case-sensitive)."""


def _prefix_pattern(word: str) -> str:
    """A regex matching every non-empty prefix of ``word``, ``-`` and ``_`` alike:
    ``port`` -> ``p(o(r(t)?)?)?``."""
    out = ""
    for char in reversed(word):
        atom = "[-_]" if char == "-" else re.escape(char)
        out = atom + (f"({out})?" if out else "")
    return out


def _pattern(flags: tuple[Flag, ...]) -> str:
    """One RE2-compatible regex (Python's ``re`` reads it the same) for "could set one of flags".

    ``--`` then any prefix of a long name (or nothing: a bare ``--``), ending there or at ``=``
    or ``.``; or ``-`` then a prefix of a short alias, or a short alias with more attached."""
    longs = "|".join(_prefix_pattern(f.name[2:]) for f in flags)
    alternatives = [f"^--({longs})?([=.].*)?$"]
    shorts = [s[1:] for f in flags for s in f.short]
    if shorts:
        prefixes = "|".join(_prefix_pattern(s) for s in shorts)
        attached = "|".join(re.escape(s) for s in shorts)
        alternatives += [f"^-({prefixes})?([=.].*)?$", f"^-({attached}).*$"]
    return "|".join(alternatives)


OWNED_PATTERN = _pattern(MANAGED)
UNSAFE_PATTERN = _pattern(UNSAFE)


def _first_match(flags: tuple[Flag, ...], pattern: str, arg: str) -> Flag | None:
    if not re.search(pattern, arg):
        return None
    # Which one, for the message: the first flag whose own pattern matches.
    return next(f for f in flags if re.search(_pattern((f,)), arg))


def owned_flag(arg: str) -> Flag | None:
    """The owned flag ``arg`` could set, if any."""
    return _first_match(MANAGED, OWNED_PATTERN, arg)


def unsafe_flag(arg: str) -> Flag | None:
    """The unsafe flag ``arg`` could set, if any."""
    return _first_match(UNSAFE, UNSAFE_PATTERN, arg)


def cel_owned(var: str) -> str:
    """CEL: the string ``var`` could set an owned flag (the same regex as ``owned_flag``)."""
    return f"{var}.matches('{OWNED_PATTERN}')"


def cel_unsafe(var: str) -> str:
    return f"{var}.matches('{UNSAFE_PATTERN}')"


def describe(flags: tuple[Flag, ...]) -> str:
    return ", ".join(f.name + "".join(f"/{s}" for s in f.short) for f in flags)


MAX_NUM_BATCHED_TOKENS = "--max-num-batched-tokens"


def value_of(args: list[str], name: str) -> tuple[int, str] | None:
    """Where ``args`` set the long flag ``name`` and to what, as vLLM reads them: ``--name value``
    or ``--name=value``, ``_`` for ``-`` in the name, the last setting winning. Only the name in
    full: an abbreviation resolves against vLLM's whole option table, which is not known here."""
    spelt = name[2:].replace("_", "-")
    found: tuple[int, str] | None = None
    for i, arg in enumerate(args):
        flag, equals, value = arg.partition("=")
        if not flag.startswith("--") or flag[2:].replace("_", "-") != spelt:
            continue
        if equals:
            found = (i, value)
        elif i + 1 < len(args):
            found = (i, args[i + 1])
    return found
