"""Engine profiles from a user's YAML file, and fitted to the engine a ModelService declares."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from thrifty.api import modelservice
from thrifty.sim.engine import Engine
from thrifty.sim.profiles import (
    LLAMA_8B_1xH100,
    ProfileError,
    for_engine,
    parse_profile,
    profile_by_name,
)
from thrifty.tracefiles import load_profile

EXAMPLE = (
    Path(__file__).resolve().parents[3]
    / "examples"
    / "simulate"
    / "engine-profile-qwen3-32b-1xh100.yaml"
)


def _fields(**changes: object) -> str:
    raw = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    raw.update(changes)
    return yaml.safe_dump({k: v for k, v in raw.items() if v is not None})


def test_the_example_file_is_the_profile_its_comments_derive() -> None:
    profile = load_profile(str(EXAMPLE))
    assert profile.name == "qwen3-32b-1xh100" and profile.model == "Qwen/Qwen3-32B"
    assert (profile.gpus_per_replica, profile.kv_capacity_tokens) == (1, 36_000)
    assert (profile.itl0_seconds, profile.itl_slope_seconds) == (0.02, 0.0004)
    assert profile.cold_start_seconds == 150.0 and "Qwen3-32B" in profile.source


def test_the_example_decodes_a_burst_near_its_published_throughput() -> None:
    """The reference notes give 1,132 output tok/s for Qwen3-32B BF16 on one H100 (ShareGPT
    burst); the example's figures come from the model's size and the GPU's data sheet."""
    engine = Engine(load_profile(str(EXAMPLE)))
    for i in range(1000):
        engine.submit(str(i), 220, 200, 0.0)
    end = max(event.time for event in engine.advance(10_000.0))
    assert 0.8 * 1_132 <= 1000 * 200 / end <= 1.25 * 1_132


def test_a_profile_without_a_name_is_named_after_its_file() -> None:
    profile = parse_profile(_fields(name=None, source=None), "/tmp/my-engine.yaml")
    assert profile.name == "my-engine" and profile.source == "/tmp/my-engine.yaml"


@pytest.mark.parametrize(
    ("text", "names"),
    [
        (_fields(itl0Seconds=None), "itl0Seconds: Field required"),
        (_fields(itl0Second=0.02), "itl0Second: Extra inputs are not permitted"),
        (_fields(gpusPerReplica=0), "gpusPerReplica: Input should be greater than or equal to 1"),
        (
            _fields(prefillTokensPerSecond=float("inf")),
            "prefillTokensPerSecond: Input should be a finite",
        ),
        (_fields(coldStartSeconds=-1), "coldStartSeconds"),
        (_fields(maxModelLen=40_000), "maxModelLen 40000 is more than the KV cache holds"),
        ("- a list\n", "expected a mapping"),
        ("name: [unclosed\n", "not YAML"),
    ],
)
def test_a_bad_profile_file_is_refused_naming_the_field(text: str, names: str) -> None:
    with pytest.raises(ProfileError, match=r"^engine\.yaml: ") as refused:
        parse_profile(text, "engine.yaml")
    assert names in str(refused.value)


def test_a_profile_is_a_built_in_name_or_a_file_and_says_so_when_neither(tmp_path: Path) -> None:
    assert load_profile("70b") is profile_by_name("llama-70b-4xh100")
    with pytest.raises(ProfileError, match=r"known: 70b.*no profile file is at"):
        load_profile(str(tmp_path / "missing.yaml"))
    unreadable = tmp_path / "dir.yaml"
    unreadable.mkdir()
    with pytest.raises(ProfileError, match="cannot read engine profile"):
        load_profile(str(unreadable))


def _engine(**fields: object) -> modelservice.Engine:
    return modelservice.Engine.model_validate(fields)


def test_the_model_services_engine_limits_replace_the_profiles() -> None:
    fitted = for_engine(LLAMA_8B_1xH100, _engine(maxNumSeqs=64, maxModelLen=16_384))
    assert (fitted.max_num_seqs, fitted.max_model_len) == (64, 16_384)
    assert fitted.prefill_tokens_per_second == LLAMA_8B_1xH100.prefill_tokens_per_second
    assert for_engine(LLAMA_8B_1xH100, _engine()) == LLAMA_8B_1xH100


def test_a_step_budget_in_extra_args_replaces_the_profiles() -> None:
    budget = ["--enable-prefix-caching", "--max-num-batched-tokens=2048"]
    fitted = for_engine(LLAMA_8B_1xH100, _engine(extraArgs=budget))
    assert fitted.max_num_batched_tokens == 2048
    with pytest.raises(ProfileError, match=r"extraArgs\[1\] sets --max-num-batched-tokens"):
        for_engine(LLAMA_8B_1xH100, _engine(extraArgs=["-x", "--max-num-batched-tokens", "lots"]))


def test_a_profile_of_other_gpus_per_replica_is_refused_with_the_fields_named() -> None:
    with pytest.raises(ProfileError) as refused:
        for_engine(LLAMA_8B_1xH100, _engine(tensorParallelSize=2, pipelineParallelSize=2))
    message = str(refused.value)
    assert "runs 4 GPU(s) per replica" in message
    assert "tensorParallelSize 2 x pipelineParallelSize 2" in message
    assert "built in: llama-70b-4xh100" in message
    with pytest.raises(ProfileError, match="none is built in"):
        for_engine(profile_by_name("70b"), _engine(tensorParallelSize=8))


def test_a_context_the_profiles_kv_cache_cannot_hold_is_refused() -> None:
    qwen = load_profile(str(EXAMPLE))
    assert for_engine(qwen, _engine(maxModelLen=16_384)).max_model_len == 16_384
    with pytest.raises(ProfileError, match=r"spec\.engine\.maxModelLen 65536 is more than"):
        for_engine(qwen, _engine(maxModelLen=65_536))
