"""The autoscaling pass for the whole fleet: read the world once, plan purely, execute the plan.

One loop per operator process, acting only while it holds the leader Lease, runs a pass per
decision interval: the world comes from kopf's watch caches (no API reads), the signals of every
ModelService from one round of Prometheus queries, the decisions from `thrifty.autoscaler.plan`.
Then, per ModelService: the replica target through the scale subresource (the reconciler stays the
only writer of the Deployment), one status patch when a reader could notice a change, an Event per
scale, the operator's metrics.

Each policy's state stays in memory between passes, keyed by the object's uid, and goes to status
with every visible change; `flush` writes the rest when the process stops leading or exits, so a
settled fleet costs no writes and a restart forgets nothing that mattered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from thrifty import explain
from thrifty.adapters import kube, operator_metrics
from thrifty.api import modelservice
from thrifty.autoscaler import observe, plan
from thrifty.autoscaler import status as status_rules
from thrifty.autoscaler.world import ServiceKey, SignalsReading, World
from thrifty.policy import types

log = logging.getLogger(__name__)


class ClusterWrites(Protocol):
    """The pass's API calls (`thrifty.adapters.scale.ScaleClient`): writes, and one re-read."""

    def read_model_service(self, namespace: str, name: str) -> dict[str, Any]: ...
    def patch_scale(self, namespace: str, name: str, replicas: int) -> str: ...
    def patch_status(
        self, namespace: str, name: str, status: Mapping[str, Any], resource_version: str
    ) -> None: ...


class EventSink(Protocol):
    def event(self, involved: Mapping[str, Any], type_: str, reason: str, message: str) -> None: ...


class SignalsSource(Protocol):
    async def read_all(
        self, keys: Iterable[ServiceKey], per_pool: bool = True
    ) -> dict[ServiceKey, SignalsReading]: ...


def query_error_kind(reason: str) -> str:
    """The error label of a failed Prometheus read, from the adapter's reason text."""
    if "unreachable" in reason:
        return "Unreachable"
    if "old (limit" in reason:
        return "Stale"
    if "no vLLM series" in reason:
        return "NoData"
    return "QueryFailed"


def _involved(view_key: ServiceKey, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": "thrifty.dev/v1alpha1",
        "kind": "ModelService",
        "metadata": {"namespace": view_key.namespace, "name": view_key.model_service, "uid": uid},
    }


@dataclass
class FleetPass:
    """One operator process's autoscaler: the seams, the policy and the states it carries."""

    cluster: ClusterWrites
    events: EventSink
    prometheus: SignalsSource
    metrics: operator_metrics.OperatorMetrics
    observe_settings: observe.ObserveSettings
    policies: plan.PolicyChooser
    states: dict[str, types.PolicyState] = field(default_factory=dict)
    """Each ModelService's policy state since the last pass, by uid (its advisory policy's by uid
    + `plan.ADVISORY`); only live objects are kept."""
    statuses: dict[str, tuple[ServiceKey, modelservice.ModelServiceStatus | None]] = field(
        default_factory=dict
    )
    """What status held when last read or written, by uid, for `flush`."""
    known: set[ServiceKey] = field(default_factory=set)

    async def run_once(self, world: World, now: datetime) -> Sequence[plan.ServicePlan]:
        started = time.perf_counter()
        keys = [view.key for view in world.services]
        # Each pool's speed is learned only for a service on two pools or more.
        per_pool = any(len(view.model_service.spec.pools) > 1 for view in world.services)
        readings = await self.prometheus.read_all(sorted(keys), per_pool) if keys else {}
        for reading in readings.values():
            if reading.signals is None:
                self.metrics.prometheus_query_errors.labels(
                    error=query_error_kind(reading.reason)
                ).inc()
        plans = plan.plan(
            world,
            readings,
            self.states,
            now.timestamp(),
            explain.now_rfc3339(now),
            self.observe_settings,
            self.policies,
        )
        self._forget_all_but(world)
        for one in plans:
            await self._execute(one)
        self.metrics.decision_seconds.observe(time.perf_counter() - started)
        return plans

    def _forget_all_but(self, world: World) -> None:
        """Memory is bounded by the objects that exist: a deleted ModelService's state goes."""
        live = {view.uid for view in world.services}
        for key in [key for key in self.states if key.removesuffix(plan.ADVISORY) not in live]:
            del self.states[key]
        for uid in [uid for uid in self.statuses if uid not in live]:
            del self.statuses[uid]
        keys = {view.key for view in world.services}
        for gone in self.known - keys:
            self.metrics.forget_modelservice(gone.namespace, gone.model_service)
        for new in keys - self.known:
            self.metrics.init_modelservice(new.namespace, new.model_service)
        self.known = keys

    async def _execute(self, one: plan.ServicePlan) -> None:
        decided = one.decided
        view = decided.view
        key = view.key
        try:
            resource_version = view.resource_version
            if decided.scale_to is not None:
                resource_version = await asyncio.to_thread(
                    self.cluster.patch_scale, key.namespace, key.model_service, decided.scale_to
                )
            after = await self._write_status(one, resource_version)
        except kube.NotFound:
            return  # deleted since the watch cache saw it; the next pass forgets it
        except kube.KubeError as error:
            log.warning("autoscaler %s: API server: %s (next pass retries)", key, error)
            return
        self.states[view.uid] = decided.state
        advice = decided.advice
        if advice is not None and advice.decision is not None:
            self.states[view.uid + plan.ADVISORY] = advice.decision.state
            self.metrics.observe_advice(
                key.namespace, key.model_service, advice.policy, advice.decision.replicas
            )
        self.statuses[view.uid] = (key, after)
        self._log_and_report(one, after)
        for event in one.events:
            try:
                await asyncio.to_thread(self.events.event, _involved(key, view.uid), *event)
            except kube.KubeError as error:
                log.info("autoscaler %s: Event not posted: %s", key, error)

    async def _write_status(
        self, one: plan.ServicePlan, resource_version: str
    ) -> modelservice.ModelServiceStatus:
        """The planned status patch. When the reconciler wrote in between (a scale makes it write),
        re-read once and apply the pass to the fresh status, so a scale's decision, time and policy
        state are never lost."""
        view = one.decided.view
        key = view.key
        before = view.model_service.status or modelservice.ModelServiceStatus()
        after, patch = one.status, one.status_patch
        for attempt in range(2):
            if patch is None:
                return before  # what status holds: `flush` compares the policy state with it
            try:
                await asyncio.to_thread(
                    self.cluster.patch_status,
                    key.namespace,
                    key.model_service,
                    patch,
                    resource_version,
                )
                return after
            except kube.Conflict:
                if attempt:
                    log.info("autoscaler %s: status kept changing; next pass", key)
                    return before
            fresh = await asyncio.to_thread(
                self.cluster.read_model_service, key.namespace, key.model_service
            )
            resource_version = str(fresh["metadata"]["resourceVersion"])
            before = modelservice.ModelServiceStatus.model_validate(fresh.get("status") or {})
            after = status_rules.next_status(before, one.result)
            changed = status_rules.status_changed(before, after)
            patch = status_rules.status_patch(before, after) if changed else None
        return after

    def _log_and_report(
        self, one: plan.ServicePlan, after: modelservice.ModelServiceStatus
    ) -> None:
        decided = one.decided
        decision, obs, key = decided.decision, decided.observation, decided.view.key
        previous = decided.view.model_service.status
        last = previous.autoscaler.last_decision if previous and previous.autoscaler else None
        if decision is not None and (last is None or last.message != decision.message):
            log.info(
                "%s %s: %s [%s, bound %s]",
                key,
                decided.authority.mode.value,
                decision.message,
                decision.reason.value,
                decision.bound.value,
            )
        if decision is not None:
            self.metrics.count_decision(
                key.namespace, key.model_service, decision.reason, decision.bound
            )
        self.metrics.observe_modelservice(
            key.namespace,
            key.model_service,
            desired_replicas=decision.replicas if decision else obs.replicas.desired,
            ready_replicas=obs.replicas.ready,
            dollars_per_hour=after.dollars_per_hour
            if after.dollars_per_hour is not None
            else one.result.dollars_per_hour,
            dollars_per_million_tokens=after.dollars_per_million_tokens,
            reference_dollars_per_million_tokens=after.reference_dollars_per_million_tokens,
        )

    async def flush(self) -> int:
        """Checkpoints every policy state that status does not hold yet; returns how many."""
        written = 0
        for uid, state in list(self.states.items()):
            if uid.endswith(plan.ADVISORY):
                continue  # an advisory policy's memory is not worth a write: it only advises
            key, status = self.statuses.get(uid, (None, None))
            patch = status_rules.state_patch(status, state)
            if key is None or patch is None:
                continue
            try:
                fresh = await asyncio.to_thread(
                    self.cluster.read_model_service, key.namespace, key.model_service
                )
                await asyncio.to_thread(
                    self.cluster.patch_status,
                    key.namespace,
                    key.model_service,
                    patch,
                    str(fresh["metadata"]["resourceVersion"]),
                )
                written += 1
                self.statuses[uid] = (key, _holding(status, state))
            except kube.KubeError as error:
                log.info("autoscaler %s: policy state not checkpointed: %s", key, error)
        return written


def _holding(
    status: modelservice.ModelServiceStatus | None, state: types.PolicyState
) -> modelservice.ModelServiceStatus:
    """`status` once the checkpoint of `state` is written."""
    status = status or modelservice.ModelServiceStatus()
    block = status.autoscaler or modelservice.AutoscalerStatus()
    block = block.model_copy(update={"policy_state": dict(state)})
    return status.model_copy(update={"autoscaler": block})


def now() -> datetime:
    return datetime.now(UTC)
