"""The virtual fleet: replicas of one model on one GPU pool, behind a router.

It plays what Kubernetes and the gateway do to a Deployment of vLLM pods, so that a decision costs
in simulation what it costs in a cluster: a new replica holds its GPUs through a cold start before
it serves; a replica that cannot get GPUs stays pending; a removed replica drains (finishes what it
accepted, takes nothing new) and holds its GPUs until it is empty; requests that find no serving
replica wait at the router (like a gateway or Knative's activator) instead of failing.

The router is a setting (`Router`): least-loaded by default, the power of two choices as
thrifty-gateway picks, or round-robin and random as a plain Service's kube-proxy spreads
connections (IPVS `rr`, iptables' random rule), so the policy can be tried behind each.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections import deque
from dataclasses import dataclass
from enum import StrEnum

from thrifty.sim.engine import Engine, EngineEvent
from thrifty.sim.profiles import EngineProfile
from thrifty.sim.traces import Request


class Router(StrEnum):
    """How a request picks its ready replica (held at the router while there is none)."""

    LEAST_LOADED = "least-loaded"
    """Fewest waiting + running: the ideal an engine-aware gateway approximates."""
    POWER_OF_TWO = "power-of-two"
    """Two drawn at random, the one with fewer in flight (thrifty-gateway's balancer)."""
    ROUND_ROBIN = "round-robin"
    """In turn, blind to load (kube-proxy in IPVS mode, `rr`)."""
    RANDOM = "random"
    """Uniformly at random, blind to load (kube-proxy's iptables rules)."""


class ReplicaState(StrEnum):
    PENDING = "Pending"
    """Ordered, but the pool has no free GPUs for it."""
    STARTING = "Starting"
    READY = "Ready"
    DRAINING = "Draining"


@dataclass
class Replica:
    replica_id: int
    state: ReplicaState
    ordered_at: float
    started_at: float | None = None
    ready_at: float | None = None
    engine: Engine | None = None
    pool: str = ""
    """The GPUPool it runs on ("" in a one-pool simulation)."""


_SERVING = (ReplicaState.READY, ReplicaState.DRAINING)


@dataclass(frozen=True)
class NodeAutoscaler:
    """A pool whose nodes come from a node autoscaler (GPUPool provisioning Autoscaled): a node
    is launched when a replica cannot get GPUs, is Ready ``start_seconds`` later, and is removed
    once the replicas no longer need it (WhenEmpty); at most ``max_nodes``."""

    gpus_per_node: int
    max_nodes: int
    start_seconds: float


class Fleet:
    """Replicas, GPU accounting and routing. Time is pushed in by the runner."""

    def __init__(
        self,
        profile: EngineProfile,
        cold_start_seconds: float,
        pool_gpus: int | None,
        initial_replicas: int,
        pools: dict[str, int | None] | None = None,
        nodes: NodeAutoscaler | None = None,
        speeds: dict[str, float] | None = None,
        router: Router = Router.LEAST_LOADED,
        seed: int = 0,
    ) -> None:
        self.profile = profile
        self.router = router
        self._random = random.Random(seed)
        self._turn = 0
        self._profiles = {
            pool: dataclasses.replace(
                profile,
                prefill_tokens_per_second=profile.prefill_tokens_per_second * speed,
                itl0_seconds=profile.itl0_seconds / speed,
                itl_slope_seconds=profile.itl_slope_seconds / speed,
            )
            for pool, speed in (speeds or {}).items()
            if speed != 1.0
        }
        """A pool's replicas run ``speed`` times as fast as ``profile`` (prefill and decode)."""
        self.prefill_by_pool: dict[str, tuple[float, float, int]] = {}
        """Per pool, over every request that finished there: prefill seconds, prompt tokens,
        requests (the sums of vLLM's prefill-time and prompt-token histograms)."""
        self.cold_start_seconds = cold_start_seconds
        self.pool_gpus = pool_gpus
        self.limits: dict[str, int | None] = dict(pools) if pools else {"": pool_gpus}
        """GPUs each pool can give now (None: as many as asked for); a reclaim sets 0."""
        self.held: dict[str, int] = dict.fromkeys(self.limits, 0)
        self.lost_requests = 0
        """Requests that were on a replica when its node was reclaimed."""
        self.nodes = nodes
        self.node_ready_at: list[float] = []
        """Each node of an autoscaled pool: when it is (or was) Ready."""
        if nodes is not None:
            per_node = max(nodes.gpus_per_node // profile.gpus_per_replica, 1)
            warm = min(-(-initial_replicas // per_node), nodes.max_nodes)
            self.node_ready_at = [0.0] * warm
            self.pool_gpus = warm * nodes.gpus_per_node
        self._ids = itertools.count()
        self.replicas: list[Replica] = []
        self.router_queue: deque[tuple[int, Request]] = deque()
        self._next_ready: float | None = None
        # Counters of replicas that are gone: Prometheus' sum of rates keeps their past.
        self.retired_prompt_tokens = 0.0
        self.retired_generation_tokens = 0.0
        first = next(iter(self.limits))
        for _ in range(initial_replicas):
            self._order(0.0, warm=True, pool=first)

    # -- views ---------------------------------------------------------------------------------

    def count(self, state: ReplicaState) -> int:
        return sum(1 for r in self.replicas if r.state is state)

    @property
    def desired(self) -> int:
        """Replicas meant to serve: everything but the draining ones."""
        return sum(1 for r in self.replicas if r.state is not ReplicaState.DRAINING)

    @property
    def gpus_held(self) -> int:
        return sum(self.held.values())

    @property
    def free_gpus(self) -> int | None:
        return self.pool_free(next(iter(self.limits)))

    def pool_free(self, pool: str) -> int | None:
        # The one unnamed pool follows pool_gpus, which an autoscaled pool's nodes move.
        limit = self.pool_gpus if pool == "" else self.limits[pool]
        return None if limit is None else limit - self.held[pool]

    def in_pool(self, pool: str, *states: ReplicaState) -> int:
        return sum(1 for r in self.replicas if r.pool == pool and (not states or r.state in states))

    def ready_nodes(self, now: float) -> int:
        return sum(1 for at in self.node_ready_at if at <= now)

    def oldest_starting_seconds(self, now: float) -> float:
        ages = [now - r.ordered_at for r in self.replicas if r.state is ReplicaState.STARTING]
        return max(ages, default=0.0)

    def engines(self) -> list[Engine]:
        """Engines holding work or able to: ready and draining replicas."""
        return [
            r.engine
            for r in self.replicas
            if r.engine is not None and r.state in (ReplicaState.READY, ReplicaState.DRAINING)
        ]

    def next_ready_time(self) -> float | None:
        """When the next starting replica becomes ready (None: none is starting)."""
        return self._next_ready

    def _update_next_ready(self) -> None:
        times = [
            r.ready_at
            for r in self.replicas
            if r.state is ReplicaState.STARTING and r.ready_at is not None
        ]
        times += self.node_ready_at[self._counted_nodes :]
        self._next_ready = min(times, default=None)

    # -- nodes of an autoscaled pool -----------------------------------------------------------

    @property
    def _counted_nodes(self) -> int:
        """Nodes whose GPUs are in ``pool_gpus`` (the first ones: they are Ready in order)."""
        if self.nodes is None:
            return 0
        return (self.pool_gpus or 0) // self.nodes.gpus_per_node

    def _nodes_ready(self, now: float) -> None:
        """Counts the nodes that became Ready by ``now`` and starts what waited for them."""
        if self.nodes is None:
            return
        ready = sum(1 for at in self.node_ready_at if at <= now)
        if ready != self._counted_nodes:
            self.pool_gpus = ready * self.nodes.gpus_per_node
            self._place_pending(now)
            self._remove_empty_nodes()  # a node nobody waits for any more

    def _launch_nodes(self, now: float) -> None:
        """Launches the nodes the pending replicas need that are not already coming."""
        nodes = self.nodes
        if nodes is None:
            return
        gpus = self.profile.gpus_per_replica
        per_node = max(nodes.gpus_per_node // gpus, 1)
        waiting = self.count(ReplicaState.PENDING)
        coming = len(self.node_ready_at) - self._counted_nodes
        wanted = -(-waiting // per_node) - coming
        for _ in range(max(min(wanted, nodes.max_nodes - len(self.node_ready_at)), 0)):
            self.node_ready_at.append(now + nodes.start_seconds)

    def _remove_empty_nodes(self) -> None:
        """Ready nodes the replicas no longer need go (the autoscaler removes empty nodes)."""
        nodes = self.nodes
        if nodes is None:
            return
        needed = -(-self.gpus_held // nodes.gpus_per_node)
        while self._counted_nodes > needed:
            self.node_ready_at.pop(0)
            self.pool_gpus = (self.pool_gpus or 0) - nodes.gpus_per_node

    # -- time ----------------------------------------------------------------------------------

    def advance(self, now: float, only_due: bool = False) -> list[EngineEvent]:
        """Brings engines to ``now``, turns started replicas ready, retires drained ones.

        ``only_due`` advances only engines with an event due by ``now``: enough for routing
        (their loads are current) and much cheaper per arrival; counters of the others lag
        until the next full advance (every scrape does one).
        """
        if self._next_ready is not None and self._next_ready <= now:
            self._nodes_ready(now)
            for replica in self.replicas:
                ready_at = replica.ready_at
                starting = replica.state is ReplicaState.STARTING
                if starting and ready_at is not None and ready_at <= now:
                    replica.state = ReplicaState.READY
            self._update_next_ready()
        events: list[EngineEvent] = []
        draining = False
        for replica in self.replicas:
            state = replica.state
            engine = replica.engine
            if engine is None or state not in _SERVING:
                continue
            if only_due:
                due = engine.next_event_time()
                if due is None or due > now:
                    continue
            done = engine.advance(now)
            if done:
                self._count_prefill(replica.pool, done)
                events += done
            draining = draining or state is ReplicaState.DRAINING
        if draining:
            self._retire_drained()
            self._place_pending(now)
        if self.router_queue:
            self._flush_router(now)
        return events

    def _count_prefill(self, pool: str, events: list[EngineEvent]) -> None:
        seconds, tokens, requests = self.prefill_by_pool.get(pool, (0.0, 0.0, 0))
        for event in events:
            timing = event.timing
            if timing is not None and timing.prefill_seconds is not None:
                seconds += timing.prefill_seconds
                tokens += timing.prompt_tokens
                requests += 1
        self.prefill_by_pool[pool] = (seconds, tokens, requests)

    # -- routing -------------------------------------------------------------------------------

    def route(self, index: int, request: Request, now: float) -> None:
        """Sends a request to a ready replica as the router picks, or holds it at the router."""
        target = self._pick()
        if target is None or self.router_queue:
            self.router_queue.append((index, request))
            return
        target.submit(str(index), request.prompt_tokens, request.output_tokens, now)

    def _pick(self) -> Engine | None:
        ready = [
            r.engine
            for r in self.replicas
            if r.state is ReplicaState.READY and r.engine is not None
        ]
        if len(ready) < 2:
            return ready[0] if ready else None
        if self.router is Router.ROUND_ROBIN:
            self._turn = (self._turn + 1) % len(ready)
            return ready[self._turn]
        if self.router is Router.RANDOM:
            return self._random.choice(ready)
        if self.router is Router.POWER_OF_TWO:
            first, second = self._random.sample(ready, 2)
            return first if first.num_requests <= second.num_requests else second
        return min(ready, key=lambda engine: engine.num_requests)

    def _flush_router(self, now: float) -> None:
        while self.router_queue:
            target = self._pick()
            if target is None:
                return
            index, request = self.router_queue.popleft()
            target.submit(str(index), request.prompt_tokens, request.output_tokens, now)

    # -- scaling -------------------------------------------------------------------------------

    def scale_to(self, replicas: int, now: float) -> None:
        """Orders or removes replicas so ``desired`` becomes ``replicas``."""
        replicas = max(0, replicas)
        while self.desired < replicas:
            self._order(now, warm=False)
        while self.desired > replicas:
            self._remove_one(now)
        self._retire_drained()
        self._place_pending(now)
        self._launch_nodes(now)
        self._update_next_ready()

    def scale_pool(self, pool: str, replicas: int, now: float) -> None:
        """Orders or removes replicas of one pool (the Deployment of that pool)."""
        while self.in_pool(pool) - self.in_pool(pool, ReplicaState.DRAINING) < replicas:
            self._order(now, warm=False, pool=pool)
        while self.in_pool(pool) - self.in_pool(pool, ReplicaState.DRAINING) > replicas:
            self._remove_one(now, pool)
        self._retire_drained()
        self._place_pending(now)
        self._update_next_ready()

    def add_warm(self, pool: str, now: float) -> None:
        """A replica serving from ``now`` (the opening fleet)."""
        self._order(now, warm=True, pool=pool)
        self._update_next_ready()

    def reclaim(self, pool: str, now: float) -> None:
        """The pool's nodes are gone: its replicas stop at once (what they held is lost) and it
        gives no GPU until `restore`."""
        for replica in [r for r in self.replicas if r.pool == pool]:
            self.replicas.remove(replica)
            if replica.state is not ReplicaState.PENDING:
                self.held[pool] -= self.profile.gpus_per_replica
            if replica.engine is not None:
                self.lost_requests += replica.engine.num_requests
                self.retired_prompt_tokens += replica.engine.prompt_tokens_total
                self.retired_generation_tokens += replica.engine.generation_tokens_total
        self.limits[pool] = 0
        self._update_next_ready()

    def restore(self, pool: str, gpus: int | None, now: float) -> None:
        self.limits[pool] = gpus
        self._place_pending(now)
        self._update_next_ready()

    def _order(self, now: float, warm: bool, pool: str | None = None) -> None:
        where = next(iter(self.limits)) if pool is None else pool
        replica = Replica(next(self._ids), ReplicaState.PENDING, ordered_at=now, pool=where)
        self.replicas.append(replica)
        if self._gpus_available(where):
            self._start(replica, now, warm)

    def _start(self, replica: Replica, now: float, warm: bool = False) -> None:
        replica.started_at = now
        replica.ready_at = now if warm else now + self.cold_start_seconds
        replica.state = ReplicaState.READY if warm else ReplicaState.STARTING
        profile = self._profiles.get(replica.pool, self.profile)
        replica.engine = Engine(profile, now=replica.ready_at)
        self.held[replica.pool] += self.profile.gpus_per_replica

    def _gpus_available(self, pool: str) -> bool:
        free = self.pool_free(pool)
        return free is None or free >= self.profile.gpus_per_replica

    def _remove_one(self, now: float, pool: str | None = None) -> None:
        # Kubernetes removes unscheduled pods first, then not-ready ones, then ready ones.
        mine = [r for r in self.replicas if pool is None or r.pool == pool]
        for state in (ReplicaState.PENDING, ReplicaState.STARTING):
            candidates = [r for r in mine if r.state is state]
            if candidates:
                victim = max(candidates, key=lambda r: r.ordered_at)
                self.replicas.remove(victim)
                if state is ReplicaState.STARTING:
                    self.held[victim.pool] -= self.profile.gpus_per_replica
                return
        ready = [r for r in mine if r.state is ReplicaState.READY]
        victim = min(ready, key=lambda r: (r.engine.num_requests if r.engine else 0, -r.replica_id))
        victim.state = ReplicaState.DRAINING
        if victim.engine is not None:
            victim.engine.start_draining()

    def _retire_drained(self) -> None:
        for replica in list(self.replicas):
            if replica.state is ReplicaState.DRAINING and (
                replica.engine is None or replica.engine.idle
            ):
                self.replicas.remove(replica)
                self.held[replica.pool] -= self.profile.gpus_per_replica
                if replica.engine is not None:
                    self.retired_prompt_tokens += replica.engine.prompt_tokens_total
                    self.retired_generation_tokens += replica.engine.generation_tokens_total
        self._remove_empty_nodes()

    def _place_pending(self, now: float) -> None:
        for replica in self.replicas:
            if replica.state is ReplicaState.PENDING and self._gpus_available(replica.pool):
                self._start(replica, now)
