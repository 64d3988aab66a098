"""The virtual fleet: cold start, draining, GPU capacity, routing."""

from __future__ import annotations

import dataclasses
import random

from sim_policies import ScheduledPolicy

from thrifty.api import gpupool
from thrifty.sim import scenario
from thrifty.sim.engine import EventKind
from thrifty.sim.fleet import Fleet, NodeAutoscaler, ReplicaState, Router
from thrifty.sim.profiles import LLAMA_8B_1xH100, LLAMA_70B_4xH100
from thrifty.sim.runner import SimulationConfig, simulate
from thrifty.sim.traces import Request, Trace


def _steady_trace(rate: float, seconds: float, prompt: int = 1000, output: int = 100) -> Trace:
    count = int(rate * seconds)
    requests = tuple(Request(i / rate, prompt, output) for i in range(count))
    return Trace("steady", requests, seconds, "test traffic")


def test_a_new_replica_serves_only_after_its_cold_start() -> None:
    fleet = Fleet(LLAMA_8B_1xH100, cold_start_seconds=60.0, pool_gpus=None, initial_replicas=1)
    fleet.scale_to(2, now=0.0)
    assert fleet.count(ReplicaState.STARTING) == 1 and fleet.gpus_held == 2
    fleet.advance(59.0)
    assert fleet.count(ReplicaState.READY) == 1
    for i in range(4):
        fleet.route(i, Request(59.0, 100, 10), 59.0)
    assert [len(e.engines()) for e in [fleet]] == [1]
    fleet.advance(60.0)
    assert fleet.count(ReplicaState.READY) == 2
    assert fleet.oldest_starting_seconds(60.0) == 0.0


def test_requests_wait_at_the_router_until_a_replica_is_ready() -> None:
    fleet = Fleet(LLAMA_8B_1xH100, cold_start_seconds=30.0, pool_gpus=None, initial_replicas=0)
    fleet.scale_to(1, now=0.0)
    fleet.route(0, Request(1.0, 100, 10), 1.0)
    assert len(fleet.router_queue) == 1
    fleet.advance(30.0)
    assert not fleet.router_queue
    events = fleet.advance(40.0)
    first = next(e for e in events if e.kind is EventKind.FIRST_TOKEN)
    assert first.time >= 30.0


def test_draining_finishes_in_flight_work_and_holds_gpus_until_then() -> None:
    fleet = Fleet(LLAMA_8B_1xH100, cold_start_seconds=60.0, pool_gpus=None, initial_replicas=2)
    for i in range(21):
        fleet.route(i, Request(0.0, 2000, 400), 0.0)
    busy = sorted(fleet.replicas, key=lambda r: r.engine.num_requests if r.engine else 0)
    fleet.scale_to(1, now=0.0)
    draining = [r for r in fleet.replicas if r.state is ReplicaState.DRAINING]
    assert len(draining) == 1 and draining[0] is busy[0]  # the least loaded goes
    assert fleet.gpus_held == 2
    fleet.route(99, Request(0.0, 100, 10), 0.0)  # new work avoids the draining replica
    assert draining[0].engine is not None and draining[0].engine.num_requests == 10
    finished = [e for e in fleet.advance(600.0) if e.kind is EventKind.FINISHED]
    assert len(finished) == 22
    assert fleet.gpus_held == 1 and fleet.count(ReplicaState.DRAINING) == 0


def _routed(router: Router, replicas: int, requests: int, seed: int = 0) -> list[int]:
    """Requests each replica holds after the first took 50 and ``requests`` more were routed."""
    fleet = Fleet(LLAMA_8B_1xH100, 60.0, None, initial_replicas=replicas, router=router, seed=seed)
    first = fleet.replicas[0].engine
    assert first is not None
    for i in range(50):
        first.submit(f"x{i}", 2000, 400, 0.0)
    for i in range(requests):
        fleet.route(i, Request(0.0, 100, 10), 0.0)
    return [r.engine.num_requests if r.engine else 0 for r in fleet.replicas]


def test_least_loaded_and_power_of_two_routers_avoid_a_busy_replica() -> None:
    assert _routed(Router.LEAST_LOADED, 3, 30) == [50, 15, 15]
    assert _routed(Router.POWER_OF_TWO, 3, 30)[0] == 50


def test_round_robin_and_random_routers_are_blind_to_load() -> None:
    assert _routed(Router.ROUND_ROBIN, 3, 30) == [60, 10, 10]
    spread = _routed(Router.RANDOM, 3, 300)
    assert spread[0] > 50 and sum(spread) == 350
    assert all(60 <= held <= 140 for held in [spread[0] - 50, *spread[1:]]), spread
    assert _routed(Router.RANDOM, 3, 300, seed=1) != spread  # seeded, and by the seed only
    assert _routed(Router.RANDOM, 3, 300) == spread


def test_a_load_blind_router_queues_more_than_a_least_loaded_one() -> None:
    # Poisson arrivals near two replicas' capacity: drawn at random, as a plain Service's
    # iptables rules do, one replica gets a run of long prompts while the other has room.
    rng = random.Random(3)
    requests, now = [], 0.0
    while now < 600.0:
        now += rng.expovariate(13.0)
        requests.append(Request(now, rng.choice((500, 2000, 6000)), 150))
    trace = Trace("poisson", tuple(requests), 600.0, "test traffic")
    ms = scenario.model_service(LLAMA_8B_1xH100, min_replicas=2, max_replicas=2)
    p99 = {}
    for router in (Router.LEAST_LOADED, Router.RANDOM):
        config = SimulationConfig(
            LLAMA_8B_1xH100, ms, initial_replicas=2, tail_seconds=120.0, router=router
        )
        p99[router] = simulate(trace, ScheduledPolicy([(0.0, 2)]), config).ttft_p99_seconds
    assert p99[Router.RANDOM] > 1.2 * p99[Router.LEAST_LOADED], p99


def test_replicas_beyond_free_gpus_stay_pending() -> None:
    fleet = Fleet(LLAMA_70B_4xH100, cold_start_seconds=60.0, pool_gpus=8, initial_replicas=1)
    fleet.scale_to(4, now=0.0)
    assert fleet.count(ReplicaState.STARTING) == 1
    assert fleet.count(ReplicaState.PENDING) == 2
    assert fleet.gpus_held == 8 and fleet.free_gpus == 0
    fleet.scale_to(2, now=10.0)  # pending ones go first
    assert fleet.count(ReplicaState.PENDING) == 0 and fleet.count(ReplicaState.STARTING) == 1


def test_pending_replica_starts_when_a_drained_one_frees_gpus() -> None:
    fleet = Fleet(LLAMA_8B_1xH100, cold_start_seconds=10.0, pool_gpus=2, initial_replicas=2)
    for i in range(4):
        fleet.route(i, Request(0.0, 1000, 200), 0.0)
    fleet.scale_to(1, now=0.0)  # one replica drains, still holding its GPU
    fleet.scale_to(2, now=0.0)
    assert fleet.count(ReplicaState.PENDING) == 1 and fleet.free_gpus == 0
    fleet.advance(1.0)
    assert fleet.count(ReplicaState.PENDING) == 1
    fleet.advance(60.0)  # the drain is over: the pending replica got the GPU
    assert fleet.count(ReplicaState.DRAINING) == 0 and fleet.count(ReplicaState.PENDING) == 0
    assert fleet.count(ReplicaState.STARTING) + fleet.count(ReplicaState.READY) == 2


def test_simulation_respects_cold_start_and_capacity_end_to_end() -> None:
    trace = _steady_trace(rate=15.0, seconds=400.0)
    policy = ScheduledPolicy([(0.0, 1), (30.0, 6)])
    config = SimulationConfig(
        profile=LLAMA_8B_1xH100,
        model_service=scenario.model_service(
            LLAMA_8B_1xH100, min_replicas=1, max_replicas=10, queue_target_per_replica=4
        ),
        cold_start_seconds=90.0,
        pool_gpus=4,
        tail_seconds=60.0,
    )
    result = simulate(trace, policy, config)
    by_time = {round(p.time): p for p in result.series}
    assert by_time[105].ready == 1 and by_time[105].starting == 3 and by_time[105].pending == 2
    assert by_time[135].ready == 4 and by_time[135].pending == 2
    assert result.max_replicas == 6
    assert result.served == len(trace.requests)
    # 1 GPU for 30 s, then 4 GPUs until the end of the trace.
    assert abs(result.gpu_hours - (30 + 4 * 370) / 3600) < 0.01


def test_an_autoscaled_pool_launches_a_node_and_a_replica_starts_once_it_is_ready() -> None:
    nodes = NodeAutoscaler(gpus_per_node=8, max_nodes=2, start_seconds=100.0)
    fleet = Fleet(LLAMA_70B_4xH100, 60.0, pool_gpus=None, initial_replicas=0, nodes=nodes)
    assert fleet.node_ready_at == [] and fleet.free_gpus == 0
    fleet.scale_to(3, now=0.0)  # 4 GPUs each: two per node, so two nodes
    assert fleet.count(ReplicaState.PENDING) == 3 and fleet.node_ready_at == [100.0, 100.0]
    assert fleet.next_ready_time() == 100.0
    fleet.advance(100.0)
    assert fleet.count(ReplicaState.STARTING) == 3 and fleet.ready_nodes(100.0) == 2
    assert fleet.next_ready_time() == 160.0  # node start, then the replica's own cold start
    fleet.advance(160.0)
    assert fleet.count(ReplicaState.READY) == 3
    fleet.scale_to(2, now=200.0)  # one replica drains; two still need one node
    for _ in range(3):
        fleet.advance(260.0)
    assert fleet.count(ReplicaState.READY) == 2 and fleet.node_ready_at == [100.0]
    fleet.scale_to(9, now=300.0)
    assert len(fleet.node_ready_at) == 2, "never more than maxNodes"


def test_simulate_counts_the_node_start_of_an_autoscaled_pool_in_the_cold_start() -> None:
    trace = _steady_trace(rate=2.0, seconds=900)
    base = SimulationConfig(
        profile=LLAMA_8B_1xH100,
        model_service=scenario.model_service(LLAMA_8B_1xH100, min_replicas=1, max_replicas=1),
        cold_start_seconds=60.0,
        initial_replicas=0,
    )
    pool = gpupool.GPUPool.model_validate(
        {
            "spec": {
                **scenario.gpu_pool(2.5, None).spec.to_kube(),
                "provisioning": {"mode": "Autoscaled", "maxNodes": 1, "nodeStartSeconds": 240},
            }
        }
    )
    policy = ScheduledPolicy([(0.0, 1)])
    standing = simulate(trace, policy, base)
    autoscaled = simulate(trace, policy, dataclasses.replace(base, pool=pool))
    first_ready = [
        next(p.time for p in run.series if p.ready >= 1) for run in (standing, autoscaled)
    ]
    assert first_ready[1] - first_ready[0] >= 240 - 15  # the node's start, to a decision tick
    assert autoscaled.slo_attainment < standing.slo_attainment
