"""Tenants from API-key Secrets (hashed, revocable), their limits, and metering streams (pure)."""

from __future__ import annotations

import base64
import json
from typing import Any

from thrifty_runtime.gateway import metering
from thrifty_runtime.gateway.tenants import ANONYMOUS, Tenants, duration_text

KEY = "sk-team-a-0123456789"


def key_secret(
    name: str, tenant: str, api_key: str, namespace: str = "thrifty-system", **limits: str
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"thrifty.dev/tenant": tenant},
            "annotations": {f"thrifty.dev/{k.replace('_', '-')}": v for k, v in limits.items()},
        },
        "data": {"api-key": base64.b64encode(api_key.encode()).decode()},
    }


def test_keys_authenticate_their_tenant_are_kept_hashed_and_are_revoked_with_their_secret() -> None:
    tenants = Tenants()
    tenants.replace_secrets([key_secret("a", "team-a", KEY), key_secret("b", "team-b", "sk-b")])
    found = tenants.authenticate(f"Bearer {KEY}")
    assert found is not None and found.name == "team-a"
    assert tenants.authenticate("Bearer sk-wrong") is None
    assert tenants.authenticate(f"Basic {KEY}") is None
    assert tenants.authenticate(None) is None  # no anonymous access unless allowed
    assert KEY not in repr(vars(tenants))  # only digests are kept
    tenants.delete_secret(key_secret("a", "team-a", KEY))
    assert tenants.authenticate(f"Bearer {KEY}") is None
    assert tenants.names() == ["team-b"]


def test_anonymous_access_only_when_allowed() -> None:
    tenants = Tenants(anonymous_allowed=True)
    tenants.replace_secrets([])
    found = tenants.authenticate(None)
    assert found is not None and found.name == ANONYMOUS
    assert tenants.authenticate("Bearer sk-unknown") is None


def test_requests_per_minute_refill_continuously() -> None:
    tenants = Tenants()
    tenants.replace_secrets([key_secret("a", "team-a", KEY, requests_per_minute="2")])
    state = tenants.authenticate(f"Bearer {KEY}")
    assert state is not None
    assert tenants.admit(state, 0.0) is None and tenants.admit(state, 0.0) is None
    refusal = tenants.admit(state, 0.0)
    assert refusal is not None and refusal.limit == "requests"
    assert refusal.retry_after_seconds == 30.0
    assert tenants.admit(state, 30.0) is None
    quota = tenants.quota(state, 30.0)
    assert (quota.requests_limit, quota.requests_remaining) == (2, 0)


def test_tokens_are_charged_after_the_answer_and_refuse_until_refilled() -> None:
    tenants = Tenants()
    tenants.replace_secrets([key_secret("a", "team-a", KEY, tokens_per_minute="600")])
    state = tenants.authenticate(f"Bearer {KEY}")
    assert state is not None
    assert tenants.admit(state, 0.0) is None
    tenants.release(state)
    tenants.charge(state, 900, 0.0)  # one long answer: the bucket goes below zero
    refusal = tenants.admit(state, 0.0)
    assert refusal is not None and refusal.limit == "tokens"
    assert abs(refusal.retry_after_seconds - 30.1) < 1e-9  # 301 tokens at 10 per second
    assert tenants.admit(state, 31.0) is None


def test_concurrent_requests_and_the_tightest_of_several_secrets() -> None:
    tenants = Tenants()
    tenants.replace_secrets(
        [
            key_secret("a1", "team-a", KEY, max_concurrent_requests="4"),
            key_secret("a2", "team-a", "sk-a2", max_concurrent_requests="1"),
        ]
    )
    state = tenants.authenticate("Bearer sk-a2")
    assert state is not None and state.limits.max_concurrent_requests == 1
    assert tenants.admit(state, 0.0) is None
    refusal = tenants.admit(state, 0.0)
    assert refusal is not None and refusal.limit == "concurrent"
    tenants.release(state)
    assert tenants.admit(state, 0.0) is None


def test_reset_durations_read_like_openais() -> None:
    assert duration_text(0.12) == "120ms"
    assert duration_text(1.0) == "1s"
    assert duration_text(360.0) == "6m0s"


def _event(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


def test_a_stream_is_passed_event_by_event_and_its_usage_chunk_read_and_hidden() -> None:
    stream = (
        _event({"choices": [{"text": " a"}]})
        + _event({"choices": [{"text": " b", "finish_reason": "length"}]})
        + _event({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2}})
        + b"data: [DONE]\n\n"
    )
    for hide in (True, False):
        reader = metering.SseUsage(hide_usage_chunk=hide)
        # Split at awkward places: events arrive in pieces.
        passed = b"".join(reader.feed(stream[i : i + 13]) for i in range(0, len(stream), 13))
        passed += reader.flush()
        assert reader.usage == metering.Usage(7, 2)
        assert (b'"usage"' in passed) is not hide
        assert passed.endswith(b"data: [DONE]\n\n") and b" b" in passed


def test_usage_is_asked_for_only_when_the_client_did_not() -> None:
    request: dict[str, Any] = {"model": "m", "stream": True}
    assert metering.ask_for_usage(request) is True
    assert request["stream_options"] == {"include_usage": True}
    assert metering.ask_for_usage(request) is False
    assert metering.ask_for_usage({"model": "m"}) is False
    assert metering.json_usage(b'{"usage": {"prompt_tokens": 3, "completion_tokens": 4}}') == (
        metering.Usage(3, 4)
    )
    assert metering.json_usage(b"not json") is None
