"""What the latency model needs, learned online from windowed signals, never from one gauge sample.

The model of a replica (see `plan`): it serves at most ``capacity`` tokens/s, and its time to first
token at the target percentile is ``base + scale * u / (1 - u)`` at utilisation ``u``: prefill
alone at no load, plus a queue that grows without bound as the replica nears its capacity.

- ``capacity`` is what a saturated replica serves: learned only while the queue persists over the
  whole rate window (one per replica on average) or the running batches are full, and with
  batches at least half the fullest seen at saturation (a backlog left on the replicas a fleet
  grew from is no limit of the rest); below that, what a replica served is only a lower bound,
  taken at once.
- ``base`` is the prefill time at the target percentile (vLLM's prefill-time histogram, which
  leaves the queue out); without that histogram, the measured TTFT percentile with the load's
  share removed, ``ttft * (1 - utilisation)``, learned while the utilisation is known and not
  near saturation. A base read before the capacity was known is read again once it is.
- ``scale`` is what the measured percentile adds to the base per unit of ``u / (1 - u)``,
  learned between 0.3 and 0.9 of a known capacity.
- ``batch_capacity`` is where the running batch's slowdown with load says a replica saturates
  (`batching`): a line through (served, tokens/s per running sequence) samples short of
  saturation, so it is known before the limit is reached, when the load has varied enough.
- ``headroom`` is the feedback: a bounded integral of log(measured / target), so an engine slower
  or faster than the model still ends at the target.

Everything learned belongs to one replica shape (GPU type, GPUs per replica, engine arguments) and
starts again when it changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from thrifty.policy import types
from thrifty.policy.planner import batching, buckets
from thrifty.policy.planner.state import MAX_HISTORY, Source, State
from thrifty.policy.planner.tuning import Tuning

MAX_TOKENS_PER_REQUEST = 1_000_000.0
"""No context is longer: a larger ratio of token and request rates is a rate-window artefact."""


@dataclass(frozen=True)
class Reading:
    """This tick's measurements, derived once from the signals."""

    served: float
    """Prompt + generated tokens/s over the rate window."""
    waiting: float
    """Requests waiting, averaged over the rate window when the source gives the average: what
    saturation is judged on, since one scrape of the gauge shows a scheduler step."""
    waiting_now: float
    """Requests waiting at the newest scrape: the backlog to clear."""
    queued: bool
    """The queue is material: the wait it adds at the target percentile (from Little's law's
    mean wait and an exponential tail) takes the latency budget left after prefill, or requests
    wait with none finishing. A few requests a step's token budget holds back are not a queue."""
    ttft: float | None
    """Measured TTFT at the target percentile; None with too few first tokens in its window.
    Interpolated evenly inside its bucket, as Prometheus does: the percentile the queue scale is
    learned from and a late fleet is judged on (a wide bucket reads it late, not early)."""
    within_target: float | None
    """Share of the window's first tokens within the target (the SLO attainment as measured),
    inside its bucket along the queue and prefill times' finer histograms (`buckets`)."""
    first_tokens_per_second: float = 0.0
    """First tokens per second over the TTFT window (0 without the histogram)."""


def read(
    signals: types.Signals, spec: types.PolicySpec, state: State, tuning: Tuning, ready: int = 1
) -> Reading:
    waiting = signals.requests_waiting
    if signals.requests_waiting_mean is not None:
        waiting = signals.requests_waiting_mean
    ttft, within = _ttft(signals, spec, tuning)
    served = signals.prompt_tokens_per_second + signals.generation_tokens_per_second
    return Reading(
        served=served,
        waiting=waiting,
        waiting_now=signals.requests_waiting,
        queued=_material(
            waiting,
            signals.requests_per_second,
            ttft,
            _measured(signals.queue_time_buckets, spec, tuning),
            spec,
            state,
            ready,
        ),
        ttft=ttft,
        within_target=within,
        first_tokens_per_second=_first_token_rate(signals, tuning),
    )


STEP_HELD_PER_REPLICA = 4.0
"""How many requests one vLLM step can hold back for its token budget with spare capacity: a
few long prompts. A gauge averaging under this per replica must be corroborated: by the waits
vLLM measured (its queue-time histogram), else by TTFT."""


def _measured(histogram: buckets.Buckets, spec: types.PolicySpec, tuning: Tuning) -> float | None:
    """A histogram of vLLM's finished requests (the queue time, the prefill time) at the target
    percentile; None with too few finished requests in its window (or none queried)."""
    if not histogram or histogram[-1][1] < tuning.min_ttft_samples:
        return None
    return buckets.quantile(histogram, spec.ttft_target_quantile)


def _material(
    waiting: float,
    requests_per_second: float,
    ttft: float | None,
    measured: float | None,
    spec: types.PolicySpec,
    state: State,
    ready: int,
) -> bool:
    if waiting <= 0.0:
        return False
    if requests_per_second <= 0.0:
        return True
    target = spec.ttft_target_seconds
    if target is None:
        return waiting >= 1.0 and waiting / requests_per_second >= 1.0
    # Queue waits have roughly an exponential tail: its q-quantile is -ln(1 - q) times the
    # mean wait (Little's law: mean queue / request rate). The queue is material once that
    # alone would take the slack prefill leaves, and, while it is no more than steps hold back,
    # the measured percentile shows it has used half of it: a gauge that counts what no first
    # token waited for is not a queue.
    base = state.base_ttft or 0.0
    # Where prefill alone nearly misses the target, a wait as long as half the prefill counts.
    budget = max(target - base, base / 2.0, 0.1 * target)
    tail = -math.log(1.0 - min(spec.ttft_target_quantile, 0.999))
    few = waiting < STEP_HELD_PER_REPLICA * max(ready, 1)
    if few and measured is not None:
        # No more than steps hold back, and vLLM measured the waits: no need to infer them
        # from a gauge that counts each step's held-back prompts. A queue of many is judged on
        # the gauge (its requests have not finished, so the histogram does not show them yet).
        return measured >= budget
    felt = ttft is None or ttft >= base + budget / 2.0 or not few
    return felt and tail * waiting / requests_per_second >= budget


def _first_token_rate(signals: types.Signals, tuning: Tuning) -> float:
    if not signals.ttft_buckets:
        return signals.requests_per_second
    return signals.ttft_buckets[-1][1] / tuning.ttft_window_seconds


def _ttft(
    signals: types.Signals, spec: types.PolicySpec, tuning: Tuning
) -> tuple[float | None, float | None]:
    histogram = signals.ttft_buckets
    if not histogram:
        # A source without the histogram gives its p95 only: usable for a p95 target alone.
        usable = math.isclose(spec.ttft_target_quantile, 0.95)
        return (signals.ttft_p95_seconds if usable else None), None
    if histogram[-1][1] < tuning.min_ttft_samples:
        return None, None
    measured = buckets.quantile(histogram, spec.ttft_target_quantile)
    target = spec.ttft_target_seconds
    if target is None:
        return measured, None
    shape = buckets.composed(
        signals.queue_time_buckets, signals.prefill_time_buckets, tuning.min_ttft_samples
    )
    return measured, buckets.share_within(histogram, target, shape)


def learn(
    state: State,
    observation: types.Observation,
    signals: types.Signals,
    reading: Reading,
    tuning: Tuning,
) -> State:
    """The state with this tick's measurements folded in."""
    spec = observation.spec
    now = observation.now_seconds
    if state.shape and state.shape != spec.replica_shape:
        state = State()
    ready = observation.replicas.ready
    ready_since, grew_at, fell_at = state.ready_since, state.grew_at, state.fell_at
    if state.ready != ready or ready_since is None or ready_since > now:
        ready_since = now
    if ready > state.ready >= 0:
        grew_at = now
    if 0 <= ready < state.ready:
        fell_at = now
    elapsed = _elapsed(state, now, tuning)
    state = replace(
        state,
        shape=spec.replica_shape,
        ready=ready,
        ready_since=ready_since,
        grew_at=grew_at,
        fell_at=fell_at,
        queue_growth=queue_growth(state, now, reading.waiting),
        waiting=reading.waiting,
        last_seen=now,
        tokens_per_request=_tokens_per_request(state, signals, reading, elapsed, tuning),
    )
    if state.capacity is None and spec.capacity_tokens_per_second_per_replica:
        state = replace(
            state,
            capacity=spec.capacity_tokens_per_second_per_replica,
            capacity_source=Source.PRIOR,
        )
    if reading.queued or saturated(observation, signals, reading, tuning):
        # The requests a queue held get their first tokens after it drains: the TTFT window
        # carries their waits for a window after the last tick whose average shows the queue,
        # not after the last one at the limit.
        state = replace(state, saturated_at=now)
    if reading.served <= 0.0 or observation.replicas.ready <= 0:
        return state
    per_replica = reading.served / observation.replicas.serving
    if not settled(state, now, tuning):
        return _bound_while_settling(state, per_replica, now, tuning)
    state = _batch_limit(state, observation, signals, reading, per_replica, tuning)
    state = _capacity(state, observation, signals, reading, per_replica, elapsed, tuning)
    if state.saturated_at is not None and now - state.saturated_at < tuning.ttft_window_seconds:
        # Beyond the model's range: a saturated queue grows with time, not load, and its waits
        # stay in the TTFT window for as long as the window.
        return state
    target = observation.spec.ttft_target_seconds
    prefill = _measured(signals.prefill_time_buckets, observation.spec, tuning)
    state = _base_ttft(state, reading, per_replica, elapsed, tuning, target, prefill)
    return _queue_scale(state, reading, per_replica, elapsed, tuning)


def _bound_while_settling(state: State, per_replica: float, now: float, tuning: Tuning) -> State:
    """A rate over a window in which the ready count only rose divides what fewer replicas
    served by more of them: it understates each one's share, so it still bounds the capacity
    from below. Only a fall within the window (more served than the rest did) spoils it.

    A prior under it is refuted as the settled rates refute one (`_capacity`): raised to what
    was served, still no measurement of the limit. A prior half the truth otherwise stood
    until the first saturated window, which the fleet it sized never reached."""
    if state.capacity_source == Source.SATURATED:
        return state
    if state.fell_at is not None and now - state.fell_at < tuning.settle_seconds:
        return state
    served = max(state.served_max or 0.0, per_replica)
    if state.capacity is not None and per_replica <= state.capacity:
        return replace(state, served_max=served)
    source = state.capacity_source or Source.LOWER_BOUND
    return replace(state, capacity=per_replica, capacity_source=source, served_max=served)


def settled(state: State, now: float, tuning: Tuning) -> bool:
    """The ready count has held for the settle time: the rates show what this count serves."""
    since = state.ready_since
    return state.ready > 0 and since is not None and now - since >= tuning.settle_seconds


def queue_growth(state: State, now: float, waiting: float) -> float:
    """Requests/s the queue grew by since the last tick (0 when it did not grow)."""
    if state.waiting is None or state.last_seen is None or now <= state.last_seen:
        return 0.0
    return max(waiting - state.waiting, 0.0) / (now - state.last_seen)


def utilisation(state: State, per_replica: float) -> float | None:
    """How loaded a replica is, when its capacity is known (not merely a lower bound)."""
    if state.capacity is None or state.capacity_source == Source.LOWER_BOUND:
        return None
    return per_replica / state.capacity


def saturated(
    observation: types.Observation, signals: types.Signals, reading: Reading, tuning: Tuning
) -> bool:
    """At the limit: a material queue over the window (`Reading.queued`) or batches full.

    vLLM's waiting gauge is non-zero whenever a step's token budget holds prompts back, spare
    replicas or not; only a queue whose wait eats the latency budget says the fleet is at its
    limit, and only while it is still there at the window's end: a backlog drained within the
    window leaves an average that says queue and a throughput that ran short of the limit for
    the rest of it. Late first tokens alone do not: long prompts make them at any load."""
    ready = max(observation.replicas.ready, 1)
    batch = tuning.batch_limit(observation.spec.max_num_seqs_per_replica)
    queued = reading.queued and reading.waiting_now > 0.0
    return queued or signals.requests_running >= 0.9 * batch * ready


def feedback(
    state: State, observation: types.Observation, reading: Reading, tuning: Tuning
) -> State:
    """The headroom moved by how far the measured attainment is from the declared percentile.

    A bounded integral of ``(q - attained) / (1 - q)`` (log(measured / target) when the source
    has no histogram), so the long-run share of first tokens within the target settles at the
    percentile whatever the model's error. A miss counts whenever replicas could fix it and none
    is on its way (not while prefill alone misses the target, or at the maximum); meeting the
    target counts only while the fleet is as planned (ready = desired, settled), or the
    scale-ups a miss ordered would be integrated away as over-provisioning before they serve.

    That gating counts every window kept and only the first of a run of late ones, so on its own
    it can trade headroom away while the promise is broken. Below the percentile's own z it goes
    only while the share of first tokens late over the feedback's horizon, counted ungated, is
    within the percentile's allowance.
    """
    spec = observation.spec
    target = spec.ttft_target_seconds
    if target is None or reading.ttft is None or state.last_seen is None:
        return state
    if state.capacity_source not in (Source.SATURATED, Source.PRIOR):
        return state  # nothing is planned by the model yet, so there is nothing to correct
    elapsed = max(observation.now_seconds - state.last_seen, 0.0)
    horizon = tuning.feedback_seconds(spec.cold_start_seconds)
    rate = _ewma(state.first_token_rate, reading.first_tokens_per_second, elapsed, horizon)
    late = state.late_token_rate
    if reading.within_target is not None:
        # Like every average here it starts from its first sample, which then weighs as a whole
        # horizon: a service whose first measured window missed keeps the z until a horizon or
        # more of windows in time outweigh it. Started at the allowance instead (no evidence
        # either way), fewer runs kept their target (docs/policy.md, "The feedback").
        missed = reading.first_tokens_per_second * (1.0 - reading.within_target)
        late = _ewma(late, missed, elapsed, horizon)
    state = replace(state, first_token_rate=rate, late_token_rate=late)
    headroom = _integrated(state, observation, reading, tuning, elapsed / horizon)
    if late is not None and rate > 0.0 and late / rate > 1.0 - spec.ttft_target_quantile:
        headroom = max(headroom, 0.0)
    return replace(state, headroom=headroom)


def _integrated(
    state: State,
    observation: types.Observation,
    reading: Reading,
    tuning: Tuning,
    fraction: float,
) -> float:
    """The headroom after this tick's error, ``fraction`` of the feedback's horizon long."""
    spec = observation.spec
    target = spec.ttft_target_seconds or 0.0
    replicas = observation.replicas
    error = _error(spec, reading)
    if error > 0.0 and (
        replicas.desired >= spec.max_replicas
        or (state.base_ttft is not None and state.base_ttft >= target)
    ):
        return state.headroom
    as_planned = (
        replicas.ready == replicas.desired
        and not replicas.starting
        and state.ready_since is not None
        and observation.now_seconds - state.ready_since >= tuning.settle_seconds
    )
    if error < 0.0 and not as_planned:
        return state.headroom  # under target while the fleet changes says nothing of the plan
    if error > 0.0 and replicas.starting:
        return state.headroom  # the fix is on its way: counting the miss again would wind up
    # The promise counts requests, not ticks: a busy window weighs as many quiet ones.
    rate = state.first_token_rate or 0.0
    weight = min(reading.first_tokens_per_second / rate, 10.0) if rate > 0.0 else 1.0
    step = error * weight * fraction
    return min(max(state.headroom + step, tuning.headroom_min), tuning.headroom_max)


def remember_miss(
    state: State, observation: types.Observation, reading: Reading, level: float, tuning: Tuning
) -> State:
    """Remembers the count at which the fleet, as planned, missed the target, and at what
    demand: no scale-down returns to it while demand is as high; forgotten once it is clearly
    lower (or the replica shape changes)."""
    spec = observation.spec
    replicas = observation.replicas
    now = observation.now_seconds
    if state.missed_demand is not None and level < state.missed_demand * (
        1.0 - tuning.scale_down_margin
    ):
        state = replace(state, missed_replicas=None, missed_demand=None, missed_at=None)
    target = spec.ttft_target_seconds
    if target is None or reading.ttft is None or reading.ttft <= target:
        return state
    if replicas.starting or replicas.ready != replicas.desired or replicas.ready < 1:
        return state
    if grown_since(state, now, reading.ttft, tuning):
        return state
    if state.base_ttft is not None and state.base_ttft >= target:
        return state  # prefill alone misses: no count would have met it
    load = max(level, reading.served) / replicas.serving
    believed = utilisation(state, load)
    # A bound is a throughput replicas served: a miss cannot put the capacity under it, and
    # above it the bound allows any capacity already.
    on_bound = state.capacity_source == Source.LOWER_BOUND
    # A capacity measured at saturation is the limit itself; a miss short of it is a burst, or
    # a router that queued it on fewer replicas than the sums say, and the headroom answers it.
    measured = state.capacity_source == Source.SATURATED
    if not (on_bound or measured) and (believed is None or believed >= MODEL_LOADS[0]):
        # Far below the loads the queue term is learned at, a miss is prefill or a burst the
        # queue scale carries, not a capacity lower than the one that served (a slow L4 on
        # azure-code: 5,854 -> 1,019 tok/s and 2.2x the replicas that meet the SLO).
        state = _capacity_from_miss(state, reading.ttft, load)
    if state.missed_replicas is not None and state.missed_replicas > replicas.ready:
        return replace(state, missed_at=now)
    return replace(state, missed_replicas=replicas.ready, missed_demand=level, missed_at=now)


def grown_since(state: State, now: float, ttft: float, tuning: Tuning) -> bool:
    """The fleet grew within the TTFT window plus ``ttft``: the window's late first tokens came
    to requests that arrived up to their TTFT before it, some of them queued for the smaller
    fleet. (A count that shrank owns its misses: the larger fleet before it was less loaded.)"""
    return state.grew_at is not None and now - state.grew_at < tuning.ttft_window_seconds + ttft


def _capacity_from_miss(state: State, ttft: float, per_replica: float) -> State:
    """A miss at a load the model thought safe: the capacity that explains it.

    With the base and the queue scale learned at lower loads, the measured percentile says how
    loaded the replica was, ``x / (1 + x)`` with ``x = (ttft - base) / scale``; what it served
    divided by that is its capacity. Lowered at once (never raised here), so the model does not
    plan on the count that missed again; later samples refine it as usual."""
    base = state.base_ttft
    if base is None or ttft <= base or per_replica <= 0.0:
        return state
    scale = state.queue_scale if state.queue_scale else base
    excess = (ttft - base) / scale
    # Never below what a replica was seen to serve: a burst's miss is the burst's, not the
    # level's, and a capacity under a measured throughput would be no capacity.
    implied = max(per_replica * (1.0 + excess) / excess, state.served_max or 0.0)
    if state.capacity is not None and state.capacity <= implied:
        return state
    return replace(state, capacity=implied, capacity_source=Source.SATURATED)


def _error(spec: types.PolicySpec, reading: Reading) -> float:
    """How far the promise is missed (> 0) or over-kept (< 0), in units of the allowed misses."""
    quantile = spec.ttft_target_quantile
    if reading.within_target is not None and quantile < 1.0:
        return max((quantile - reading.within_target) / (1.0 - quantile), -1.0)
    target = spec.ttft_target_seconds or 1.0
    return max(min(math.log(max(reading.ttft or 0.0, 1e-6) / target), 1.0), -1.0)


SPREAD_BATCH_SHARE = 0.5
"""A queue says every replica is at its limit only with batches at least this share of the
fullest a saturated window showed, and a throughput at least this share of the most a replica
served lately (`State.served_max`). vLLM queues inside each engine, so a backlog taken before the
fleet grew stays on the replicas that took it while the router sends new requests to the ones
that joined: their light batches and the backlog's full ones average far below a full batch, and
the fleet's throughput per replica is what the spare ones serve, not a limit. And a few requests
arriving together at a light load wait behind one another's prefill, a queue by Little's law at
a low request rate, while the replica serves a fraction of what it did: read as the limit, 343
tok/s on a 70B replica that had lately served 1,120 ordered four more of 4 GPUs
(bench/stress.md, random case 16)."""


def _capacity(
    state: State,
    observation: types.Observation,
    signals: types.Signals,
    reading: Reading,
    per_replica: float,
    elapsed: float,
    tuning: Tuning,
) -> State:
    """At saturation the throughput is the capacity; short of it, only a lower bound."""
    capacity, source = state.capacity, state.capacity_source
    fullest = state.saturated_batch
    slow = 5.0 * tuning.learn_time_constant_seconds
    if saturated(observation, signals, reading, tuning):
        batch = _running(signals) / observation.replicas.serving
        spread = fullest is not None and batch < SPREAD_BATCH_SHARE * fullest
        # `served_max` decays towards what is served, so a mix that truly got heavier is
        # measured a few minutes later.
        idle = per_replica < SPREAD_BATCH_SHARE * (state.served_max or 0.0)
        if not (spread or idle):
            # A replica serves at most its capacity, and a window only partly saturated shows
            # less: a higher sample is taken at once, a lower one only slowly (the mix may
            # have grown). A prior or a lower bound is no measurement of the limit: the first
            # one replaces it.
            if capacity is None or source != Source.SATURATED or per_replica > capacity:
                capacity = per_replica
            else:
                capacity = _ewma(capacity, per_replica, elapsed, slow)
            source = Source.SATURATED
        fullest = (
            batch if fullest is None or batch > fullest else _ewma(fullest, batch, elapsed, slow)
        )
    if capacity is None or per_replica > capacity:
        capacity, source = per_replica, source or Source.LOWER_BOUND
    if state.capacity_source == Source.LOWER_BOUND and source == Source.SATURATED:
        # Every base so far was read at an unknown load, maybe at the limit, where a prompt
        # queues or shares its prefill steps the most: read again now that the load is known.
        # Too high, it leaves a target little slack and buys replicas for a queue.
        state = replace(state, base_ttft=None)
    served = state.served_max
    if served is None or per_replica > served:
        served = per_replica
    else:
        served = _ewma(served, per_replica, elapsed, slow)
    return replace(
        state,
        capacity=capacity,
        capacity_source=source,
        served_max=served,
        saturated_batch=fullest,
    )


def _running(signals: types.Signals) -> float:
    if signals.requests_running_mean is not None:
        return signals.requests_running_mean
    return signals.requests_running


def _batch_limit(
    state: State,
    observation: types.Observation,
    signals: types.Signals,
    reading: Reading,
    per_replica: float,
    tuning: Tuning,
) -> State:
    """Adds this tick's (served per replica, tokens/s per running sequence) to the samples and
    reads the limit they give (`batching`). Only short of saturation: a full batch or a queue is
    beyond the line's range."""
    running = signals.requests_running_mean
    generated = signals.generation_tokens_per_second
    if running is None or running <= 0.0 or generated <= 0.0:
        return replace(state, batch_capacity=None, batch_error=None)
    speed = generated / running
    if not reading.queued and not saturated(observation, signals, reading, tuning):
        state = replace(state, speed=(*state.speed, (per_replica, speed))[-MAX_HISTORY:])
    line = batching.fit(state.speed)
    now = batching.Batch(
        per_replica, running / observation.replicas.serving, speed, signals.kv_cache_usage
    )
    limit = tuning.batch_limit(observation.spec.max_num_seqs_per_replica)
    estimate = batching.capacity(line, now, limit, tuning.full_kv_cache) if line else None
    return replace(
        state,
        batch_capacity=estimate.tokens_per_second if estimate else None,
        batch_error=estimate.relative_error if estimate else None,
    )


BOOTSTRAP_LOAD = 0.9
"""The highest utilisation a first base is read at (the queue scale's range ends there too)."""

MODEL_LOADS = (0.3, BOOTSTRAP_LOAD)
"""The utilisations at which the measured percentile shows the model's queue term: the queue
scale is learned there (below them only lowered, `_queue_scale`), and only a miss there says the
capacity is lower than believed."""


def _base_ttft(
    state: State,
    reading: Reading,
    per_replica: float,
    elapsed: float,
    tuning: Tuning,
    target: float | None = None,
    prefill: float | None = None,
) -> State:
    """Read from vLLM's prefill-time histogram where it is scraped: scheduled to first token is
    TTFT without the queue, so it needs no model of the load and holds at any load (a prefill
    that shares its steps with more work takes a little longer). Without it, learned at low
    load, where removing the load's share is a small correction. Load only
    adds to the base, so lower samples are followed fast and higher ones slowly (the prompt mix
    may have grown). A service that has never run at low load starts from its loaded samples
    read with the queue scale equal to the base (M/M/1's ``base / (1 - u)``): without a base
    there is no latency model at all, and a fleet that is always busy would never plan for its
    target. Such a first base is taken only below the target: the load it is read at comes from
    a capacity that may still be a prior, and a base over the target would say that no replica
    count helps, a conclusion that only a low-load sample may draw (one too low only adds
    replicas, whose lower load then corrects it)."""
    if reading.ttft is None:
        return state
    load = utilisation(state, per_replica)
    if prefill is not None:
        sample = min(prefill, reading.ttft)
    elif load is None:
        if reading.queued:
            return state
        sample = reading.ttft  # load unknown: all of it counts as base, which errs high
    elif load <= 0.5:
        sample = reading.ttft * (1.0 - load)
    elif state.base_ttft is None and load <= BOOTSTRAP_LOAD:
        sample = reading.ttft * (1.0 - load)
        if target is None or sample >= target:
            return state
    else:
        return state
    base = state.base_ttft
    rising = base is not None and sample > base
    slow = tuning.learn_time_constant_seconds * (5.0 if rising else 1.0)
    return replace(state, base_ttft=_ewma(base, sample, elapsed, slow))


def _queue_scale(
    state: State, reading: Reading, per_replica: float, elapsed: float, tuning: Tuning
) -> State:
    """Learned under load short of saturation (utilisation 0.3-0.9 of a known capacity): what
    the measured percentile adds to the base, per unit of ``u / (1 - u)``. Bursty traffic
    queues more at the same mean load than steady traffic, and this is where it shows.

    A large scale plans the fleet at the ceiling's floor, and the demand planned there carries
    the bursts' headroom, so the fleet's mean load can stay under 0.3, where it would never be
    read again.
    Down to the load where the model puts its queue term at the base, a sample under it lowers
    it: bursts within the window load a replica more than its mean, so a light load can
    overstate the term, not understate it (azure-code: a 4.4 s scale from one burst held six
    replicas at a fifth of their capacity or less for ten minutes)."""
    load = utilisation(state, per_replica)
    if reading.ttft is None or state.base_ttft is None or load is None:
        return state
    if load > MODEL_LOADS[1]:
        return state
    base, scale = state.base_ttft, state.queue_scale
    sample = max(reading.ttft - base, 0.0) * (1.0 - load) / load
    if load < MODEL_LOADS[0] and (
        scale is None or scale * load / (1.0 - load) < base or sample > scale
    ):
        return state
    scale = _ewma(scale, sample, elapsed, tuning.learn_time_constant_seconds)
    return replace(state, queue_scale=scale)


def _tokens_per_request(
    state: State, signals: types.Signals, reading: Reading, elapsed: float, tuning: Tuning
) -> float | None:
    sample = signals.tokens_per_finished_request
    if sample is None:
        if signals.requests_per_second <= 0.0 or reading.served <= 0.0:
            return state.tokens_per_request
        sample = reading.served / signals.requests_per_second
    sample = min(sample, MAX_TOKENS_PER_REQUEST)
    return _ewma(state.tokens_per_request, sample, elapsed, tuning.learn_time_constant_seconds)


def _elapsed(state: State, now: float, tuning: Tuning) -> float:
    if state.last_seen is None:
        return tuning.learn_time_constant_seconds
    return max(now - state.last_seen, 0.0)


def _ewma(previous: float | None, sample: float, elapsed: float, time_constant: float) -> float:
    if previous is None:
        return sample
    weight = 1.0 - math.exp(-elapsed / time_constant)
    return previous + weight * (sample - previous)
