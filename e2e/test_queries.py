"""The operator's queue queries against a real Prometheus, on engines of two vintages.

vLLM splits its waiting gauge by reason (`vllm:num_requests_waiting_by_reason`): requests waiting
for a place in a batch, and requests deferred by a KV transfer, a LoRA budget or a blocked status,
which more replicas do not serve sooner. The operator counts only the first where an engine gives
the split and the whole gauge where it does not, pod by pod; PromQL's `or` decides that, so it is
checked here against Prometheus itself, not a string.
"""

from __future__ import annotations

from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread

import pytest
from prometheus_client import CONTENT_TYPE_LATEST

from harness import Cluster
from harness.cluster import wait_until
from thrifty.adapters.prometheus import PrometheusSignals, build_queries
from thrifty.autoscaler.world import ServiceKey

KEY = ServiceKey("queues", "split")
JOB = "queue-reasons"


def _engine(body: str) -> tuple[ThreadingHTTPServer, Thread]:
    """A /metrics endpoint serving ``body`` in the text format, as vLLM does (prometheus_client's
    OpenMetrics output, which Prometheus asks for first, escapes the colons of vLLM's names)."""

    class Metrics(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            payload = body.encode()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE_LATEST)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Metrics)
    thread = Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


NEW_ENGINE = """\
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="m",engine="0"} 7.0
# TYPE vllm:num_requests_waiting_by_reason gauge
vllm:num_requests_waiting_by_reason{model_name="m",engine="0",reason="capacity"} 3.0
vllm:num_requests_waiting_by_reason{model_name="m",engine="0",reason="deferred"} 4.0
"""
OLD_ENGINE = """\
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="m",engine="0"} 5.0
"""


@pytest.fixture
def engines(cluster: Cluster) -> Iterator[None]:
    """Two pods of one ModelService: a new engine with 3 waiting for capacity and 4 deferred,
    and an older one with 5 waiting and no split."""
    servers = [_engine(NEW_ENGINE), _engine(OLD_ENGINE)]
    try:
        for index, (server, _) in enumerate(servers):
            cluster.add_scrape_targets(
                f"{JOB}-{index}",
                [f"127.0.0.1:{server.server_address[1]}"],
                {
                    "namespace": KEY.namespace,
                    "modelservice": KEY.model_service,
                    "pod": f"p-{index}",
                },
            )
        yield
    finally:
        for index, (server, thread) in enumerate(servers):
            cluster.remove_scrape_targets(f"{JOB}-{index}")
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)


@pytest.mark.usefixtures("engines")
def test_the_queue_counts_what_waits_for_capacity_pod_by_pod(cluster: Cluster) -> None:
    source = PrometheusSignals(cluster.prometheus_url)
    queries = build_queries(KEY)

    pods = f'count(vllm:num_requests_waiting{{modelservice="{KEY.model_service}"}})'

    def both_pods_read() -> float | None:
        total = source.query(pods)
        if not total or float(total[0]["value"][1]) < 2:
            return None
        result = source.query(queries["requests_waiting"])
        return float(result[0]["value"][1]) if result else None

    waiting = wait_until(both_pods_read, timeout_seconds=60, what="both engines scraped")
    # 3 of the new engine's 7 wait for capacity; the older engine's 5 all count.
    assert waiting == 8.0
    mean = source.query(queries["requests_waiting_mean"])
    assert len(mean) == 1
    assert float(mean[0]["value"][1]) == 8.0
