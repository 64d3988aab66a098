"""The operator's settings, read once from the environment, with units and the reason for defaults.

A small typed object instead of scattered ``os.environ`` reads: the Helm chart sets these variables,
tests override them (short resync periods), and everything else reads the object.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args

LogFormat = Literal["plain", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = get_args(LogFormat)


@dataclass(frozen=True)
class Settings:
    namespaces: tuple[str, ...] = ()
    """Namespaces whose ModelServices and CostBudgets are served; empty: all (cluster-wide).
    GPUPools are cluster-scoped and always served."""
    resync_seconds: float = 30.0
    """How often every ModelService is re-checked without a change to it: picks up freed capacity,
    deleted pools and missing Secrets. Deployment changes trigger a pass at once anyway."""
    pool_resync_seconds: float = 30.0
    """How often GPUPool status is recomputed from Nodes and Pods (a full pod list each time)."""
    budget_resync_seconds: float = 30.0
    """How often CostBudget spend is summed from its members' status."""
    retry_seconds: float = 10.0
    """Delay before retrying after the API server failed."""
    liveness_endpoint: str | None = None
    """e.g. http://0.0.0.0:8080/healthz for a kubelet liveness probe; absent: none."""


def _float(env: Mapping[str, str], key: str, default: float) -> float:
    raw = env.get(key)
    if not raw:
        return default
    value = float(raw)
    if value <= 0:
        raise ValueError(f"{key} must be > 0 seconds, got {raw}")
    return value


def log_format_from_env(env: Mapping[str, str] | None = None) -> LogFormat:
    """THRIFTY_LOG_FORMAT: `plain` (default), a text line per record (time, level, logger,
    message) for humans reading `kubectl logs`; `json`, one JSON object per line (kopf's
    formatter) for log pipelines. Apart from `from_env`, which the handlers read at import: only
    the entry point logs, so only it refuses a bad value, with a usage error and not a traceback."""
    env = os.environ if env is None else env
    raw = env.get("THRIFTY_LOG_FORMAT", "")
    wanted = raw.strip().lower() or "plain"
    for known in LOG_FORMATS:
        if wanted == known:
            return known
    raise ValueError(f"THRIFTY_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, got {raw!r}")


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from THRIFTY_* variables (see docs/api.md, "Running the operator")."""
    env = os.environ if env is None else env
    namespaces = tuple(n.strip() for n in env.get("THRIFTY_NAMESPACES", "").split(",") if n.strip())
    defaults = Settings()
    return Settings(
        namespaces=namespaces,
        resync_seconds=_float(env, "THRIFTY_RESYNC_SECONDS", defaults.resync_seconds),
        pool_resync_seconds=_float(
            env, "THRIFTY_POOL_RESYNC_SECONDS", defaults.pool_resync_seconds
        ),
        budget_resync_seconds=_float(
            env, "THRIFTY_BUDGET_RESYNC_SECONDS", defaults.budget_resync_seconds
        ),
        retry_seconds=_float(env, "THRIFTY_RETRY_SECONDS", defaults.retry_seconds),
        liveness_endpoint=env.get("THRIFTY_LIVENESS_ENDPOINT") or None,
    )
