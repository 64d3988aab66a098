"""The operator's settings: one typed object, parsed once from the environment, with units and the
reason for each default.

The Helm chart sets these variables, tests override them (short periods), everything else reads the
object. A bad value is a `SettingsError` naming the variable; `python -m thrifty.control` turns it
into a usage error (exit 2) before kopf starts, never a traceback.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

from thrifty.adapters.prometheus import PrometheusConnection
from thrifty.control import leadership

LogFormat = Literal["plain", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = get_args(LogFormat)

HELD_REQUESTS_METRIC = "thrifty_router_requests_held"
"""thrifty-gateway's gauge of requests held for a ModelService without a ready engine (its name
predates the gateway; kept so dashboards and alerts on it keep working)."""

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


class SettingsError(ValueError):
    """A THRIFTY_* variable has a value the operator cannot use; the message names it."""


@dataclass(frozen=True)
class Settings:
    namespaces: tuple[str, ...] = ()
    """Namespaces whose ModelServices and CostBudgets are served; empty: all (cluster-wide).
    GPUPools are cluster-scoped and always served."""
    resync_seconds: float = 30.0
    """How often every ModelService is re-checked without a change to it: picks up freed capacity,
    deleted pools and missing Secrets. Deployment changes trigger a pass at once anyway."""
    pool_resync_seconds: float = 30.0
    """How often GPUPool status is recomputed from Nodes and Pods."""
    budget_resync_seconds: float = 30.0
    """How often CostBudget spend is summed from its members' status."""
    retry_seconds: float = 10.0
    """Delay before retrying after the API server failed."""
    liveness_endpoint: str | None = None
    """e.g. http://0.0.0.0:8080/healthz for a kubelet liveness probe; absent: none."""
    decision_interval_seconds: float = 15.0
    """One autoscaling pass over the fleet per scrape interval: deciding faster only re-reads the
    same samples."""
    prometheus: PrometheusConnection = field(default_factory=PrometheusConnection)
    """Where and how to query Prometheus (THRIFTY_PROMETHEUS_*: URL, path prefix, bearer token
    or basic-auth files, CA, client certificate, headers); see `PrometheusConnection`."""
    held_requests_metric: str = HELD_REQUESTS_METRIC
    """Gauge of requests a gateway holds for a ModelService without a ready engine (labels
    `namespace`, `modelservice`): the only demand signal at zero replicas. Empty: not read."""
    metrics_port: int = 8080
    """The operator's own /metrics; 0 disables the endpoint."""
    metrics_address: str = "0.0.0.0"
    """The IP address /metrics listens on: every IPv4 interface, as Prometheus scrapes the pod IP;
    `::` on IPv6 clusters; 127.0.0.1 behind an authenticating sidecar such as kube-rbac-proxy."""
    cold_start_seconds: float = 120.0
    """Order-to-serving time of a replica when its ModelService does not say
    (spec.scaling.coldStartSeconds): 8B weights from a warm cache and CUDA graphs take about
    2 minutes on an H100."""
    staleness_limit_seconds: float = 60.0
    """Older metrics mean scrapes are failing: hold rather than act on them (4 scrapes of 15 s)."""
    return_delay_seconds: float = 600.0
    """After a pool lost replicas (reclaimed spot nodes, quota), replicas do not move back to it
    for this long: spot capacity that comes back often goes again within minutes, and each move
    costs a cold start."""
    scale_down_step_seconds: float = 60.0
    """Time between two scale-down steps once the scale-down delay has passed."""
    node_loss_toleration_seconds: int = 30
    """How long an engine pod stays bound to a node that is NotReady or unreachable before
    Kubernetes evicts it (its not-ready/unreachable NoExecute tolerations). Kubernetes' default is
    300 s: five minutes of GPUs paid for a replica that serves nobody. thrifty orders a
    replacement at once anyway; a short time frees the lost pod's place in its ReplicaSet."""
    do_not_disrupt: bool = True
    """Annotate engine pods with karpenter.sh/do-not-disrupt: "true" and the cluster autoscaler's
    safe-to-evict: "false", so consolidation never evicts a replica mid-generation; scale-down
    still frees nodes (thrifty deletes the replica, the autoscaler removes the empty node). A
    ModelService's spec.podTemplate annotations override either."""
    policy_modules: frozenset[str] = frozenset()
    """Python modules whose policies a ModelService may name (spec.scaling.policy
    `module:ClassName`): importing one runs its code in the operator, so none by default."""
    leader_election: bool = True
    lease_namespace: str = "default"
    lease_name: str = "thrifty-operator"
    election: leadership.ElectionSettings = field(default_factory=leadership.ElectionSettings)


def _seconds(env: Mapping[str, str], key: str, default: float) -> float:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{key} must be a number of seconds, got {raw!r}") from None
    if not 0 < value < 86400 * 7:
        raise SettingsError(f"{key} must be > 0 and under a week of seconds, got {raw}")
    return value


def _port(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) > 65535:
        raise SettingsError(f"{key} must be a TCP port (0 disables), got {raw!r}")
    return int(raw)


def _address(env: Mapping[str, str], key: str, default: str) -> str:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        ipaddress.ip_address(raw)
    except ValueError:
        raise SettingsError(
            f"{key} must be an IP address (0.0.0.0, ::, 127.0.0.1), got {raw!r}"
        ) from None
    return raw


def _flag(env: Mapping[str, str], key: str, default: bool) -> bool:
    raw = env.get(key, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes"):
        return True
    if raw in ("0", "false", "no"):
        return False
    raise SettingsError(f"{key} must be true or false, got {raw!r}")


def _metric_name(env: Mapping[str, str], key: str, default: str) -> str:
    """A Prometheus metric name, or empty (the feature it feeds is off)."""
    value = env.get(key, default).strip()
    if value and not METRIC_NAME.fullmatch(value):
        raise SettingsError(f"{key} must be a Prometheus metric name (or empty), got {value!r}")
    return value


def _prometheus(env: Mapping[str, str]) -> PrometheusConnection:
    try:
        return PrometheusConnection.from_env(env)
    except ValueError as error:
        raise SettingsError(str(error)) from None


def _election(env: Mapping[str, str]) -> leadership.ElectionSettings:
    base = leadership.ElectionSettings()
    try:
        return leadership.ElectionSettings(
            lease_duration_seconds=int(
                _seconds(env, "THRIFTY_LEASE_DURATION_SECONDS", base.lease_duration_seconds)
            ),
            renew_deadline_seconds=_seconds(
                env, "THRIFTY_LEASE_RENEW_DEADLINE_SECONDS", base.renew_deadline_seconds
            ),
            retry_period_seconds=_seconds(
                env, "THRIFTY_LEASE_RETRY_PERIOD_SECONDS", base.retry_period_seconds
            ),
        )
    except SettingsError:
        raise
    except ValueError as error:
        raise SettingsError(
            "THRIFTY_LEASE_DURATION_SECONDS > THRIFTY_LEASE_RENEW_DEADLINE_SECONDS > "
            f"THRIFTY_LEASE_RETRY_PERIOD_SECONDS > 0 is required: {error}"
        ) from None


def log_format_from_env(env: Mapping[str, str] | None = None) -> LogFormat:
    """THRIFTY_LOG_FORMAT: `plain` (default), a text line per record (time, level, logger,
    message) for humans reading `kubectl logs`; `json`, one JSON object per line (kopf's
    formatter) for log pipelines."""
    env = os.environ if env is None else env
    raw = env.get("THRIFTY_LOG_FORMAT", "")
    wanted = raw.strip().lower() or "plain"
    for known in LOG_FORMATS:
        if wanted == known:
            return known
    raise SettingsError(f"THRIFTY_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, got {raw!r}")


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from THRIFTY_* variables (docs/operations.md, "Settings")."""
    env = os.environ if env is None else env
    d = Settings()
    namespaces = tuple(n.strip() for n in env.get("THRIFTY_NAMESPACES", "").split(",") if n.strip())
    return Settings(
        namespaces=namespaces,
        resync_seconds=_seconds(env, "THRIFTY_RESYNC_SECONDS", d.resync_seconds),
        pool_resync_seconds=_seconds(env, "THRIFTY_POOL_RESYNC_SECONDS", d.pool_resync_seconds),
        budget_resync_seconds=_seconds(
            env, "THRIFTY_BUDGET_RESYNC_SECONDS", d.budget_resync_seconds
        ),
        retry_seconds=_seconds(env, "THRIFTY_RETRY_SECONDS", d.retry_seconds),
        liveness_endpoint=env.get("THRIFTY_LIVENESS_ENDPOINT") or None,
        decision_interval_seconds=_seconds(
            env, "THRIFTY_DECISION_INTERVAL_SECONDS", d.decision_interval_seconds
        ),
        prometheus=_prometheus(env),
        held_requests_metric=_metric_name(
            env, "THRIFTY_HELD_REQUESTS_METRIC", d.held_requests_metric
        ),
        metrics_port=_port(env, "THRIFTY_METRICS_PORT", d.metrics_port),
        metrics_address=_address(env, "THRIFTY_METRICS_ADDRESS", d.metrics_address),
        cold_start_seconds=_seconds(env, "THRIFTY_COLD_START_SECONDS", d.cold_start_seconds),
        staleness_limit_seconds=_seconds(
            env, "THRIFTY_METRICS_STALENESS_SECONDS", d.staleness_limit_seconds
        ),
        scale_down_step_seconds=_seconds(
            env, "THRIFTY_SCALE_DOWN_STEP_SECONDS", d.scale_down_step_seconds
        ),
        return_delay_seconds=_seconds(env, "THRIFTY_RETURN_DELAY_SECONDS", d.return_delay_seconds),
        node_loss_toleration_seconds=int(
            _seconds(env, "THRIFTY_NODE_LOSS_TOLERATION_SECONDS", d.node_loss_toleration_seconds)
        ),
        do_not_disrupt=_flag(env, "THRIFTY_DO_NOT_DISRUPT", d.do_not_disrupt),
        policy_modules=frozenset(
            m.strip() for m in env.get("THRIFTY_POLICY_MODULES", "").split(",") if m.strip()
        ),
        leader_election=_flag(env, "THRIFTY_LEADER_ELECTION", d.leader_election),
        lease_namespace=env.get("THRIFTY_LEASE_NAMESPACE")
        or env.get("POD_NAMESPACE")
        or d.lease_namespace,
        lease_name=env.get("THRIFTY_LEASE_NAME") or d.lease_name,
        election=_election(env),
    )
