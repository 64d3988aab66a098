"""vLLM's Prometheus metrics, exactly as real vLLM exposes them, fed by the simulated engine.

The operator's queries and dashboards are written against real vLLM; an engine simulator is only
useful if a query that works on it works on vLLM too. So this module reproduces the names, types,
label names and histogram buckets of a real vLLM 0.32 scrape (checked by
e2e/test_vllm_contract.py against a running vLLM): counters on the wire with `_total` and
`_created`, labels `model_name` and `engine`, `finished_reason` on request_success, the token
histograms' 1-2-5 buckets up to `--max-model-len`.

Histograms are a small collector of our own rather than prometheus_client's `Histogram`: the
simulator learns of a request's hundreds of inter-token gaps at once and must record them in one
call, not one `observe` per token.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Iterable, Sequence

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
)
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from thrifty.sim.engine import FinishedReason, RequestTiming
from thrifty.sim.observe import REQUEST_LATENCY_BUCKETS_SECONDS, TTFT_BUCKETS_SECONDS
from thrifty.sim.profiles import EngineProfile

ITL_BUCKETS_SECONDS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0,
)  # fmt: skip
ITERATION_TOKENS_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
PREEMPTION_BUCKETS = (1, 2, 3, 4, 5, 10, 20)
N_PARAM_BUCKETS = (1, 2, 5, 10, 20)

FINISHED_REASONS = ("stop", "length", "abort", "error", "repetition")
SLEEP_STATES = ("awake", "weights_offloaded", "discard_all")
PROMPT_SOURCES = ("local_compute", "local_cache_hit", "external_kv_transfer")
CACHED_PROMPT_SOURCES = ("device", "host", "p2p", "disk", "external_unspecified")
ADMISSION_REJECTION_REASONS = ("max_num_queued_reqs", "max_num_queued_tokens")
BLOCK_SIZE_TOKENS = 16
"""KV block size reported in cache_config_info (vLLM's default on GPUs)."""
# The label names of vLLM 0.32's cache_config_info (CacheConfig.metrics_info()); values that the
# simulator has no notion of are "None", as vLLM writes unset fields.
CACHE_CONFIG_INFO_LABELS = (
    "_block_size_resolved", "block_size", "cache_dtype", "cache_hit_alignment_tokens",
    "effective_attention_block_size", "enable_mamba_shared_prefix_checkpoint",
    "enable_prefix_caching", "gpu_memory_utilization", "hash_block_size", "is_attention_free",
    "kv_cache_dtype_skip_layers", "kv_cache_layout", "kv_cache_max_concurrency",
    "kv_cache_memory_bytes", "kv_cache_size_tokens", "kv_offloading_backend",
    "kv_offloading_size", "kv_sharing_fast_prefill", "mamba_block_size", "mamba_cache_dtype",
    "mamba_cache_mode", "mamba_page_size_padded", "mamba_ssm_cache_dtype", "num_cpu_blocks",
    "num_gpu_blocks", "num_gpu_blocks_override", "prefix_cache_retention_interval",
    "prefix_caching_hash_algo", "prefix_match_unit", "replayssm_buffer_len",
    "skip_page_size_padded", "sliding_window", "swa_bounded_replay", "use_kda_recoverssm",
    "use_replayssm", "user_specified_block_size",
)  # fmt: skip


def one_two_five_buckets(max_value: int) -> tuple[float, ...]:
    """vLLM's token-count buckets: 1, 2, 5, 10, 20, 50, ... while not above `max_value`."""
    buckets: list[float] = []
    exponent = 0
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * 10**exponent
            if value > max_value:
                return tuple(buckets)
            buckets.append(float(value))
        exponent += 1


class BulkHistogram(Collector):
    """One labelled histogram child that can record `count` equal observations in one call."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labels: dict[str, str],
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labels = labels
        self._upper_bounds = [float(b) for b in buckets]
        self._counts = [0] * (len(self._upper_bounds) + 1)  # the last one is +Inf
        self._sum = 0.0
        self._created = time.time()
        self._lock = threading.Lock()
        registry.register(self)

    def observe(self, value: float, count: int = 1) -> None:
        if count <= 0:
            return
        index = bisect.bisect_left(self._upper_bounds, value)
        with self._lock:
            self._counts[index] += count
            self._sum += value * count

    def collect(self) -> Iterable[Metric]:
        metric = Metric(self._name, self._documentation, "histogram")
        with self._lock:
            counts = list(self._counts)
            total_sum = self._sum
        cumulative = 0
        bounds = [*(_format_bound(b) for b in self._upper_bounds), "+Inf"]
        for bound, count in zip(bounds, counts, strict=True):
            cumulative += count
            metric.add_sample(f"{self._name}_bucket", {**self._labels, "le": bound}, cumulative)
        metric.add_sample(f"{self._name}_count", self._labels, cumulative)
        metric.add_sample(f"{self._name}_sum", self._labels, total_sum)
        metric.add_sample(f"{self._name}_created", self._labels, self._created)
        yield metric


def _format_bound(bound: float) -> str:
    # prometheus_client writes bounds as Python floats ("0.001", "1.0"); so does vLLM.
    return repr(float(bound))


class VllmMetrics:
    """Every `vllm:*` series a real vLLM 0.32 engine exposes, for one engine of one model."""

    def __init__(
        self,
        model_name: str,
        profile: EngineProfile,
        engine_index: int = 0,
        *,
        process_metrics: bool = True,
    ) -> None:
        self.registry = CollectorRegistry()
        if process_metrics:
            for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
                self.registry.register(collector)
        self._labels = {"model_name": model_name, "engine": str(engine_index)}
        self._max_model_len = profile.max_model_len
        r = self.registry
        names = ["model_name", "engine"]
        values = [model_name, str(engine_index)]

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, names, registry=r)

        def gauge(name: str, doc: str, extra: Sequence[str] = ()) -> Gauge:
            return Gauge(name, doc, [*names, *extra], registry=r)

        for name, doc in (
            ("vllm:estimated_flops_per_gpu", "Estimated number of floating point operations per "
             "GPU (for Model Flops Utilization calculations)."),
            ("vllm:estimated_read_bytes_per_gpu", "Estimated number of bytes read from memory per "
             "GPU (for Model Flops Utilization calculations)."),
            ("vllm:estimated_write_bytes_per_gpu", "Estimated number of bytes written to memory "
             "per GPU (for Model Flops Utilization calculations)."),
        ):  # fmt: skip
            counter(name, doc).labels(*values)
        self.running = gauge(
            "vllm:num_requests_running", "Number of requests in model execution batches."
        ).labels(*values)
        self.waiting = gauge(
            "vllm:num_requests_waiting", "Number of requests waiting to be processed."
        ).labels(*values)
        waiting_by_reason = gauge(
            "vllm:num_requests_waiting_by_reason",
            "Number of waiting requests by reason. Reason labels: 'capacity' = waiting for "
            "scheduling capacity; 'deferred' = deferred by transient constraints (LoRA budget, KV "
            "transfer, blocked status). Sum of all reasons equals vllm:num_requests_waiting.",
            ["reason"],
        )
        self.waiting_capacity = waiting_by_reason.labels(*values, "capacity")
        waiting_by_reason.labels(*values, "deferred")
        sleep = gauge(
            "vllm:engine_sleep_state",
            "Engine sleep state; awake = 0 means engine is sleeping; awake = 1 means engine is "
            "awake; weights_offloaded = 1 means sleep level 1; discard_all = 1 means sleep "
            "level 2.",
            ["sleep_state"],
        )
        for state in SLEEP_STATES:
            sleep.labels(*values, state).set(1.0 if state == "awake" else 0.0)
        self.kv_cache_usage = gauge(
            "vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage."
        ).labels(*values)
        self.prefix_cache_queries = counter(
            "vllm:prefix_cache_queries",
            "Prefix cache queries, in terms of number of queried tokens.",
        ).labels(*values)
        for name, doc in (
            ("vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens."),
            ("vllm:external_prefix_cache_queries", "External prefix cache queries from KV "
             "connector cross-instance cache sharing, in terms of number of queried tokens."),
            ("vllm:external_prefix_cache_hits", "External prefix cache hits from KV connector "
             "cross-instance cache sharing, in terms of number of cached tokens."),
            ("vllm:mm_cache_queries", "Multi-modal cache queries, in terms of number of queried "
             "items."),
            ("vllm:mm_cache_hits", "Multi-modal cache hits, in terms of number of cached items."),
            ("vllm:num_preemptions", "Cumulative number of preemption from the engine."),
        ):  # fmt: skip
            counter(name, doc).labels(*values)
        self.prompt_tokens = counter(
            "vllm:prompt_tokens", "Number of prefill tokens processed."
        ).labels(*values)
        by_source = Counter(
            "vllm:prompt_tokens_by_source",
            "Number of prompt tokens by source.",
            [*names, "source"],
            registry=r,
        )
        self.prompt_tokens_computed = by_source.labels(*values, "local_compute")
        for source in PROMPT_SOURCES[1:]:
            by_source.labels(*values, source)
        counter(
            "vllm:prompt_tokens_cached", "Number of cached prompt tokens (local + external)."
        ).labels(*values)
        cached_by_source = Counter(
            "vllm:prompt_tokens_cached_by_source",
            "Prefix-cache hit tokens by the cache tier that supplied them: device (local HBM), "
            "host (offloaded to DRAM), disk, p2p (transferred from another vLLM instance) or "
            "external_unspecified. Counted at admission; sums to vllm:prefix_cache_hits + "
            "vllm:external_prefix_cache_hits.",
            [*names, "source"],
            registry=r,
        )
        for source in CACHED_PROMPT_SOURCES:
            cached_by_source.labels(*values, source)
        self.generation_tokens = counter(
            "vllm:generation_tokens", "Number of generation tokens processed."
        ).labels(*values)
        self.request_success = Counter(
            "vllm:request_success",
            "Count of successfully processed requests.",
            [*names, "finished_reason"],
            registry=r,
        )
        for reason in FINISHED_REASONS:
            self.request_success.labels(*values, reason)
        # vLLM counts admission rejections in the front end, which has no engine index.
        rejections = Counter(
            "vllm:admission_rejections",
            "Number of admission attempts rejected by a queue limit, by reason.",
            ["model_name", "reason"],
            registry=r,
        )
        for reason in ADMISSION_REJECTION_REASONS:
            rejections.labels(model_name, reason)
        self._histograms(profile)
        self._cache_config_info(profile, str(engine_index))

    def _histogram(self, name: str, doc: str, buckets: Sequence[float]) -> BulkHistogram:
        return BulkHistogram(name, doc, self._labels, buckets, self.registry)

    def _histograms(self, profile: EngineProfile) -> None:
        tokens = one_two_five_buckets(profile.max_model_len)
        h = self._histogram
        self.request_prompt_tokens = h(
            "vllm:request_prompt_tokens", "Number of prefill tokens processed.", tokens
        )
        self.request_generation_tokens = h(
            "vllm:request_generation_tokens", "Number of generation tokens processed.", tokens
        )
        self.iteration_tokens = h(
            "vllm:iteration_tokens_total",
            "Histogram of number of tokens per engine_step.",
            ITERATION_TOKENS_BUCKETS,
        )
        self.request_max_num_generation_tokens = h(
            "vllm:request_max_num_generation_tokens",
            "Histogram of maximum number of requested generation tokens.",
            tokens,
        )
        self.request_params_n = h(
            "vllm:request_params_n", "Histogram of the n request parameter.", N_PARAM_BUCKETS
        )
        self.request_params_max_tokens = h(
            "vllm:request_params_max_tokens",
            "Histogram of the max_tokens request parameter.",
            tokens,
        )
        self.ttft = h(
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            TTFT_BUCKETS_SECONDS,
        )
        self.itl = h(
            "vllm:inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds.",
            ITL_BUCKETS_SECONDS,
        )
        self.request_time_per_output_token = h(
            "vllm:request_time_per_output_token_seconds",
            "Histogram of time_per_output_token_seconds per request.",
            ITL_BUCKETS_SECONDS,
        )
        latency = REQUEST_LATENCY_BUCKETS_SECONDS
        self.e2e_latency = h(
            "vllm:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds.",
            latency,
        )
        self.queue_time = h(
            "vllm:request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
            latency,
        )
        self.inference_time = h(
            "vllm:request_inference_time_seconds",
            "Histogram of time spent in RUNNING phase for request.",
            latency,
        )
        self.prefill_time = h(
            "vllm:request_prefill_time_seconds",
            "Histogram of time spent in PREFILL phase for request.",
            latency,
        )
        self.decode_time = h(
            "vllm:request_decode_time_seconds",
            "Histogram of time spent in DECODE phase for request.",
            latency,
        )
        self.request_num_preemptions = h(
            "vllm:request_num_preemptions",
            "Histogram of the number of times a request was preempted.",
            PREEMPTION_BUCKETS,
        )
        self.request_prefill_kv_computed_tokens = h(
            "vllm:request_prefill_kv_computed_tokens",
            "Histogram of new KV tokens computed during prefill (excluding cached tokens).",
            tokens,
        )

    def _cache_config_info(self, profile: EngineProfile, engine: str) -> None:
        """vLLM's info gauge (no model_name label): KV tokens = num_gpu_blocks x block_size."""
        blocks = profile.kv_capacity_tokens // BLOCK_SIZE_TOKENS
        info = {
            **dict.fromkeys(CACHE_CONFIG_INFO_LABELS, "None"),
            "block_size": str(BLOCK_SIZE_TOKENS),
            "effective_attention_block_size": str(BLOCK_SIZE_TOKENS),
            "cache_dtype": "auto",
            "enable_prefix_caching": "True",
            "gpu_memory_utilization": "0.92",
            "kv_cache_size_tokens": str(blocks * BLOCK_SIZE_TOKENS),
            "kv_cache_max_concurrency": str(blocks * BLOCK_SIZE_TOKENS / profile.max_model_len),
            "num_gpu_blocks": str(blocks),
            "engine": engine,
        }
        gauge = Gauge(
            "vllm:cache_config_info",
            "Information of the LLMEngine CacheConfig",
            list(info),
            registry=self.registry,
        )
        gauge.labels(*info.values()).set(1.0)

    # -- updates from the engine -------------------------------------------------------------

    def set_load(self, waiting: int, running: int, kv_cache_usage: float) -> None:
        self.waiting.set(waiting)
        self.waiting_capacity.set(waiting)
        self.running.set(running)
        self.kv_cache_usage.set(kv_cache_usage)

    def add_tokens(self, prompt_tokens: int, generation_tokens: int) -> None:
        """Token counters grow by these deltas (the engine reports running totals)."""
        if prompt_tokens > 0:
            self.prompt_tokens.inc(prompt_tokens)
            self.prompt_tokens_computed.inc(prompt_tokens)
            self.prefix_cache_queries.inc(prompt_tokens)
        if generation_tokens > 0:
            self.generation_tokens.inc(generation_tokens)

    def first_token(self, ttft_seconds: float, prompt_tokens: int) -> None:
        self.ttft.observe(ttft_seconds)
        # The simulator has no per-step record; a prompt's prefill counts as one step.
        self.iteration_tokens.observe(prompt_tokens)

    def finished(
        self, timing: RequestTiming, reason: FinishedReason | str, max_tokens: int
    ) -> None:
        self.request_success.labels(
            self._labels["model_name"], self._labels["engine"], str(reason)
        ).inc()
        self.e2e_latency.observe(timing.e2e_seconds)
        self.queue_time.observe(timing.queue_seconds)
        self.request_prompt_tokens.observe(timing.prompt_tokens)
        self.request_generation_tokens.observe(timing.output_tokens)
        self.request_max_num_generation_tokens.observe(max_tokens)
        self.request_params_max_tokens.observe(max_tokens)
        self.request_params_n.observe(1)
        self.request_num_preemptions.observe(0)
        self.request_prefill_kv_computed_tokens.observe(timing.prompt_tokens)
        if timing.scheduled is not None:
            self.inference_time.observe(timing.finished - timing.scheduled)
            if timing.first_token is not None:
                self.prefill_time.observe(timing.first_token - timing.scheduled)
                self.decode_time.observe(timing.finished - timing.first_token)
        itl = timing.mean_itl_seconds
        if itl is not None:
            self.itl.observe(itl, timing.output_tokens - 1)
            self.request_time_per_output_token.observe(itl)
