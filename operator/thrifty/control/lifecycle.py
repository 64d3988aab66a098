"""Operator start and stop: build the seams from the settings, start the leader-only loops.

At startup: settings (already checked by `python -m thrifty.control`), the API connection, the
operator's /metrics, the leader election, the autoscaler's fleet pass over kopf's watch caches and
the reconciler's resyncs, each a `thrifty.control.loops.Loop` that acts only while leading and
only once the caches are filled. At cleanup: loops stopped, policy states checkpointed while still
leading, then the Lease released so a peer takes over at once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from thrifty.adapters import kube, operator_metrics
from thrifty.adapters.lease import LeaseStore
from thrifty.adapters.prometheus import PrometheusSignals
from thrifty.adapters.scale import ScaleClient
from thrifty.autoscaler import observe
from thrifty.control import caches as caches_module
from thrifty.control import fleet, handlers, leadership, loops, policies
from thrifty.control import settings as settings_module
from thrifty.policy.planner import ThriftyPolicy

log = logging.getLogger(__name__)

RELEASE_TIMEOUT_SECONDS = 5.0
"""How long stopping waits for the Lease's release (two API calls) before exiting anyway."""

KOPF_WATCH_STREAM = "infinite_watch"
"""kopf's watch stream: an async generator that holds an async context manager of its own."""


def loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The event loop's error handler: asyncio's, except for one of kopf's at exit.

    kopf cancels a watcher without closing its watch stream, so the loop closes what is left when
    it ends, every generator at once and in no order. Closed after its inner block, the stream
    raises CPython's "generator didn't stop after athrow()": there is nothing left to lose then,
    so it is one line, not an ERROR with a traceback that reads like a crash."""
    agen = context.get("asyncgen")
    error = context.get("exception")
    if (
        getattr(agen, "__name__", None) == KOPF_WATCH_STREAM
        and isinstance(error, RuntimeError)
        and "didn't stop after athrow()" in str(error)
    ):
        log.info("a kopf watch stream was closed with the event loop at exit (%s)", error)
        return
    loop.default_exception_handler(context)


def _elector(
    config: settings_module.Settings, metrics: operator_metrics.OperatorMetrics
) -> leadership.LeaderElector | None:
    if not config.leader_election:
        return None
    # Its own connection pool: renewals never queue behind the handlers' and passes' requests.
    store = LeaseStore(
        kube.connect(),
        config.lease_namespace,
        config.lease_name,
        timeout_seconds=config.election.retry_period_seconds,
    )
    return leadership.LeaderElector(
        store,
        leadership.default_identity(),
        config.election,
        on_change=lambda leading: metrics.leader.set(1 if leading else 0),
    )


def _serve_metrics(metrics: operator_metrics.OperatorMetrics, port: int, address: str) -> None:
    if not port:
        return
    try:
        metrics.serve(port, address)
    except OSError as error:
        # Scaling matters more than its own telemetry: keep running, say it loudly.
        log.error("operator /metrics not served on port %s: %s", port, error)


@kopf.on.startup()
async def start(memo: kopf.Memo, **indexes: Any) -> None:
    """kopf passes every index as a keyword named after its function (live views, filled by the
    watches once the operator runs)."""
    asyncio.get_running_loop().set_exception_handler(loop_exception)
    config = settings_module.from_env()
    api = kube.connect()
    metrics = operator_metrics.OperatorMetrics()
    kube.REQUEST_HOOKS.append(lambda verb: metrics.api_requests.labels(verb=verb).inc())
    _serve_metrics(metrics, config.metrics_port, config.metrics_address)
    elector = _elector(config, metrics)
    caches = caches_module.Caches.from_kwargs(indexes)
    scaler = fleet.FleetPass(
        cluster=ScaleClient(api),
        events=kube.Kube(api),
        prometheus=PrometheusSignals(
            config.prometheus,
            staleness_limit_seconds=config.staleness_limit_seconds,
            held_requests_metric=config.held_requests_metric,
        ),
        metrics=metrics,
        observe_settings=observe.ObserveSettings(
            cold_start_seconds=config.cold_start_seconds,
            staleness_limit_seconds=config.staleness_limit_seconds,
        ),
        policies=policies.Registry(
            allowed_modules=config.policy_modules,
            default=ThriftyPolicy(scale_down_step_seconds=config.scale_down_step_seconds),
        ),
    )
    memo.thrifty_settings = config
    memo.thrifty_autoscaler = scaler
    memo.thrifty_metrics = metrics
    memo.thrifty_caches = caches
    memo.thrifty_indexed = asyncio.Event()

    def acting() -> bool:
        return elector is None or elector.is_leader()

    memo.thrifty_leading = acting

    async def autoscale() -> None:
        now = fleet.now()
        await scaler.run_once(caches.world(now), now)

    passes = [
        loops.Loop("autoscaler", config.decision_interval_seconds, autoscale, acting),
        *handlers.resync_loops(memo, config, acting),
    ]
    if getattr(memo, "thrifty_namespaces", None) or config.namespaces:
        # Watches of some namespaces see only their pods; a pool's free GPUs count everyone's.
        lister = kube.Kube(api)
        await asyncio.to_thread(caches.refresh_gpu_pods, lister)

        async def gpu_pods() -> None:
            await asyncio.to_thread(caches.refresh_gpu_pods, lister)

        passes.append(loops.Loop("GPU pods", config.pool_resync_seconds, gpu_pods, lambda: True))
    memo.thrifty_tasks = [asyncio.create_task(loop.run(memo.thrifty_indexed)) for loop in passes]
    # Its own thread and event loop: load on this loop or its executors cannot starve renewals.
    memo.thrifty_election = (
        leadership.ElectionThread(elector).start() if elector is not None else None
    )


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    """Stop the loops, checkpoint the policy states while still leading, then let the Lease go."""
    tasks: list[asyncio.Task[None]] = getattr(memo, "thrifty_tasks", [])
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    scaler: fleet.FleetPass | None = getattr(memo, "thrifty_autoscaler", None)
    if scaler is not None and getattr(memo, "thrifty_leading", lambda: False)():
        written = await scaler.flush()
        log.info("autoscaler: %d policy states checkpointed to status on exit", written)
    election: leadership.ElectionThread | None = getattr(memo, "thrifty_election", None)
    if election is not None:
        # Its run's finally-block releases the Lease: a peer takes over at once.
        await election.stop(timeout_seconds=RELEASE_TIMEOUT_SECONDS)
