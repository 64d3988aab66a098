"""One autoscaler pass, decided without I/O: who may write replicas, the status, the Event."""

from __future__ import annotations

import dataclasses
import math
import socket
from typing import Any

from thrifty import explain
from thrifty.adapters import prometheus
from thrifty.api import common, modelservice
from thrifty.autoscaler import status as autoscaling
from thrifty.autoscaler.world import ServiceKey
from thrifty.control.fleet import query_error_kind
from thrifty.policy import types

AUTO, ADVISORY, MANUAL = (
    types.ScalingMode.AUTO,
    types.ScalingMode.ADVISORY,
    types.ScalingMode.MANUAL,
)
REPLICAS: dict[str, Any] = {"f:spec": {"f:replicas": {}}}


def entry(manager: str, operation: str, subresource: str | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"manager": manager, "operation": operation, "fieldsV1": REPLICAS}
    if subresource:
        found["subresource"] = subresource
    return found


def test_manual_and_advisory_never_write_replicas() -> None:
    assert autoscaling.authority(MANUAL, [], []).mode is MANUAL
    assert autoscaling.authority(ADVISORY, [], []).mode is ADVISORY


def test_an_hpa_on_the_model_service_makes_thrifty_advisory() -> None:
    decided = autoscaling.authority(AUTO, ["chat-hpa"], [])
    assert decided.mode is ADVISORY
    assert "chat-hpa" in decided.why


def test_a_gitops_applier_owning_replicas_makes_thrifty_advisory() -> None:
    fields = [entry("argocd-controller", "Apply"), entry(autoscaling.FIELD_MANAGER, "Update")]
    decided = autoscaling.authority(AUTO, [], fields)
    assert decided.mode is ADVISORY
    assert "argocd-controller" in decided.why


def test_the_hpa_controller_writing_through_scale_is_recognised() -> None:
    fields = [entry("kube-controller-manager", "Update", "scale")]
    assert autoscaling.authority(AUTO, [], fields).mode is ADVISORY


def test_an_imperative_scale_or_our_own_ownership_leaves_auto_alone() -> None:
    fields = [entry("kubectl", "Update", "scale"), entry(autoscaling.FIELD_MANAGER, "Update")]
    assert autoscaling.authority(AUTO, [], fields).mode is AUTO
    other_field = {"manager": "argocd", "operation": "Apply", "fieldsV1": {"f:spec": {"f:x": {}}}}
    assert autoscaling.authority(AUTO, [], [other_field]).mode is AUTO


def signals(
    waiting: float = 12.0, prompt: float = 1500.0, generation: float = 500.0
) -> types.Signals:
    return types.Signals(
        requests_waiting=waiting,
        requests_running=20,
        kv_cache_usage=0.5,
        prompt_tokens_per_second=prompt,
        generation_tokens_per_second=generation,
        requests_per_second=4,
        ttft_p95_seconds=0.4,
    )


def decision(
    replicas: int = 3,
    bound: types.Bound = types.Bound.NONE,
    reason: types.Reason = types.Reason.SCALE_UP,
    state: dict[str, Any] | None = None,
) -> types.Decision:
    return types.Decision(
        replicas=replicas,
        reason=reason,
        message=f"{replicas} replicas because",
        bound=bound,
        projected_dollars_per_hour=7.5,
        projected_dollars_per_million_tokens=1.0,
        state=state or {"last_observed_seconds": 1.0, "below_since_seconds": None},
    )


def result(**overrides: Any) -> autoscaling.PassResult:
    base: dict[str, Any] = {
        "decision": decision(),
        "signals": signals(),
        "metrics_reason": "read from Prometheus, newest sample 3 s old",
        "authority": autoscaling.Authority(AUTO),
        "scaled": True,
        "dollars_per_hour": 7.2,
        "now": "2026-01-01T00:00:00Z",
    }
    base.update(overrides)
    return autoscaling.PassResult(**base)


def condition(status: modelservice.ModelServiceStatus, type_: str) -> common.Condition:
    found = explain.find(status.conditions, type_)
    assert found is not None
    return found


def test_status_reports_queue_tokens_cost_and_the_decision() -> None:
    after = autoscaling.next_status(modelservice.ModelServiceStatus(), result())
    assert after.queue_depth == 12.0
    assert after.tokens_per_second == 500.0
    # $7.20/h over 2000 tokens/s = 7.2 * 1e6 / 7.2e6
    assert after.dollars_per_million_tokens == 1.0
    assert after.autoscaler is not None and after.autoscaler.last_decision is not None
    assert after.autoscaler.last_decision.replicas == 3
    assert after.autoscaler.last_scale_time == "2026-01-01T00:00:00Z"
    assert condition(after, explain.METRICS_AVAILABLE).status is common.ConditionStatus.TRUE
    assert condition(after, explain.BUDGET_LIMITED).status is common.ConditionStatus.FALSE


def test_missing_metrics_and_a_budget_bound_show_in_conditions() -> None:
    missing = result(
        signals=None,
        metrics_reason="Prometheus unreachable at http://x: ConnectionError",
        decision=decision(bound=types.Bound.BUDGET, reason=types.Reason.BUDGET_LIMITED),
        scaled=False,
    )
    after = autoscaling.next_status(modelservice.ModelServiceStatus(), missing)
    metrics = condition(after, explain.METRICS_AVAILABLE)
    assert metrics.status is common.ConditionStatus.FALSE
    assert "unreachable" in metrics.message
    assert condition(after, explain.BUDGET_LIMITED).status is common.ConditionStatus.TRUE
    assert after.autoscaler is not None and after.autoscaler.last_scale_time is None


def test_the_same_pass_again_is_no_visible_change_though_the_policy_state_moved() -> None:
    first = autoscaling.next_status(modelservice.ModelServiceStatus(), result(scaled=False))
    later = result(
        scaled=False,
        now="2026-01-01T00:00:15Z",
        decision=decision(state={"last_observed_seconds": 16.0, "below_since_seconds": None}),
    )
    again = autoscaling.next_status(first, later)
    assert not autoscaling.status_changed(first, again)
    busier = autoscaling.next_status(first, result(scaled=False, signals=signals(waiting=40)))
    assert autoscaling.status_changed(first, busier)


def test_status_patch_leaves_the_reconcilers_fields_alone() -> None:
    before = modelservice.ModelServiceStatus(pool="h100", ready_replicas=2, dollars_per_hour=5.0)
    patch = autoscaling.status_patch(before, autoscaling.next_status(before, result()))
    assert set(patch) == {
        "queueDepth",
        "tokensPerSecond",
        "dollarsPerMillionTokens",
        "autoscaler",
        "conditions",
    }
    priced = autoscaling.next_status(before, result(reference=LIST_PRICE))
    assert set(autoscaling.status_patch(before, priced)) == {
        "queueDepth",
        "tokensPerSecond",
        "dollarsPerMillionTokens",
        "referenceDollarsPerMillionTokens",
        "savingsVsReference",
        "autoscaler",
        "conditions",
    }


def test_events_one_per_scale_and_advisory_only_when_the_advice_changes() -> None:
    assert autoscaling.event_for(result(), None, 2) == ("Normal", "ScaleUp", "3 replicas because")
    assert autoscaling.event_for(result(scaled=False), None, 3) is None
    advisory = result(scaled=False, authority=autoscaling.Authority(ADVISORY, "HPA x"))
    event = autoscaling.event_for(advisory, None, 2)
    assert event is not None and event[1] == "AdvisedScaleUp"
    told = modelservice.LastDecision(replicas=3, reason="ScaleUp", at="2026-01-01T00:00:00Z")
    assert autoscaling.event_for(advisory, told, 2) is None


def test_manual_mode_reports_metrics_without_a_decision() -> None:
    manual = result(decision=None, scaled=False, authority=autoscaling.Authority(MANUAL))
    after = autoscaling.next_status(modelservice.ModelServiceStatus(), manual)
    assert after.autoscaler == modelservice.AutoscalerStatus()
    assert after.queue_depth == 12.0
    assert autoscaling.event_for(manual, None, 2) is None


def test_query_error_kinds_match_the_prometheus_adapters_reasons() -> None:
    key = ServiceKey("team", "chat")
    names = prometheus.build_queries(key)
    empty: dict[str, dict[ServiceKey, float]] = {name: {} for name in names}
    no_data = prometheus.signals_from_results(key, empty, staleness_limit_seconds=60)
    assert query_error_kind(no_data.reason) == "NoData"
    stale_results = {name: {key: 0.0} for name in names}
    stale_results["sample_age_seconds"] = {key: 300.0}
    stale = prometheus.signals_from_results(key, stale_results, staleness_limit_seconds=60)
    assert query_error_kind(stale.reason) == "Stale"
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    adapter = prometheus.PrometheusSignals(f"http://127.0.0.1:{port}", timeout_seconds=1)
    reading = adapter.read_all_blocking([key])[key]
    assert reading.signals is None
    assert query_error_kind(reading.reason) == "Unreachable"


def test_a_figure_that_became_unknown_is_deleted_not_left_at_its_last_value() -> None:
    busy = autoscaling.next_status(
        modelservice.ModelServiceStatus(dollars_per_hour=5.0), result(scaled=False)
    )
    assert busy.dollars_per_million_tokens is not None
    quiet = signals(waiting=0.0, prompt=0.0, generation=0.0)
    idle = autoscaling.next_status(busy, result(scaled=False, signals=quiet))
    assert idle.dollars_per_million_tokens is None
    patch = autoscaling.status_patch(busy, idle)
    assert "dollarsPerMillionTokens" in patch and patch["dollarsPerMillionTokens"] is None


def test_the_state_checkpoint_writes_only_what_status_lacks_and_deletes_dropped_keys() -> None:
    held = modelservice.ModelServiceStatus(
        autoscaler=modelservice.AutoscalerStatus(policy_state={"a": 1.0, "b": 2.0})
    )
    assert autoscaling.state_patch(held, {"a": 1.0, "b": 2.0}) is None
    assert autoscaling.state_patch(held, {"a": 3.0}) == {
        "autoscaler": {"policyState": {"a": 3.0, "b": None}}
    }
    assert autoscaling.state_patch(None, {"a": 1.0}) == {"autoscaler": {"policyState": {"a": 1.0}}}


LIST_PRICE = modelservice.ReferencePrice(input=0.10, output=0.20)


def test_the_reference_price_is_blended_by_the_token_mix_beside_the_realised_one() -> None:
    after = autoscaling.next_status(modelservice.ModelServiceStatus(), result(reference=LIST_PRICE))
    # 1500 prompt + 500 generated tok/s: (0.10 x 1500 + 0.20 x 500) / 2000 = $0.125/1M;
    # realised $7.20/h over 2000 tok/s = $1.00/1M, eight times the reference: lost 700 %.
    assert after.dollars_per_million_tokens == 1.0
    assert after.reference_dollars_per_million_tokens == 0.125
    assert after.savings_vs_reference == -7.0
    cheap = autoscaling.next_status(
        modelservice.ModelServiceStatus(), result(reference=LIST_PRICE, dollars_per_hour=0.72)
    )
    assert (cheap.dollars_per_million_tokens, cheap.savings_vs_reference) == (0.1, 0.2)


def test_only_prompt_tokens_compare_with_the_input_price() -> None:
    prompt_only = result(reference=LIST_PRICE, signals=signals(prompt=2000.0, generation=0.0))
    after = autoscaling.next_status(modelservice.ModelServiceStatus(), prompt_only)
    assert after.reference_dollars_per_million_tokens == 0.1
    assert after.savings_vs_reference == -9.0  # $1.00 against $0.10


def test_no_reference_figures_without_a_reference_or_without_tokens() -> None:
    unset = autoscaling.next_status(modelservice.ModelServiceStatus(), result())
    assert unset.reference_dollars_per_million_tokens is None
    assert unset.savings_vs_reference is None
    quiet = signals(waiting=0.0, prompt=0.0, generation=0.0)
    idle = autoscaling.next_status(
        modelservice.ModelServiceStatus(), result(reference=LIST_PRICE, signals=quiet)
    )
    assert idle.reference_dollars_per_million_tokens is None
    assert idle.savings_vs_reference is None


def test_reference_figures_that_became_unknown_are_deleted() -> None:
    priced = autoscaling.next_status(
        modelservice.ModelServiceStatus(), result(reference=LIST_PRICE)
    )
    unpriced = autoscaling.next_status(priced, result())  # the reference was removed from spec
    patch = autoscaling.status_patch(priced, unpriced)
    assert patch["referenceDollarsPerMillionTokens"] is None
    assert patch["savingsVsReference"] is None


def test_the_reference_figures_are_rounded_so_a_steady_mix_writes_nothing() -> None:
    first = autoscaling.next_status(
        modelservice.ModelServiceStatus(), result(scaled=False, reference=LIST_PRICE)
    )
    # A mix that moves by a millionth of a token/s, as a rate over a window does.
    wobble = signals(prompt=1500.00001, generation=499.99999)
    again = autoscaling.next_status(
        first, result(scaled=False, reference=LIST_PRICE, signals=wobble)
    )
    assert again.reference_dollars_per_million_tokens == first.reference_dollars_per_million_tokens
    assert not autoscaling.status_changed(first, again)


def test_the_latency_target_is_unmeasured_only_when_requests_finish_without_a_histogram() -> None:
    blind = dataclasses.replace(signals(), ttft_p95_seconds=None)
    target = "2 s at p95"
    assert autoscaling.latency_unmeasured(result(signals=blind, latency_target=target))
    assert autoscaling.latency_unmeasured(result(signals=blind)) is None, "no target declared"
    idle = dataclasses.replace(blind, requests_per_second=0.0)
    assert autoscaling.latency_unmeasured(result(signals=idle, latency_target=target)) is None
    empty = dataclasses.replace(blind, ttft_buckets=((2.0, 0.0), (math.inf, 0.0)))
    assert autoscaling.latency_unmeasured(result(signals=empty, latency_target=target)) is None
    assert autoscaling.latency_unmeasured(result(latency_target=target)) is None
