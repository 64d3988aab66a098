"""Engine profiles: how fast one vLLM replica of a given model on given GPUs is.

The simulator and the runtime's engine server share these numbers, so a profile is the one place
where the model of a replica is calibrated. The figures come from the public benchmarks collected
in the project's reference notes (H100 capacity and prices); they fix orders of magnitude and the
shape of the curves (throughput flattens with the batch, ITL grows linearly with it), not exact
values for any one vLLM version.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import PurePath

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from thrifty.api import engine_flags, modelservice


@dataclass(frozen=True)
class EngineProfile:
    """Speed and limits of one replica (all of its GPUs together).

    Decode step time with ``c`` running sequences is ``itl0_seconds + itl_slope_seconds * c``
    (ITL(c) = ITL0 + k*c). Prefill runs at ``prefill_tokens_per_second`` and shares each step with
    decode through chunked prefill: a step carries one token per decoding sequence plus up to
    ``max_num_batched_tokens`` minus that of prompt tokens.
    """

    name: str
    model: str
    gpus_per_replica: int
    max_num_seqs: int
    """vLLM ``--max-num-seqs``: the most sequences in the running batch."""
    max_num_batched_tokens: int
    """vLLM ``--max-num-batched-tokens``: token budget of one step (8192 on H100)."""
    kv_capacity_tokens: int
    """KV-cache capacity in tokens (``num_gpu_blocks x block_size``)."""
    max_model_len: int
    """Longest prompt + output a request may have; longer ones are rejected by vLLM."""
    prefill_tokens_per_second: float
    itl0_seconds: float
    itl_slope_seconds: float
    """Extra decode step time per running sequence."""
    cold_start_seconds: float
    """Default time from ordering a replica to it serving."""
    source: str

    def itl_seconds(self, running: int) -> float:
        """Decode step time with ``running`` sequences decoding."""
        return self.itl0_seconds + self.itl_slope_seconds * running

    def saturated_output_tokens_per_second(self) -> float:
        """Output throughput with a full batch and no prefill: the replica's decode ceiling."""
        return self.max_num_seqs / self.itl_seconds(self.max_num_seqs)


LLAMA_8B_1xH100 = EngineProfile(
    name="llama-8b-1xh100",
    model="meta-llama/Llama-3.1-8B-Instruct",
    gpus_per_replica=1,
    max_num_seqs=256,
    max_num_batched_tokens=8192,
    # 80 GB x 0.92 minus 16 GB of BF16 weights and activations leaves about 52 GB; Llama-3.1-8B
    # needs 128 KiB of KV per token (32 layers x 8 KV heads x 128 dims x K,V x 2 bytes).
    kv_capacity_tokens=400_000,
    max_model_len=131_072,
    # About 20k prompt tokens at concurrency 8 give a median TTFT of 764 ms on 1 x H100: about
    # 25k prefill tokens/s once the decode share is removed.
    prefill_tokens_per_second=25_000.0,
    # ITL 4.6 ms at concurrency 1 (NIM table); a full batch of 256 decodes about 8,400 tok/s and a
    # ShareGPT-like burst (prefill included) gives about 6,100, inside vLLM's 5,100-8,100 range
    # (MLPerf server, ShareGPT burst) rather than TensorRT-LLM's 13k.
    itl0_seconds=0.005,
    itl_slope_seconds=0.0001,
    cold_start_seconds=120.0,
    source=(
        "reference/h100-capacity-and-prices.md: NVIDIA NIM Llama-3.1-8B 1xH100 table "
        "(ITL 4.6 ms at c=1), vLLM ShareGPT burst 8,088 output tok/s, 20k-token prompts at "
        "c=8: TTFT 764 ms; start-up 30-100+ s with cached weights"
    ),
)

LLAMA_70B_4xH100 = EngineProfile(
    name="llama-70b-4xh100",
    model="meta-llama/Llama-3.1-70B-Instruct",
    gpus_per_replica=4,
    max_num_seqs=256,
    max_num_batched_tokens=8192,
    # 4 x 80 GB x 0.92 minus 140 GB of BF16 weights and activations leaves about 140 GB; 70B needs
    # 320 KiB of KV per token (80 layers x 8 KV heads x 128 dims x K,V x 2 bytes).
    kv_capacity_tokens=430_000,
    max_model_len=131_072,
    # 5,000-token prompts take 407 ms on 2 x H100 FP8 with TensorRT-LLM (12k tok/s); TP4 BF16 on
    # vLLM lands in the same range.
    prefill_tokens_per_second=10_000.0,
    # ITL 18.6 ms at c=1 (NIM 70B table); a full batch decodes about 3,600 tok/s, and a
    # ShareGPT-like burst (prefill included) gives about 2,600, inside vLLM's TP4 range 2,300-3,500.
    itl0_seconds=0.02,
    itl_slope_seconds=0.0002,
    cold_start_seconds=300.0,
    source=(
        "reference/h100-capacity-and-prices.md: NVIDIA NIM Llama-3.3-70B table (TTFT 407 ms for "
        "5k-token prompts, ITL 18.6 ms at c=1), vLLM 70B TP4 ShareGPT burst 2,300-3,500 "
        "output tok/s; start-up several minutes for 70B"
    ),
)

PROFILES: dict[str, EngineProfile] = {p.name: p for p in (LLAMA_8B_1xH100, LLAMA_70B_4xH100)}
_ALIASES = {"8b": LLAMA_8B_1xH100.name, "70b": LLAMA_70B_4xH100.name}


def profile_by_name(name: str) -> EngineProfile:
    """Looks a profile up by name (``llama-8b-1xh100``) or short alias (``8b``, ``70b``)."""
    key = _ALIASES.get(name.lower(), name.lower())
    try:
        return PROFILES[key]
    except KeyError:
        known = ", ".join(sorted([*PROFILES, *_ALIASES]))
        raise KeyError(f"unknown engine profile {name!r}; known: {known}") from None


class ProfileError(ValueError):
    """An engine profile that cannot be had or does not fit the ModelService: a user error."""


class ProfileFile(BaseModel):
    """An engine profile as a YAML file gives it (docs/simulator.md, "Your own engine"): the
    `EngineProfile` fields in camelCase, every speed and limit required, no other key."""

    model_config = ConfigDict(alias_generator=to_camel, extra="forbid", frozen=True)

    name: str = Field(default="", max_length=128)
    model: str = Field(default="", max_length=256)
    gpus_per_replica: int = Field(ge=1, le=64)
    max_num_seqs: int = Field(ge=1, le=65_536)
    max_num_batched_tokens: int = Field(ge=1)
    kv_capacity_tokens: int = Field(ge=1)
    max_model_len: int = Field(ge=1)
    prefill_tokens_per_second: float = Field(gt=0, allow_inf_nan=False)
    itl0_seconds: float = Field(gt=0, allow_inf_nan=False)
    itl_slope_seconds: float = Field(ge=0, allow_inf_nan=False)
    cold_start_seconds: float = Field(ge=0, allow_inf_nan=False)
    source: str = ""

    @pydantic.model_validator(mode="after")
    def _one_sequence_fits(self) -> ProfileFile:
        if self.max_model_len > self.kv_capacity_tokens:
            raise ValueError(_too_long("maxModelLen", self.max_model_len, self.kv_capacity_tokens))
        return self


def _too_long(field: str, tokens: int, kv_tokens: int) -> str:
    return (
        f"{field} {tokens} is more than the KV cache holds ({kv_tokens} tokens): vLLM refuses "
        "to start when one sequence would not fit"
    )


def parse_profile(text: str, origin: str) -> EngineProfile:
    """The profile a YAML document describes. ``origin`` (its file) prefixes every error, which
    names the field, and its stem names a profile that has no name."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ProfileError(f"{origin}: not YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ProfileError(f"{origin}: expected a mapping of engine profile fields")
    try:
        spec = ProfileFile.model_validate(raw)
    except pydantic.ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}"
            for problem in error.errors()
        )
        raise ProfileError(f"{origin}: invalid engine profile: {problems}") from None
    return EngineProfile(
        name=spec.name or PurePath(origin).stem,
        model=spec.model,
        gpus_per_replica=spec.gpus_per_replica,
        max_num_seqs=spec.max_num_seqs,
        max_num_batched_tokens=spec.max_num_batched_tokens,
        kv_capacity_tokens=spec.kv_capacity_tokens,
        max_model_len=spec.max_model_len,
        prefill_tokens_per_second=spec.prefill_tokens_per_second,
        itl0_seconds=spec.itl0_seconds,
        itl_slope_seconds=spec.itl_slope_seconds,
        cold_start_seconds=spec.cold_start_seconds,
        source=spec.source or origin,
    )


def for_engine(profile: EngineProfile, engine: modelservice.Engine) -> EngineProfile:
    """The profile running the engine a ModelService declares: its batch and context limits
    (`--max-num-seqs`, `--max-model-len`, and `--max-num-batched-tokens` from ``extraArgs``)
    replace the profile's, as the engine server applies the same flags. Its GPUs per replica
    must be the profile's: a replica's speed and its price both follow from them, and neither
    can be scaled from the other."""
    gpus = engine.gpus_per_replica
    if gpus != profile.gpus_per_replica:
        raise ProfileError(
            f"the ModelService runs {gpus} GPU(s) per replica (spec.engine.tensorParallelSize "
            f"{engine.tensor_parallel_size} x pipelineParallelSize "
            f"{engine.pipeline_parallel_size}) and engine profile {profile.name} runs "
            f"{profile.gpus_per_replica}: give --profile one of {gpus} GPU(s) "
            f"({_built_in_with(gpus)}) or a profile file (docs/simulator.md)"
        )
    if engine.max_model_len is not None and engine.max_model_len > profile.kv_capacity_tokens:
        field = "spec.engine.maxModelLen"
        raise ProfileError(
            f"{_too_long(field, engine.max_model_len, profile.kv_capacity_tokens)} "
            f"on engine profile {profile.name}"
        )
    return replace(
        profile,
        max_num_seqs=engine.max_num_seqs or profile.max_num_seqs,
        max_model_len=engine.max_model_len or profile.max_model_len,
        max_num_batched_tokens=_batched_tokens(engine) or profile.max_num_batched_tokens,
    )


def _batched_tokens(engine: modelservice.Engine) -> int | None:
    """A step's token budget where ``extraArgs`` set it: it decides how fast a burst of long
    prompts is prefilled and how many wait in each step, so a simulation without it would time
    another engine."""
    found = engine_flags.value_of(engine.extra_args, engine_flags.MAX_NUM_BATCHED_TOKENS)
    if found is None:
        return None
    index, value = found
    try:
        tokens = int(value)
    except ValueError:
        tokens = 0
    if tokens < 1:
        raise ProfileError(
            f"spec.engine.extraArgs[{index}] sets {engine_flags.MAX_NUM_BATCHED_TOKENS} to "
            f"{value!r}: a positive number of tokens"
        )
    return tokens


def _built_in_with(gpus: int) -> str:
    names = [name for name, profile in PROFILES.items() if profile.gpus_per_replica == gpus]
    return "built in: " + ", ".join(names) if names else "none is built in"
