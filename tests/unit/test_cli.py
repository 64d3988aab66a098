"""`thrifty simulate` end to end on small traces: table, JSON report, PNG plot, clean errors."""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from thrifty import cli, tracefiles
from thrifty.sim.fleet import Router
from thrifty.sim.observe import Metrics
from thrifty.sim.profiles import profile_by_name

AZURE = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:17:03.9799600,4808,10
2023-11-16 18:17:04.0319600,3180,8
2023-11-16 18:17:05.5,110,27
2023-11-16 18:19:05.5,2000,27
"""

POLICY_MODULE = """
from dataclasses import dataclass
from thrifty.policy.types import Bound, Decision, Reason


@dataclass
class TwoReplicas:
    name: str = "two"

    def decide(self, observation, state):
        return Decision(2, Reason.STEADY, "two", Bound.NONE, 0.0, None, state)
"""


@pytest.fixture
def user_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "my_policies.py").write_text(POLICY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_policies:TwoReplicas"


def test_simulate_writes_table_json_and_png(
    tmp_path: Path, user_policy: str, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "tiny.csv"
    trace.write_text(AZURE)
    out = tmp_path / "out"
    argv = ["simulate", "--trace", str(trace), "--policy", user_policy]
    code = cli.main([*argv, "--policy", "clairvoyant", "--out", str(out), "--seed", "3"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "GPU-h" in printed and "two" in printed and "clairvoyant" in printed
    assert "CC-BY 4.0" in printed
    assert "First tokens over 2 s, by the fleet when they arrived:" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["command"].startswith("thrifty simulate --trace")
    assert "Splitwise" in report["attribution"]
    two, clairvoyant = report["results"]
    assert two["policy"] == "two" and clairvoyant["policy"] == "clairvoyant"
    assert two["requests"] == 4 and two["served"] == 4
    assert two["max_replicas"] == 2 and two["gpu_hours"] > 0
    late = two["late_first_tokens"]
    assert late["total"] == round(4 * (1.0 - two["slo_attainment"]))
    assert late["total"] == sum(v for k, v in late.items() if k != "total")
    assert len(two["series"]["time"]) == len(two["series"]["desired"]) > 0
    png = (out / "report.png").read_bytes()
    assert png.startswith(b"\x89PNG")


def test_every_policy_opens_at_what_the_first_cold_start_needs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As the benchmark opens: a policy given one replica for an opening burst would pay for a
    cold start no policy could avoid. A static fleet is warm at its own count."""
    header = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
    burst = "".join(f"2023-11-16 18:17:{i // 10:02d}.{i % 10}00,8000,50\n" for i in range(300))
    trace = tmp_path / "burst.csv"
    trace.write_text(header + burst)
    out = tmp_path / "out"
    argv = ["simulate", "--trace", str(trace), "--out", str(out), "--quiet"]
    assert cli.main([*argv, "--policy", "thrifty", "--policy", "static,replicas=2"]) == 0
    opening = json.loads((out / "report.json").read_text())["settings"]["initial_replicas"]
    assert opening > 2
    assert f"opening with {opening} warm replica(s)" in capsys.readouterr().out
    thrifty, static = json.loads((out / "report.json").read_text())["results"]
    assert thrifty["series"]["ready"][0] == opening
    assert static["scale_events"] == 0 and static["series"]["draining"][0] == 0
    assert thrifty["slo_attainment"] == 1.0
    assert cli.main([*argv, "--policy", "thrifty", "--initial-replicas", "1"]) == 0
    [alone] = json.loads((out / "report.json").read_text())["results"]
    assert alone["series"]["ready"][0] == 1 and alone["slo_attainment"] < 1.0


def test_malformed_trace_exits_2_naming_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "broken.csv"
    trace.write_text(AZURE + "2023-11-16 18:20:00,12,x\n")
    code = cli.main(["simulate", "--trace", str(trace), "--out", str(tmp_path / "o")])
    assert code == 2
    error = capsys.readouterr().err
    assert f"{trace}:6: expected" in error
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--trace", "nowhere.csv"], "trace file not found"),
        (["--policy", "nonsense"], "unknown policy"),
        (["--profile", "gpt-5"], "unknown engine profile"),
    ],
)
def test_user_errors_exit_2(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["simulate", *argv, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_named_trace_and_synthetic_shape_resolve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conv = tmp_path / "azure2023" / "AzureLLMInferenceTrace_conv.csv"
    conv.parent.mkdir()
    conv.write_text(AZURE)
    monkeypatch.setenv("THRIFTY_TRACES_DIR", str(tmp_path))
    assert tracefiles.traces_dir() == tmp_path
    named = tracefiles.load_trace("azure-conv", tracefiles.TraceOptions())
    assert len(named.requests) == 4
    spike = tracefiles.load_trace(
        "spike", tracefiles.TraceOptions(duration_seconds=600.0, target_rps=2.0)
    )
    assert spike.duration_seconds == 600.0 and 600 < len(spike.requests) < 2400
    assert "synthetic" in spike.attribution and "Splitwise" in spike.attribution


def test_a_slice_starts_at_a_point_of_the_trace_and_lasts_the_replayed_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conv = tmp_path / "azure2023" / "AzureLLMInferenceTrace_conv.csv"
    conv.parent.mkdir()
    conv.write_text(AZURE)  # arrivals at 0, 0.05, 1.52 and 121.52 s
    monkeypatch.setenv("THRIFTY_TRACES_DIR", str(tmp_path))
    options = tracefiles.TraceOptions(start_seconds=1.0, duration_seconds=10.0, speedup=10.0)
    sliced = tracefiles.load_trace("azure-conv", options)
    # Trace seconds [1, 101): only the third request, 0.52 s in, replayed at 0.052 s.
    assert [round(r.arrival_seconds, 3) for r in sliced.requests] == [0.052]
    assert sliced.duration_seconds == 10.0
    whole = tracefiles.load_trace("azure-conv", tracefiles.TraceOptions(start_seconds=1.0))
    assert [round(r.arrival_seconds, 2) for r in whole.requests] == [0.52, 120.52]


@pytest.mark.skipif(not tracefiles.traces_dir().is_dir(), reason="shared traces not present")
def test_simulate_a_slice_of_the_azure_code_trace(
    tmp_path: Path, user_policy: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["simulate", "--trace", "azure-code", "--duration", "300", "--start", "600"]
    code = cli.main([*argv, "--policy", user_policy, "--out", str(tmp_path), "--quiet"])
    assert code == 0
    report = json.loads((tmp_path / "report.json").read_text())
    (result,) = report["results"]
    assert result["trace"] == "azure-code" and 100 < result["requests"] < 2000
    assert 0.0 <= result["slo_attainment"] <= 1.0
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_policy_options_take_parameters() -> None:
    assert cli.parse_policy_option("hpa") == ("hpa", {})
    name, params = cli.parse_policy_option("hpa,target_per_replica=2,tolerance=0.2")
    assert name == "hpa"
    assert params == {
        "target_per_replica": 2,
        "tolerance": 0.2,
        "name": "hpa,target_per_replica=2,tolerance=0.2",
    }
    with pytest.raises(cli.CommandError, match="key=value"):
        cli.parse_policy_option("hpa,oops")


def test_builtin_policies_build_with_their_knobs(tmp_path: Path) -> None:
    trace = tmp_path / "tiny.csv"
    trace.write_text(AZURE)
    loaded = tracefiles.load_trace(str(trace), tracefiles.TraceOptions())
    context = cli.PolicyContext(loaded, profile_by_name("8b"), 120.0, 2.0, 15.0)
    hpa = cli.build_policy("hpa,target_per_replica=3", context)
    assert hpa.name == "hpa,target_per_replica=3"
    assert getattr(hpa, "target_per_replica") == 3  # noqa: B009
    assert cli.build_policy("static,replicas=4", context).name == "static,replicas=4"
    assert cli.build_policy("clairvoyant,utilization=0.5", context).name.startswith("clairvoyant")
    hindsight = cli.build_policy("hindsight,utilization=0.7,keep_cold_starts=2", context)
    assert hindsight.name == "hindsight,utilization=0.7,keep_cold_starts=2"
    assert getattr(hindsight, "keep_cold_starts") == 2  # noqa: B009
    with pytest.raises(cli.CommandError, match="bad parameters"):
        cli.build_policy("kpa,no_such_knob=1", context)


def test_simulated_spec_carries_the_profile_batch_limit() -> None:
    args = cli.build_parser().parse_args(["simulate", "--profile", "70b"])
    config = cli.simulation_config(args)
    assert config.spec.max_num_seqs_per_replica == profile_by_name("70b").max_num_seqs


def test_simulate_puts_the_router_it_is_given_in_front_of_the_fleet() -> None:
    config = cli.simulation_config(cli.build_parser().parse_args(["simulate"]))
    assert config.router is Router.LEAST_LOADED
    argv = ["simulate", "--router", "random", "--seed", "3"]
    config = cli.simulation_config(cli.build_parser().parse_args(argv))
    assert config.router is Router.RANDOM and config.router_seed == 3
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["simulate", "--router", "fastest"])


def test_simulate_has_engines_export_the_metrics_it_is_told() -> None:
    config = cli.simulation_config(cli.build_parser().parse_args(["simulate"]))
    assert config.metrics is Metrics.VLLM
    argv = ["simulate", "--metrics", "basic"]
    assert cli.simulation_config(cli.build_parser().parse_args(argv)).metrics is Metrics.BASIC
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["simulate", "--metrics", "all"])


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_simulate_runs_a_users_model_service_and_pool_from_yaml() -> None:
    ms, pool = EXAMPLES / "modelservice-llama-8b.yaml", EXAMPLES / "gpupool-h100-spot.yaml"
    args = cli.build_parser().parse_args(["simulate", "-f", str(ms), "-f", str(pool)])
    config = cli.simulation_config(args)
    assert config.model_service.spec.scaling.max_replicas == 4
    assert config.spec.max_replicas == 4, "the policy sees the file through the translation"
    assert config.spec.soft_overrun_fraction == 0.2, "the CRD's values, not a second default"
    assert config.slo_ttft_seconds == 0.5
    assert config.price_per_gpu_hour != 2.5, "the GPUPool's price, not the option's default"


def test_simulate_runs_the_engine_a_model_service_declares_or_refuses_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Four GPUs per replica on the 8B profile's one would price and time the wrong replica."""
    ms, pool = EXAMPLES / "modelservice-llama-70b.yaml", EXAMPLES / "gpupool-h100-on-demand.yaml"
    files = ["-f", str(ms), "-f", str(pool)]
    assert cli.main(["simulate", *files, "--quiet"]) == 2
    assert "tensorParallelSize 4" in capsys.readouterr().err
    args = cli.build_parser().parse_args(["simulate", *files, "--profile", "70b"])
    config = cli.simulation_config(args)
    assert config.profile.gpus_per_replica == 4
    assert config.profile.max_model_len == 32_768, "the ModelService's --max-model-len"


def test_simulate_takes_a_profile_file(tmp_path: Path) -> None:
    profile = EXAMPLES / "simulate" / "engine-profile-qwen3-32b-1xh100.yaml"
    args = cli.build_parser().parse_args(["simulate", "--profile", str(profile)])
    config = cli.simulation_config(args)
    assert config.profile.name == "qwen3-32b-1xh100"
    assert config.cold_start_seconds == 150.0, "the profile's cold start"
    assert config.spec.max_num_seqs_per_replica == 1024
    bad = tmp_path / "engine.yaml"
    bad.write_text("gpusPerReplica: 1\n", encoding="utf-8")
    assert cli.main(["simulate", "--profile", str(bad), "--out", str(tmp_path)]) == 2


def test_simulate_refuses_a_file_that_is_not_a_thrifty_object(tmp_path: Path) -> None:
    other = tmp_path / "deploy.yaml"
    other.write_text("kind: Deployment\n", encoding="utf-8")
    assert cli.main(["simulate", "-f", str(other), "--out", str(tmp_path)]) == 2
    invalid = tmp_path / "ms.yaml"
    invalid.write_text("kind: ModelService\nspec: {pools: []}\n", encoding="utf-8")
    assert cli.main(["simulate", "-f", str(invalid), "--out", str(tmp_path)]) == 2


def test_without_the_plot_extra_simulate_writes_the_report_and_says_why_no_png(
    tmp_path: Path,
    user_policy: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "matplotlib" else real_find_spec(name, *a),
    )
    trace = tmp_path / "tiny.csv"
    trace.write_text(AZURE)
    out = tmp_path / "out"
    code = cli.main(["simulate", "--trace", str(trace), "--policy", user_policy, "--out", str(out)])
    assert code == 0
    assert (out / "report.json").exists()
    assert not (out / "report.png").exists()
    assert "pip install 'thrifty[plot]'" in capsys.readouterr().err


def test_version_is_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"thrifty {importlib.metadata.version('thrifty')}"


def test_python_dash_m_thrifty_is_the_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "thrifty", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.startswith("thrifty ")


def test_every_subcommand_help_shows_an_example() -> None:
    parser = cli.build_parser()
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert subparsers.choices
    for name, subparser in subparsers.choices.items():
        text = subparser.format_help()
        assert "example:" in text and f"thrifty {name} " in text, name
    assert "example:" in parser.format_help()


def test_report_without_prometheus_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("THRIFTY_PROMETHEUS_URL", raising=False)
    assert cli.main(["report", "--start", "2026-12-01", "--end", "2026-12-02"]) == 2
    assert "--prometheus-url" in capsys.readouterr().err
    url = ["--prometheus-url", "http://127.0.0.1:9"]
    assert cli.main(["report", *url, "--start", "2026-12-02", "--end", "2026-12-01"]) == 2
    assert cli.main(["report", *url, "--start", "yesterday", "--end", "2026-12-01"]) == 2
