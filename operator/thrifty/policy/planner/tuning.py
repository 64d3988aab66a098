"""The planner's settings: each a property of vLLM serving or of the measurements, not of a trace.

docs/policy.md lists them with what each does. A ModelService can set any of them through
`spec.scaling.policy.parameters` (camelCase), but none is the latency/cost trade-off: that is the
latency target and its percentile.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tuning:
    settle_seconds: float = 120.0
    """After the ready count changes, a 1-minute rate mixes old and new replicas: per-replica
    figures are learned again only after this long."""
    learn_time_constant_seconds: float = 120.0
    """How fast learned capacity and base latency follow new samples (EWMA time constant)."""
    level_time_constant_seconds: float = 60.0
    """Demand level smoothing; Prometheus' rate window already averages over a minute."""
    feedback_time_constant_seconds: float = 600.0
    """Slowest correction of the headroom (at least 4 cold starts): slower than the fleet can
    react, so the feedback never chases its own scale-ups."""
    headroom_min: float = -0.5
    """Half the percentile's z: the feedback found the percentile kept with less. Never none:
    attainment measured over quiet minutes says little about the next burst."""
    headroom_max: float = 1.0
    """Twice the percentile's z: beyond it, missed first tokens are not the bursts' doing."""
    utilisation_without_target: float = 0.85
    """Planned utilisation while the latency model knows no base TTFT, when there is no target,
    or when prefill alone misses it (no replica count would meet it)."""
    max_utilisation: float = 0.95
    """Never planned above: a replica at its ceiling queues at the first burst."""
    min_utilisation: float = 0.5
    """Never planned below while prefill alone nearly misses the target: at half load the model's
    queue term is one scale, and the demand planned already carries the bursts' headroom, so each
    replica more buys less than a scale of latency there while the fleet's mean load falls out of
    the range the scale is read in (`estimate.MODEL_LOADS`)."""
    ttft_window_seconds: float = 120.0
    """The window of the TTFT histogram query: a queue's waits stay in it this long."""
    min_ttft_samples: float = 20.0
    """First tokens in the TTFT window below which its percentile is noise, not a measurement."""
    backlog_drain_ttft_multiple: float = 30.0
    """A backlog is to be cleared within this many TTFT targets, and within one cold start."""
    min_drain_seconds: float = 10.0
    scale_down_margin: float = 0.1
    """Fewer replicas only if they stay this far under the planning ceiling: hysteresis, so a
    demand at the threshold between two counts does not flip between them."""
    scale_down_step_fraction: float = 0.25
    """At most this share of the replicas (and at least one) is removed per step."""
    scale_down_step_seconds: float = 60.0
    """Time between two scale-down steps once the scale-down delay has passed."""
    batch_limit_requests_per_replica: float = 256.0
    """vLLM's ``--max-num-seqs`` when the spec does not give it: the smallest common default."""
    full_kv_cache: float = 0.9
    """KV-cache usage at which vLLM starts holding requests back (its default
    ``--gpu-memory-utilization`` leaves about this much of the cache usable in practice)."""
    scale_down_load_fraction: float = 0.75
    """The share of a replica's batch limits the fleet is kept under: a scale-down leaves each
    remaining replica at most this share of its running-batch limit and of a full KV cache,
    with the requests running now, and a fleet sized on the limit the running batch's slowdown
    gives (`plan`) plans its demand at this share of it."""

    def batch_limit(self, max_num_seqs: int | None) -> float:
        """Running requests one replica can batch: the engine's setting, else the default."""
        if max_num_seqs is not None and max_num_seqs > 0:
            return float(max_num_seqs)
        return self.batch_limit_requests_per_replica

    def feedback_seconds(self, cold_start_seconds: float) -> float:
        return max(self.feedback_time_constant_seconds, 4.0 * cold_start_seconds)
