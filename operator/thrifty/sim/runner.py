"""Replays a trace through one policy on the virtual fleet and measures what it cost and delivered.

The loop is the operator's loop with a virtual clock: Prometheus scrapes the fleet every scrape
interval, and every decision interval the fleet's replicas become the pods of a `World` that goes
through the operator's own pass (`thrifty.autoscaler.plan.decide`: the same translation of the
ModelService, the same budget and policy calls, the state carried the same way); its decision is
applied to the fleet with the fleet's delays. Between those ticks the only events are arrivals and
replicas becoming ready; engines advance lazily, so the cost is a few events per request whatever
the token counts.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from thrifty import cost
from thrifty.api import gpupool, modelservice, throughput
from thrifty.autoscaler import observe, plan
from thrifty.autoscaler.world import ServiceKey, ServiceView, SignalsReading, World
from thrifty.policy.types import Observation, PolicySpec, PolicyState, ScalingPolicy
from thrifty.reconciler import spread
from thrifty.sim import misses
from thrifty.sim import pools as pools_module
from thrifty.sim.engine import EngineEvent, EventKind
from thrifty.sim.fleet import Fleet, NodeAutoscaler, Replica, ReplicaState, Router
from thrifty.sim.observe import (
    REQUEST_LATENCY_BUCKETS_SECONDS,
    Histogram,
    Metrics,
    Prometheus,
    Scrape,
)
from thrifty.sim.pools import Reclaim, SimPool
from thrifty.sim.profiles import EngineProfile
from thrifty.sim.scenario import SIM_POOL, gpu_pool
from thrifty.sim.traces import Request, Trace

ProgressCallback = Callable[[float], None]


@dataclass(frozen=True)
class ScrapeNoise:
    """What real scrapes of real vLLM add to the simulator's exact ones, seeded.

    vLLM's ``num_requests_waiting`` is the scheduler's queue after a step: a burst of long prompts
    that exceeds one step's token budget shows as waiting requests for a step or two, spare
    replicas or not. Prometheus scrapes late by up to ``jitter_seconds`` and misses the odd one."""

    seed: int = 0
    jitter_seconds: float = 2.0
    missed_share: float = 0.05
    held_share: float = 0.3
    """Share of scrapes at which a serving replica shows requests held back by the step budget."""
    held_mean: float = 2.0
    """How many it shows then, on average (Poisson)."""


@dataclass(frozen=True)
class SimulationConfig:
    """One run's settings. Defaults follow the operator's defaults and the reference notes."""

    profile: EngineProfile
    model_service: modelservice.ModelService
    """What is simulated, as the object a user applies (`thrifty.sim.scenario`)."""
    price_per_gpu_hour: float = 2.5
    """Neocloud on-demand H100 (about $2.2-3.0 per GPU-hour)."""
    pool_name: str = SIM_POOL
    pool_gpus: int | None = None
    """GPUs the pool can give; None: unlimited."""
    cold_start_seconds: float = 120.0
    initial_replicas: int = 1
    """Warm replicas at t=0."""
    decision_interval_seconds: float = 15.0
    scrape_interval_seconds: float = 10.0
    rate_window_seconds: float = 60.0
    ttft_window_seconds: float = 120.0
    slo_ttft_seconds: float = 2.0
    """A request meets the SLO when its TTFT is at most this."""
    tail_seconds: float = 300.0
    """Time after the last arrival for in-flight requests to finish (not billed)."""
    budget_dollars_per_hour: float | None = None
    """Cap used to count seconds over budget; defaults to the spec's ``max_dollars_per_hour``."""
    observe_settings: observe.ObserveSettings = field(default_factory=observe.ObserveSettings)
    """The operator-wide defaults the translation falls back on."""
    pools: tuple[SimPool, ...] = ()
    """Several pools, in the ModelService's spec.pools order: each decision is spread over them
    as the operator spreads it (`thrifty.reconciler.spread`). Empty: the one pool above."""
    reclaims: tuple[Reclaim, ...] = ()
    """Spot interruptions (`thrifty.sim.pools.interruptions`)."""
    return_delay_seconds: float = 600.0
    """The operator's THRIFTY_RETURN_DELAY_SECONDS."""
    learn_reclaims: bool = True
    """Plan each spot pool with the larger of its published and its observed reclaim hazard
    (`pools.ReclaimLog`); False: the published rate only (a baseline that does not learn)."""
    learn_throughput: bool = True
    """Learn each pool's relative throughput from its replicas' prefill (`thrifty.api.throughput`)
    as the operator does; False: the pools' declared relativeThroughput only (a baseline)."""
    noise: ScrapeNoise | None = None
    """Scrapes as a real cluster gives them (jitter, misses, vLLM's step-level waiting gauge)."""
    metrics: Metrics = Metrics.VLLM
    """Which of vLLM's series the engines export (`thrifty.sim.observe.Metrics`)."""
    router: Router = Router.LEAST_LOADED
    """How requests pick a ready replica (`thrifty.sim.fleet.Router`)."""
    router_seed: int = 0
    """Seeds the random and power-of-two routers' draws."""
    pool: gpupool.GPUPool | None = None
    """The user's GPUPool (`-f gpupool.yaml`): an Autoscaled one has its nodes come from a node
    autoscaler, each taking `nodeStartSeconds` before replicas can start on it."""

    @property
    def node_autoscaler(self) -> NodeAutoscaler | None:
        pool = self.pool
        if pool is None or pool.spec.provisioning.mode is not gpupool.ProvisioningMode.AUTOSCALED:
            return None
        return NodeAutoscaler(
            gpus_per_node=pool.spec.gpus_per_node,
            max_nodes=pool.spec.provisioning.max_nodes or 0,
            start_seconds=float(pool.spec.provisioning.node_start_seconds),
        )

    @property
    def spec(self) -> PolicySpec:
        """The spec as the policy sees it, through the operator's translation."""
        return observe.policy_spec(self.model_service, self.observe_settings)


@dataclass(frozen=True)
class TimePoint:
    time: float
    arrivals_per_second: float
    desired: int
    ready: int
    starting: int
    pending: int
    draining: int
    waiting: float
    running: float
    ttft_p95_seconds: float | None
    dollars_per_hour: float
    cost_dollars: float


@dataclass(frozen=True)
class RunResult:
    policy: str
    trace: str
    attribution: str
    profile: str
    requests: int
    served: int
    duration_seconds: float
    gpu_hours: float
    cost_dollars: float
    tokens: float
    dollars_per_million_tokens: float | None
    ttft_p50_seconds: float
    ttft_p95_seconds: float
    ttft_p99_seconds: float
    slo_ttft_seconds: float
    slo_attainment: float
    """Share of requests with TTFT at or under the SLO (unserved requests miss it)."""
    seconds_over_budget: float
    scale_events: int
    max_replicas: int
    truncated_requests: int
    series: tuple[TimePoint, ...] = field(repr=False)
    ttft_seconds: tuple[float, ...] = field(repr=False, default=())
    """Every request's TTFT in arrival order (inf: never served)."""
    lost_requests: int = 0
    """Requests on a replica whose spot node was reclaimed (unserved: they miss the SLO)."""
    reclaims: int = 0
    learned_throughput: dict[str, float] = field(default_factory=dict)
    """Each pool's relative throughput as learned by the end (`thrifty.api.throughput`)."""
    late: misses.LateFirstTokens = field(default_factory=misses.LateFirstTokens)
    """The requests over the SLO, by the fleet's state when they arrived (`misses`)."""


class _Accounting:
    """GPU-seconds, cost and time over budget, integrated between state changes."""

    def __init__(self, config: SimulationConfig, billed_until: float) -> None:
        self.config = config
        self.billed_until = billed_until
        self.last = 0.0
        self.gpu_seconds = 0.0
        self.dollar_seconds = 0.0
        self.seconds_over_budget = 0.0

    def integrate(self, now: float, gpus_held: int, dollars_per_hour: float | None = None) -> None:
        """``dollars_per_hour``: the spend over several pools (None: one pool at its price)."""
        end = min(now, self.billed_until)
        if end > self.last:
            span = end - self.last
            self.gpu_seconds += gpus_held * span
            spend = dollars_per_hour
            if spend is None:
                spend = gpus_held * self.config.price_per_gpu_hour
            self.dollar_seconds += spend * span
            cap = self.config.budget_dollars_per_hour
            if cap is not None and spend > cap + 1e-9:
                self.seconds_over_budget += span
            self.last = end

    @property
    def cost_dollars(self) -> float:
        if self.config.pools:
            return self.dollar_seconds / cost.SECONDS_PER_HOUR
        return self.gpu_seconds / cost.SECONDS_PER_HOUR * self.config.price_per_gpu_hour


class _Run:
    def __init__(
        self,
        trace: Trace,
        policy: ScalingPolicy,
        config: SimulationConfig,
        progress: ProgressCallback | None,
    ) -> None:
        self.trace = trace
        self.policy = policy
        self.config = config
        self.progress = progress
        self.fleet = Fleet(
            config.profile,
            config.cold_start_seconds,
            config.pool_gpus,
            0 if config.pools else config.initial_replicas,
            pools={pool.name: pool.gpus for pool in config.pools} or None,
            nodes=None if config.pools else config.node_autoscaler,
            speeds={pool.name: pool.true_speed for pool in config.pools},
            router=config.router,
            seed=config.router_seed,
        )
        self.prices = {pool.name: pool.spec.price_per_gpu_hour for pool in config.pools}
        self.reclaim_events = sorted(
            [(r.notice_at, "notice", r) for r in config.reclaims]
            + [(r.gone_at, "gone", r) for r in config.reclaims]
            + [(r.back_at, "back", r) for r in config.reclaims],
            key=lambda e: e[0],
        )
        self.tainted: set[str] = set()
        self.last_loss: dict[str, float] = {}
        self.reclaim_log = pools_module.ReclaimLog()
        self.seen_until = 0.0
        self.previous_target: float | None = None
        self.prometheus = Prometheus(
            config.rate_window_seconds, config.ttft_window_seconds, metrics=config.metrics
        )
        self.histogram = Histogram()
        self.queue_histogram = Histogram(REQUEST_LATENCY_BUCKETS_SECONDS)
        self.prefill_histogram = Histogram(REQUEST_LATENCY_BUCKETS_SECONDS)
        self.accounting = _Accounting(config, billed_until=trace.duration_seconds)
        self.ttft: list[float] = [math.inf] * len(trace.requests)
        self.prompt_total = 0.0
        self.generation_total = 0.0
        self.finished = 0
        self.state: PolicyState = {}
        self.target = config.initial_replicas
        first = config.pools[0] if config.pools else None
        self.unit_cold_start = observe.cold_start_seconds(
            config.model_service, config.observe_settings
        )
        """The cold start pools' units are planned at (the operator's prior, as `plan` uses)."""
        self.model_service = config.model_service.model_copy(
            update={
                "status": modelservice.ModelServiceStatus(
                    pool=config.pool_name if first is None else first.name,
                    price_per_gpu_hour=config.price_per_gpu_hour
                    if first is None
                    else first.spec.price_per_gpu_hour
                    / first.spec.planned_units(self.unit_cold_start),
                )
            }
        )
        if config.pools:
            self._place(0.0, warm=True)
        self.scale_events = 0
        self.reclaims = 0
        self.max_replicas = config.initial_replicas
        self.series: list[TimePoint] = []
        self.arrivals_since_tick = 0
        self.truncated = 0
        self.random = random.Random(config.noise.seed if config.noise is not None else 0)

    def run(self) -> RunResult:
        config = self.config
        end = self.trace.duration_seconds + config.tail_seconds
        requests = self.trace.requests
        next_index = 0
        next_scrape = 0.0
        next_decision = config.decision_interval_seconds
        next_report = 0.0
        while True:
            candidates = [next_scrape, next_decision]
            if next_index < len(requests):
                candidates.append(requests[next_index].arrival_seconds)
            ready = self.fleet.next_ready_time()
            if ready is not None:
                candidates.append(ready)
            if self.reclaim_events:
                candidates.append(self.reclaim_events[0][0])
            now = min(candidates)
            if now > end:
                break
            # Arrivals only need current loads; scrapes and decisions need every counter.
            full = next_scrape <= now or next_decision <= now
            self._advance(now, only_due=not full)
            while next_index < len(requests) and requests[next_index].arrival_seconds <= now:
                self._arrive(next_index, now)
                next_index += 1
            while self.reclaim_events and self.reclaim_events[0][0] <= now:
                self._interrupt(now, *self.reclaim_events.pop(0)[1:])
            if next_scrape <= now:
                self._scrape(now)
                next_scrape = now + self._scrape_interval()
            if next_decision <= now:
                self._decide(now)
                next_decision += config.decision_interval_seconds
                if self.progress is not None and now >= next_report:
                    self.progress(min(1.0, now / end))
                    next_report = now + end / 20
        self._advance(end)
        return self._result()

    def _interrupt(self, now: float, kind: str, reclaim: Reclaim) -> None:
        """A notice taints the pool (its replicas drain, replacements go elsewhere at once, as
        the operator does on the taint); then the replicas are gone; then the capacity is back."""
        pool = reclaim.pool
        if kind == "notice":
            spec = next(p for p in self.config.pools if p.name == pool)
            self.reclaim_log.reclaim(pool, pools_module.nodes_held(spec, self.fleet.held[pool]))
            self.tainted.add(pool)
            self.last_loss[pool] = now
            self.reclaims += 1
            if self.config.pools:
                self._place(now)
        elif kind == "gone":
            self.fleet.reclaim(pool, now)
        else:
            self.tainted.discard(pool)
            gpus = next(p.gpus for p in self.config.pools if p.name == pool)
            self.fleet.restore(pool, gpus, now)

    def _spend(self) -> float | None:
        if not self.config.pools:
            return None
        return sum(self.fleet.held[name] * price for name, price in self.prices.items())

    def _advance(self, now: float, only_due: bool = False) -> None:
        self.accounting.integrate(now, self.fleet.gpus_held, self._spend())
        self._see_nodes(now)
        for event in self.fleet.advance(now, only_due):
            self._record(event)

    def _hazards(self) -> dict[str, float]:
        return self.reclaim_log.hazards() if self.config.learn_reclaims else {}

    def _see_nodes(self, now: float) -> None:
        """Node-seconds of every spot pool since the last call (the denominator of the hazard
        the pools are planned with)."""
        span = now - self.seen_until
        if span <= 0:
            return
        for pool in self.config.pools:
            if pool.spec.is_spot:
                nodes = pools_module.nodes_held(pool, self.fleet.held[pool.name])
                self.reclaim_log.seen(pool.name, nodes, span)
        self.seen_until = now

    def _record(self, event: EngineEvent) -> None:
        if event.kind is EventKind.FIRST_TOKEN:
            index = int(event.request_id)
            ttft = event.time - self.trace.requests[index].arrival_seconds
            self.ttft[index] = ttft
            self.histogram.observe(ttft)
        elif event.timing is not None:
            self.finished += 1
            self.queue_histogram.observe(event.timing.queue_seconds)
            prefill = event.timing.prefill_seconds
            if prefill is not None:
                self.prefill_histogram.observe(prefill)
            self.prompt_total += event.timing.prompt_tokens
            self.generation_total += event.tokens_generated

    def _arrive(self, index: int, now: float) -> None:
        request = self.trace.requests[index]
        limit = min(self.config.profile.max_model_len, self.config.profile.kv_capacity_tokens)
        if request.prompt_tokens + request.output_tokens > limit:
            # vLLM would reject it; keep its load, cut to the longest prompt the model takes.
            self.truncated += 1
            output = min(request.output_tokens, limit // 2)
            request = Request(request.arrival_seconds, limit - output, output)
        self.fleet.route(index, request, now)
        self.arrivals_since_tick += 1

    def _scrape_interval(self) -> float:
        noise = self.config.noise
        interval = self.config.scrape_interval_seconds
        if noise is None:
            return interval
        return interval + self.random.uniform(-noise.jitter_seconds, noise.jitter_seconds)

    def _held_by_steps(self, busy: int) -> float:
        """Waiting requests vLLM shows for prompts its step budget holds back (noise only): on
        replicas that are serving, since an idle one holds nothing back."""
        noise = self.config.noise
        if noise is None:
            return 0.0
        held = 0
        for _ in range(busy):
            if self.random.random() < noise.held_share:
                held += _poisson(self.random, noise.held_mean)
        return float(held)

    def _scrape(self, now: float) -> None:
        noise = self.config.noise
        if noise is not None and self.random.random() < noise.missed_share:
            return
        engines = self.fleet.engines()
        live_prompt = sum(e.prompt_tokens_total for e in engines)
        live_generation = sum(e.generation_tokens_total for e in engines)
        self.prometheus.record(
            Scrape(
                time=now,
                requests_waiting=float(
                    sum(e.num_waiting for e in engines) + len(self.fleet.router_queue)
                )
                + self._held_by_steps(sum(1 for e in engines if e.num_running)),
                requests_running=float(sum(e.num_running for e in engines)),
                kv_cache_usage=(
                    sum(e.kv_cache_usage for e in engines) / len(engines) if engines else 0.0
                ),
                serving_replicas=len(engines),
                prompt_tokens_total=self.fleet.retired_prompt_tokens + live_prompt,
                generation_tokens_total=self.fleet.retired_generation_tokens + live_generation,
                requests_total=float(self.finished),
                ttft_buckets=self.histogram.snapshot(),
                finished_tokens_total=self.prompt_total + self.generation_total,
                queue_buckets=self.queue_histogram.snapshot(),
                prefill_buckets=self.prefill_histogram.snapshot(),
                pool_prefill=tuple(
                    (pool, *sums) for pool, sums in sorted(self.fleet.prefill_by_pool.items())
                )
                if self.config.pools
                else (),
            )
        )

    def _decide(self, now: float) -> None:
        signals = self.prometheus.signals(now)
        learning = signals is not None and self.config.learn_throughput
        pool_prefill = self.prometheus.pool_prefill(now) if learning else ()
        decided = plan.decide(
            self._world(now),
            {_KEY: SignalsReading(signals, "simulated scrape", pool_prefill)},
            {_UID: self.state},
            now,
            self.config.observe_settings,
            plan.Fixed(self.policy),
        )
        one = decided[0]
        self.state = one.state
        self._learn(one.pool_throughput)
        target = one.observation.replicas.desired if one.decision is None else one.decision.replicas
        target = max(0, target)
        if not self.config.pools:
            if target != self.fleet.desired:
                self.scale_events += 1
            self.fleet.scale_to(target, now)
        else:
            if target != self.target:
                self.scale_events += 1
            self.target = target
            self._place(now)
        self.max_replicas = max(self.max_replicas, self.fleet.desired)
        self._sample(now, one.observation)

    def _learn(self, learned: Sequence[modelservice.PoolThroughput] | None) -> None:
        """Status's learned throughput after the pass, as the operator writes it."""
        if learned is None:
            return
        status = self.model_service.status or modelservice.ModelServiceStatus()
        block = status.autoscaler or modelservice.AutoscalerStatus()
        block = block.model_copy(update={"pool_throughput": list(learned)})
        status = status.model_copy(update={"autoscaler": block})
        self.model_service = self.model_service.model_copy(update={"status": status})

    def learned_throughput(self) -> dict[str, float]:
        pools = {pool.name: pool.spec for pool in self.config.pools}
        return throughput.learned(self.model_service.spec, self.model_service.status, pools)

    def _place(self, now: float, warm: bool = False) -> None:
        """The reconciler's pass: the target spread over the pools, each pool scaled to its
        share (a tainted pool holds nothing). ``warm``: the opening fleet, serving at t=0."""
        spec = self.model_service.spec
        hazards = self._hazards()
        pools = {pool.name: pool.spec for pool in self.config.pools}
        speeds = throughput.in_use(spec, self.model_service.status, pools)
        offers = [
            pools_module.offer(
                pool,
                self.fleet,
                self.config.profile.gpus_per_replica,
                tainted=pool.name in self.tainted,
                returnable=now - self.last_loss.get(pool.name, -math.inf)
                >= self.config.return_delay_seconds,
                cold_start_seconds=self.unit_cold_start,
                observed_hazard=hazards.get(pool.name, 0.0),
                learned=speeds.get(pool.name),
            )
            for pool in self.config.pools
        ]
        placed = spread.spread(
            offers,
            float(self.target),
            cheapest=spec.placement is modelservice.PlacementPolicy.CHEAPEST,
            min_on_demand=spec.min_on_demand_replicas,
            cold_start_seconds=self.config.cold_start_seconds,
            previous_target=self.previous_target,
        )
        self.previous_target = float(self.target)
        for name, replicas in placed.replicas.items():
            if warm:
                for _ in range(replicas):
                    self.fleet.add_warm(name, now)
            else:
                self.fleet.scale_pool(name, replicas, now)

    def _world(self, now: float) -> World:
        """The fleet as the operator's caches would show it: the ModelService with its replica
        target, a pod per replica, the pool with the GPUs not held."""
        config = self.config
        fleet = self.fleet
        target = self.target if config.pools else fleet.desired
        if self.model_service.spec.replicas != target:
            spec = self.model_service.spec.model_copy(update={"replicas": target})
            self.model_service = self.model_service.model_copy(update={"spec": spec})
        view = ServiceView(
            key=_KEY,
            uid=_UID,
            model_service=self.model_service,
            resource_version="",
            generation=None,
            pods=[_pod(replica, now) for replica in fleet.replicas],
        )
        if config.pools:
            pools = {}
            for one in config.pools:
                free = fleet.pool_free(one.name)
                free = pools_module.UNLIMITED_ROOM if free is None else max(free, 0)
                if one.name in self.tainted:
                    free = 0
                status = gpupool.GPUPoolStatus(gpus_allocatable=free, gpus_free=free)
                pools[one.name] = gpupool.GPUPool(spec=one.spec, status=status)
            return World(services=[view], pools=pools, observed_hazards=self._hazards())
        free = fleet.free_gpus
        pool = gpu_pool(config.price_per_gpu_hour, None if free is None else max(free, 0))
        nodes = fleet.nodes
        if nodes is not None and config.pool is not None:  # what the operator's caches would show
            ready = fleet.ready_nodes(now)
            status = pool.status or gpupool.GPUPoolStatus()
            more = max(nodes.max_nodes - ready, 0) * nodes.gpus_per_node
            pool = gpupool.GPUPool(
                spec=config.pool.spec,
                status=status.model_copy(update={"nodes": ready, "gpus_provisionable": more}),
            )
        return World(services=[view], pools={config.pool_name: pool})

    def _sample(self, now: float, observation: Observation) -> None:
        fleet = self.fleet
        signals = observation.signals
        self.series.append(
            TimePoint(
                time=now,
                arrivals_per_second=self.arrivals_since_tick
                / self.config.decision_interval_seconds,
                desired=fleet.desired,
                ready=fleet.count(ReplicaState.READY),
                starting=fleet.count(ReplicaState.STARTING),
                pending=fleet.count(ReplicaState.PENDING),
                draining=fleet.count(ReplicaState.DRAINING),
                waiting=signals.requests_waiting if signals else float(len(fleet.router_queue)),
                running=signals.requests_running if signals else 0.0,
                ttft_p95_seconds=signals.ttft_p95_seconds if signals else None,
                dollars_per_hour=self._spend() or fleet.gpus_held * self.config.price_per_gpu_hour,
                cost_dollars=self.accounting.cost_dollars,
            )
        )
        self.arrivals_since_tick = 0

    def _result(self) -> RunResult:
        config = self.config
        ttfts = sorted(self.ttft)
        served = sum(1 for t in ttfts if math.isfinite(t))
        within = sum(1 for t in ttfts if t <= config.slo_ttft_seconds)
        duration = self.trace.duration_seconds
        tokens = self.prompt_total + self.generation_total
        mean_dollars_per_hour = self.accounting.cost_dollars * cost.SECONDS_PER_HOUR / duration
        return RunResult(
            policy=self.policy.name,
            trace=self.trace.name,
            attribution=self.trace.attribution,
            profile=config.profile.name,
            requests=len(ttfts),
            served=served,
            duration_seconds=duration,
            gpu_hours=self.accounting.gpu_seconds / cost.SECONDS_PER_HOUR,
            cost_dollars=self.accounting.cost_dollars,
            tokens=tokens,
            dollars_per_million_tokens=cost.dollars_per_million_tokens(
                mean_dollars_per_hour, tokens / duration
            ),
            ttft_p50_seconds=_percentile(ttfts, 0.50),
            ttft_p95_seconds=_percentile(ttfts, 0.95),
            ttft_p99_seconds=_percentile(ttfts, 0.99),
            slo_ttft_seconds=config.slo_ttft_seconds,
            slo_attainment=within / len(ttfts) if ttfts else 1.0,
            seconds_over_budget=self.accounting.seconds_over_budget,
            scale_events=self.scale_events,
            max_replicas=self.max_replicas,
            truncated_requests=self.truncated,
            learned_throughput=self.learned_throughput() if config.pools else {},
            series=tuple(self.series),
            ttft_seconds=tuple(self.ttft),
            lost_requests=self.fleet.lost_requests,
            late=misses.classify(
                [request.arrival_seconds for request in self.trace.requests],
                self.ttft,
                config.slo_ttft_seconds,
                self.series,
                config.cold_start_seconds,
            ),
            reclaims=self.reclaims,
        )


_KEY = ServiceKey("sim", "sim")
_UID = "sim"


def _pod(replica: Replica, now: float) -> observe.PodView:
    """A replica as the pod the operator would see: placed once started, ready, or leaving."""
    state = replica.state
    placed = state is not ReplicaState.PENDING
    started = replica.started_at if replica.started_at is not None else replica.ordered_at
    ready = state is ReplicaState.READY
    measured = None
    if ready and replica.ready_at is not None and replica.started_at is not None:
        # A replica warm at t=0 started before the trace: it measured nothing.
        measured = replica.ready_at - replica.started_at or None
    return observe.PodView(
        ready=ready,
        scheduled=placed,
        starting_seconds=max(now - started, 0.0) if state is ReplicaState.STARTING else 0.0,
        terminating=state is ReplicaState.DRAINING,
        cold_start_seconds=measured,
        pool=replica.pool or None,
        ready_seconds=now - replica.ready_at if ready and replica.ready_at is not None else None,
    )


def _poisson(rng: random.Random, mean: float) -> int:
    """Knuth's method: fine for the small means of held requests."""
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def _percentile(sorted_values: list[float], quantile: float) -> float:
    """Nearest-rank percentile; inf when the rank falls on unserved requests."""
    if not sorted_values:
        return 0.0
    rank = max(0, math.ceil(quantile * len(sorted_values)) - 1)
    return sorted_values[rank]


def simulate(
    trace: Trace,
    policy: ScalingPolicy,
    config: SimulationConfig,
    progress: ProgressCallback | None = None,
) -> RunResult:
    """Runs ``policy`` over ``trace`` on a fleet described by ``config``. Deterministic."""
    if config.budget_dollars_per_hour is None and config.spec.max_dollars_per_hour is not None:
        config = replace(config, budget_dollars_per_hour=config.spec.max_dollars_per_hour)
    return _Run(trace, policy, config, progress).run()
