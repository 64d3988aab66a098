"""Tenants: API keys from labelled Secrets, kept only as hashes, and each tenant's limits.

A Secret labelled `thrifty.dev/tenant: <tenant>` in the gateway's key namespace holds one API key
(`data.api-key`) of that tenant; a tenant may have several (one Secret each, for rotation). The
gateway keeps the SHA-256 of each key, never the key, and never logs either. Deleting the Secret
revokes the key at the next watch event. Annotations on the Secret set the tenant's limits:

    thrifty.dev/requests-per-minute: "600"
    thrifty.dev/tokens-per-minute: "200000"      # prompt + completion tokens
    thrifty.dev/max-concurrent-requests: "32"

When a tenant's Secrets disagree, the smallest value applies. A limit absent everywhere is no
limit. Anonymous requests (no `Authorization` header) are let in only when the gateway allows them,
as the tenant `anonymous`, with the limits it is given on the command line.

Limits are token buckets refilled continuously (capacity = the per-minute limit), the way OpenAI
describes its own: requests take one request token when admitted; tokens are charged when the
answer's `usage` is known, so a bucket can go below zero and then refuses until it refills.
Pure (time is an argument), so it is tested without a clock.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

TENANT_LABEL = "thrifty.dev/tenant"
API_KEY_FIELD = "api-key"
ANONYMOUS = "anonymous"
REQUESTS_PER_MINUTE = "thrifty.dev/requests-per-minute"
TOKENS_PER_MINUTE = "thrifty.dev/tokens-per-minute"
MAX_CONCURRENT = "thrifty.dev/max-concurrent-requests"


def key_digest(api_key: str) -> bytes:
    return hashlib.sha256(api_key.encode()).digest()


@dataclass(frozen=True)
class Limits:
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    max_concurrent_requests: int | None = None

    def tightest(self, other: Limits) -> Limits:
        def low(a: float | None, b: float | None) -> float | None:
            return b if a is None else a if b is None else min(a, b)

        concurrent = low(self.max_concurrent_requests, other.max_concurrent_requests)
        return Limits(
            low(self.requests_per_minute, other.requests_per_minute),
            low(self.tokens_per_minute, other.tokens_per_minute),
            None if concurrent is None else int(concurrent),
        )


def limits_from_annotations(annotations: Mapping[str, str]) -> Limits:
    def number(name: str) -> float | None:
        text = annotations.get(name)
        if text is None:
            return None
        try:
            value = float(text)
        except ValueError:
            return None
        return value if value > 0 and math.isfinite(value) else None

    concurrent = number(MAX_CONCURRENT)
    return Limits(
        number(REQUESTS_PER_MINUTE),
        number(TOKENS_PER_MINUTE),
        None if concurrent is None else max(1, int(concurrent)),
    )


@dataclass
class _Bucket:
    capacity: float
    level: float
    at: float

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.at) * self.capacity / 60.0)
        self.at = now

    def seconds_until_positive(self) -> float:
        missing = 1.0 - self.level if self.level < 1.0 else 0.0
        return missing * 60.0 / self.capacity


@dataclass
class TenantState:
    name: str
    limits: Limits
    in_flight: int = 0
    requests: _Bucket | None = None
    tokens: _Bucket | None = None


@dataclass(frozen=True)
class Refusal:
    """Why a tenant's request is refused: which limit, and when to retry."""

    limit: str  # "requests", "tokens" or "concurrent"
    message: str
    retry_after_seconds: float


@dataclass(frozen=True)
class Quota:
    """What is left for rate-limit headers (None: that limit is not set)."""

    requests_limit: float | None
    requests_remaining: float | None
    requests_reset_seconds: float | None
    tokens_limit: float | None
    tokens_remaining: float | None
    tokens_reset_seconds: float | None


@dataclass
class Tenants:
    anonymous_allowed: bool = False
    anonymous_limits: Limits = field(default_factory=Limits)
    _keys: dict[bytes, str] = field(default_factory=dict)
    _secrets: dict[tuple[str, str], tuple[bytes, str, Limits]] = field(default_factory=dict)
    _states: dict[str, TenantState] = field(default_factory=dict)

    # -- keys from Secrets ---------------------------------------------------------------------

    def replace_secrets(self, objects: Iterable[Mapping[str, Any]]) -> None:
        self._secrets = {}
        for obj in objects:
            self._read(obj)
        self._rebuild()

    def put_secret(self, obj: Mapping[str, Any]) -> None:
        self._secrets.pop(_secret_id(obj), None)
        self._read(obj)
        self._rebuild()

    def delete_secret(self, obj: Mapping[str, Any]) -> None:
        self._secrets.pop(_secret_id(obj), None)
        self._rebuild()

    def _read(self, obj: Mapping[str, Any]) -> None:
        metadata = obj.get("metadata") or {}
        tenant = (metadata.get("labels") or {}).get(TENANT_LABEL)
        encoded = (obj.get("data") or {}).get(API_KEY_FIELD)
        if not tenant or not encoded:
            return
        try:
            api_key = base64.b64decode(encoded, validate=True).decode().strip()
        except (binascii.Error, UnicodeDecodeError):
            return
        if api_key:
            limits = limits_from_annotations(metadata.get("annotations") or {})
            self._secrets[_secret_id(obj)] = (key_digest(api_key), str(tenant), limits)

    def _rebuild(self) -> None:
        self._keys = {digest: tenant for digest, tenant, _ in self._secrets.values()}
        limits: dict[str, Limits] = {}
        for _, tenant, found in self._secrets.values():
            limits[tenant] = limits[tenant].tightest(found) if tenant in limits else found
        if self.anonymous_allowed:
            limits[ANONYMOUS] = self.anonymous_limits
        self._states = {
            tenant: self._states[tenant]
            if tenant in self._states and self._states[tenant].limits == tenant_limits
            else TenantState(tenant, tenant_limits, self._in_flight(tenant))
            for tenant, tenant_limits in limits.items()
        }

    def _in_flight(self, tenant: str) -> int:
        state = self._states.get(tenant)
        return state.in_flight if state else 0

    # -- requests ------------------------------------------------------------------------------

    def names(self) -> list[str]:
        return sorted(self._states)

    def authenticate(self, authorization: str | None) -> TenantState | None:
        """The tenant of an `Authorization: Bearer <key>` header; None when unknown or revoked.
        No header: the anonymous tenant if allowed."""
        if not authorization:
            return self._states.get(ANONYMOUS) if self.anonymous_allowed else None
        scheme, _, api_key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not api_key.strip():
            return None
        tenant = self._keys.get(key_digest(api_key.strip()))
        return self._states.get(tenant) if tenant else None

    def admit(self, state: TenantState, now: float) -> Refusal | None:
        """Takes a request slot and a request token, or says which limit refuses."""
        limits = state.limits
        if limits.max_concurrent_requests and state.in_flight >= limits.max_concurrent_requests:
            return Refusal(
                "concurrent",
                f"Tenant {state.name} has {state.in_flight} requests in flight, its limit.",
                1.0,
            )
        requests = self._bucket(state, "requests", now)
        tokens = self._bucket(state, "tokens", now)
        if tokens is not None and tokens.level < 1.0:
            return Refusal(
                "tokens",
                f"Rate limit reached for tenant {state.name}: "
                f"{limits.tokens_per_minute:.0f} tokens per minute.",
                tokens.seconds_until_positive(),
            )
        if requests is not None:
            if requests.level < 1.0:
                return Refusal(
                    "requests",
                    f"Rate limit reached for tenant {state.name}: "
                    f"{limits.requests_per_minute:.0f} requests per minute.",
                    requests.seconds_until_positive(),
                )
            requests.level -= 1.0
        state.in_flight += 1
        return None

    def release(self, state: TenantState) -> None:
        state.in_flight -= 1

    def charge(self, state: TenantState, tokens: int, now: float) -> None:
        bucket = self._bucket(state, "tokens", now)
        if bucket is not None:
            bucket.level -= tokens

    def quota(self, state: TenantState, now: float) -> Quota:
        requests = self._bucket(state, "requests", now)
        tokens = self._bucket(state, "tokens", now)

        def reset(bucket: _Bucket) -> float:
            return (bucket.capacity - bucket.level) * 60.0 / bucket.capacity

        return Quota(
            requests.capacity if requests else None,
            max(0.0, math.floor(requests.level)) if requests else None,
            reset(requests) if requests else None,
            tokens.capacity if tokens else None,
            max(0.0, math.floor(tokens.level)) if tokens else None,
            reset(tokens) if tokens else None,
        )

    def _bucket(self, state: TenantState, kind: str, now: float) -> _Bucket | None:
        capacity = (
            state.limits.requests_per_minute
            if kind == "requests"
            else state.limits.tokens_per_minute
        )
        if capacity is None:
            return None
        bucket = state.requests if kind == "requests" else state.tokens
        if bucket is None:
            bucket = _Bucket(capacity, capacity, now)
            if kind == "requests":
                state.requests = bucket
            else:
                state.tokens = bucket
        bucket.refill(now)
        return bucket


def _secret_id(obj: Mapping[str, Any]) -> tuple[str, str]:
    metadata = obj.get("metadata") or {}
    return (str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))


def duration_text(seconds: float) -> str:
    """OpenAI's reset format: `1s`, `6m0s`, `120ms`."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    whole = math.ceil(seconds)
    minutes, rest = divmod(whole, 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"
