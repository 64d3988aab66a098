"""`make demo`: thrifty scaling real traffic on a local cluster, live in a terminal, in ~5 minutes.

One command on a fresh machine (after `make bootstrap`): start the local cluster (KWOK fake H100
nodes, a real Prometheus; the e2e harness), install the CRDs and the examples, start the operator,
the fleet mirror (one simulated vLLM engine per Running pod, scraped by Prometheus) and
thrifty-gateway, give three tenants API keys, replay a time-compressed burst of the Azure LLM code
trace through the gateway as those three tenants (a third of the trace each), show a table of the
ModelServices every few seconds (requests/s through the gateway, replicas, queue, $/hour, $/1M
tokens, the last decision; refreshed in place on a terminal, one table after another otherwise),
then each tenant's tokens, refusals and cost (`thrifty report`) and, per ModelService, what its
tokens cost self-hosted against its reference price; write out/demo.png (the traffic above the
replicas, so replicas are seen following demand) and tear everything down, also on Ctrl-C.

    .venv/bin/python scripts/demo.py [--trace-minutes 20] [--speedup 5] [--keep]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "e2e"))

from harness import Cluster, Session, start_local  # noqa: E402
from harness.cluster import wait_until  # noqa: E402
from harness.session import LOOPBACK_POD_NETWORK  # noqa: E402
from thrifty import cost  # noqa: E402

TRACES = Path(os.environ.get("THRIFTY_TRACES_DIR", REPO_ROOT.parent / "shared" / "traces"))
CODE_TRACE = TRACES / "azure2023" / "AzureLLMInferenceTrace_code.csv"
ATTRIBUTION = (
    "Traffic: Azure LLM inference trace 2023, code (CC-BY 4.0; Patel et al., Splitwise, ISCA 2024)"
)
NAMESPACE = "team-a"
OPERATOR_ENV = {
    # Demo pace: decide every 5 s; simulated engines start in seconds, not minutes.
    "THRIFTY_DECISION_INTERVAL_SECONDS": "5",
    "THRIFTY_COLD_START_SECONDS": "15",
    "THRIFTY_RESYNC_SECONDS": "5",
    "THRIFTY_POOL_RESYNC_SECONDS": "3",
    "THRIFTY_BUDGET_RESYNC_SECONDS": "5",
    "THRIFTY_LEADER_ELECTION": "false",
}
SERVED_MODEL = "llama-3.1-8b"
"""examples/modelservice-llama-8b.yaml's servedModelName: what clients send as `model`."""
TENANTS = {
    # tenant: limits as Secret annotations (docs/gateway.md); gamma's show 429s under the burst.
    "alpha": {},
    "beta": {"thrifty.dev/requests-per-minute": "600"},
    "gamma": {"thrifty.dev/tokens-per-minute": "150000"},
}
# The example's delays suit production; a 5-minute demo needs them shorter to show scale-down.
DEMO_SCALING = {"maxReplicas": 8, "scaleDownDelaySeconds": 30, "queueDepthTargetPerReplica": 4}


def say(text: str) -> None:
    print(f"[demo] {text}", file=sys.stderr, flush=True)


@dataclass
class Sample:
    at_seconds: float
    name: str
    desired: int
    ready: int
    queue: float
    dollars_per_hour: float
    dollars_per_million_tokens: float | None
    reason: str
    requests_per_second: float | None = None
    """Through the gateway since the previous sample (None: no previous sample, or unreadable)."""
    tokens_per_second: float | None = None
    """Prompt + completion tokens metered by the gateway since the previous sample."""
    reference_dollars_per_million_tokens: float | None = None
    """status.referenceDollarsPerMillionTokens: the reference price blended by the token mix."""


@dataclass(frozen=True)
class Counters:
    """One ModelService's gateway counters at one instant (totals since the gateway started)."""

    requests: float = 0.0
    prompt_tokens: float = 0.0
    completion_tokens: float = 0.0


@dataclass(frozen=True)
class Traffic:
    requests_per_second: float
    tokens_per_second: float


def gateway_counters(text: str) -> dict[str, Counters]:
    """Per ModelService name, its requests (every outcome: held, refused and served alike, since
    all are demand) and metered tokens, from the text of the gateway's /metrics. A request is
    counted when it ends, so a rate lags the arrivals by a request's latency (seconds)."""
    from prometheus_client.parser import text_string_to_metric_families

    found: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.labels.get("modelservice")
            if not name:
                continue
            row = found.setdefault(name, {})
            if sample.name == "thrifty_gateway_requests_total":
                row["requests"] = row.get("requests", 0.0) + sample.value
            elif sample.name == "thrifty_gateway_tokens_total":
                field_name = f"{sample.labels.get('kind', 'prompt')}_tokens"
                if field_name in ("prompt_tokens", "completion_tokens"):
                    row[field_name] = row.get(field_name, 0.0) + sample.value
    return {name: Counters(**row) for name, row in found.items()}


def traffic_between(
    before: dict[str, Counters], after: dict[str, Counters], seconds: float
) -> dict[str, Traffic]:
    """Requests/s and tokens/s per ModelService between two readings of the counters. A counter
    that went down (the gateway restarted) counts from zero, as Prometheus's rate() does."""
    if seconds <= 0:
        return {}
    rates = {}
    for name, now in after.items():
        then = before.get(name, Counters())
        requests = _increase(then.requests, now.requests)
        tokens = _increase(then.prompt_tokens, now.prompt_tokens) + _increase(
            then.completion_tokens, now.completion_tokens
        )
        rates[name] = Traffic(requests / seconds, tokens / seconds)
    return rates


def _increase(before: float, after: float) -> float:
    return after - before if after >= before else after


@dataclass
class Screen:
    """Shows the table: on a terminal in place (the previous one erased, lines cut to the width so
    none wraps and the count of lines to erase stays right), elsewhere (a log, a pipe) one table
    after another, as plain text."""

    stream: TextIO
    in_place: bool
    width: int = 0
    shown_lines: int = 0

    @classmethod
    def on(cls, stream: TextIO) -> Screen:
        terminal = stream.isatty() and os.environ.get("TERM", "") != "dumb"
        return cls(stream, terminal, shutil.get_terminal_size().columns if terminal else 0)

    def show(self, text: str) -> None:
        if not self.in_place:
            self.stream.write(text + "\n\n")
            self.stream.flush()
            return
        lines = [line[: max(self.width - 1, 1)] for line in text.splitlines()]
        if self.shown_lines:
            self.stream.write(f"\x1b[{self.shown_lines}F\x1b[J")  # up to the table, erase below
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()
        self.shown_lines = len(lines)

    def release(self) -> None:
        """Leaves the table shown where it is: what is printed next goes below it."""
        self.shown_lines = 0


@dataclass
class Demo:
    cluster: Cluster
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    log_dir: Path = REPO_ROOT / "out" / "demo-logs"

    def spawn(self, name: str, argv: Sequence[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = (self.log_dir / f"{name}.log").open("wb")
        process = subprocess.Popen(
            list(argv),
            cwd=REPO_ROOT,
            env={**os.environ, "KUBECONFIG": str(self.cluster.kubeconfig), **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the demo, which stops them in order
        )
        self.processes.append(process)
        return process

    def stop_processes(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def install(cluster: Cluster) -> None:
    say("installing CRDs and examples")
    cluster.kubectl("apply", "--server-side", "-f", str(REPO_ROOT / "crds"))
    for crd in ("modelservices", "gpupools", "costbudgets"):
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}.thrifty.dev")
    cluster.kubectl("create", "namespace", NAMESPACE, check=False)
    examples = REPO_ROOT / "examples"
    for path in sorted(examples.glob("gpupool-*.yaml")):
        cluster.kubectl("apply", "-f", str(path))
    cluster.kubectl("apply", "-n", NAMESPACE, "-f", str(examples / "costbudget-team-a.yaml"))
    model = examples / "modelservice-llama-8b.yaml"
    cluster.kubectl("apply", "-n", NAMESPACE, "-f", str(model))
    patch = json.dumps({"spec": {"scaling": DEMO_SCALING}})
    cluster.kubectl("patch", "-n", NAMESPACE, "ms", "llama-8b", "--type=merge", "-p", patch)


def snapshot(demo: Demo) -> list[dict[str, Any]]:
    found = demo.cluster.kubectl("get", "ms", "-n", NAMESPACE, "-o", "json", check=False)
    if found.returncode != 0:
        return []
    items: list[dict[str, Any]] = json.loads(found.stdout).get("items", [])
    return items


def record(demo: Demo, items: list[dict[str, Any]], traffic: dict[str, Traffic]) -> None:
    now = time.monotonic() - demo.started
    for item in items:
        status = item.get("status") or {}
        decision = (status.get("autoscaler") or {}).get("lastDecision") or {}
        flow = traffic.get(item["metadata"]["name"])
        demo.samples.append(
            Sample(
                at_seconds=now,
                name=item["metadata"]["name"],
                desired=int(item["spec"].get("replicas", status.get("desiredReplicas", 0))),
                ready=int(status.get("readyReplicas", 0)),
                queue=float(status.get("queueDepth") or 0.0),
                dollars_per_hour=float(status.get("dollarsPerHour") or 0.0),
                dollars_per_million_tokens=status.get("dollarsPerMillionTokens"),
                reason=str(decision.get("reason", "")),
                requests_per_second=None if flow is None else flow.requests_per_second,
                tokens_per_second=None if flow is None else flow.tokens_per_second,
                reference_dollars_per_million_tokens=status.get("referenceDollarsPerMillionTokens"),
            )
        )


def table(items: list[dict[str, Any]], elapsed: float, traffic: dict[str, Traffic]) -> str:
    header = (
        f"{'t':>5}  {'MODELSERVICE':<12} {'REQ/S':>6} {'READY/WANT':>10} {'QUEUE':>6} "
        f"{'TOK/S':>7} {'$/HOUR':>7} {'$/1M TOK':>8}  LAST DECISION"
    )
    rows = [header]
    for item in items:
        status = item.get("status") or {}
        decision = (status.get("autoscaler") or {}).get("lastDecision") or {}
        per_million = status.get("dollarsPerMillionTokens")
        flow = traffic.get(item["metadata"]["name"])
        rows.append(
            f"{elapsed:>4.0f}s  {item['metadata']['name']:<12} "
            f"{'-' if flow is None else f'{flow.requests_per_second:.1f}':>6} "
            f"{status.get('readyReplicas', 0):>4}/{item['spec'].get('replicas', '-'):<5} "
            f"{status.get('queueDepth') or 0:>6.0f} {status.get('tokensPerSecond') or 0:>7.0f} "
            f"{status.get('dollarsPerHour') or 0:>7.2f} "
            f"{'-' if per_million is None else f'{per_million:.2f}':>8}  "
            f"{decision.get('message', '')[:90]}"
        )
    return "\n".join(rows)


def plot(demo: Demo, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    figure = draw(demo.samples)
    figure.text(0.01, 0.005, ATTRIBUTION, fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    say(f"plot written to {path.relative_to(REPO_ROOT)}")


PANELS = ("requests/s", "replicas", "queued requests", "$/hour", "$/1M tokens")
"""The plot's panels, top to bottom: demand first, so the replicas below are seen following it."""


def draw(samples: Sequence[Sample]) -> Any:
    """The figure of the demo: traffic (requests/s, and tokens/s on the right axis) above the
    replicas, then queue, $/hour and $/1M tokens (the reference price dashed beside it)."""
    import matplotlib.pyplot as plt

    names = sorted({s.name for s in samples})
    figure, axes = plt.subplots(len(PANELS), 1, figsize=(10, 12), sharex=True)
    traffic, replicas, queue, spend, per_token = axes
    tokens = traffic.twinx()
    for name in names:
        mine = [s for s in samples if s.name == name]
        t = [s.at_seconds / 60 for s in mine]
        (flow,) = traffic.plot(
            t, [_nan(s.requests_per_second) for s in mine], label=f"{name} requests/s"
        )
        tokens.plot(
            t,
            [_nan(s.tokens_per_second) for s in mine],
            ":",
            color=flow.get_color(),
            label=f"{name} tokens/s",
        )
        replicas.step(t, [s.desired for s in mine], where="post", label=f"{name} desired")
        replicas.plot(t, [s.ready for s in mine], "--", label=f"{name} ready")
        queue.plot(t, [s.queue for s in mine], label=name)
        spend.plot(t, [s.dollars_per_hour for s in mine], label=name)
        (realised,) = per_token.plot(
            t, [_nan(s.dollars_per_million_tokens) for s in mine], label=name
        )
        reference = [_nan(s.reference_dollars_per_million_tokens) for s in mine]
        if any(value == value for value in reference):  # not all NaN
            per_token.plot(
                t, reference, "--", color=realised.get_color(), label=f"{name} reference price"
            )
    tokens.set_ylabel("tokens/s (dotted)")
    tokens.legend(loc="upper left", fontsize=8)
    for ax, label in zip(axes, PANELS, strict=True):
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
    per_token.set_yscale("log")  # a trickle of tokens makes the per-token cost spike
    axes[-1].set_xlabel("minutes since the demo started")
    figure.suptitle("thrifty: replicas follow a replayed burst of real traffic")
    return figure


def _nan(value: float | None) -> float:
    return float("nan") if value is None else value


def reference_lines(
    items: list[dict[str, Any]], samples: Sequence[Sample], totals: dict[str, Counters]
) -> list[str]:
    """Per ModelService with a reference price: what a million of its tokens cost self-hosted
    over the demo (its $/hour integrated over the samples, idle time included, over the tokens
    the gateway metered) against the reference price blended by the same tokens' mix."""
    lines = []
    for item in items:
        name = item["metadata"]["name"]
        price = (item["spec"].get("costTarget") or {}).get("referenceDollarsPerMillionTokens")
        if not price:
            continue
        counted = totals.get(name, Counters())
        spent = dollars_spent([s for s in samples if s.name == name])
        served = counted.prompt_tokens + counted.completion_tokens
        realised = None if served <= 0 else spent * cost.TOKENS_PER_MILLION / served
        reference = cost.blended_reference_dollars_per_million_tokens(
            float(price["input"]),
            float(price["output"]),
            counted.prompt_tokens,
            counted.completion_tokens,
        )
        if realised is None or reference is None:
            lines.append(f"{name}: no tokens served, nothing to compare with its reference price")
            continue
        saving = cost.format_savings(cost.savings_fraction(realised, reference))
        lines.append(
            f"{name}: ${realised:.4f}/1M tokens self-hosted (${spent:.4f} over {served:,.0f} "
            f"tokens, idle time included) against ${reference:.4f}/1M at the reference price "
            f"(${float(price['input']):g} in, ${float(price['output']):g} out per 1M, blended by "
            f"its {counted.prompt_tokens / served:.0%} prompt tokens): self-host {saving}"
        )
    return lines


def dollars_spent(samples: Sequence[Sample]) -> float:
    """$/hour integrated over the samples' times: each value held until the next sample."""
    total = 0.0
    for this, following in itertools.pairwise(samples):
        total += this.dollars_per_hour * (following.at_seconds - this.at_seconds) / 3600
    return total


def read_gateway(gateway: str) -> dict[str, Counters] | None:
    try:
        with urllib.request.urlopen(f"{gateway}/metrics", timeout=5) as response:
            return gateway_counters(response.read().decode())
    except OSError:
        return None


def watch(
    demo: Demo,
    gateway: str,
    loads: list[subprocess.Popen[bytes]],
    cooldown_seconds: float,
    screen: Screen,
) -> dict[str, Counters]:
    """Shows the table every 5 s until the load ends and the cool-down (scale-down) has passed;
    returns the gateway's last counters."""
    ended_at: float | None = None
    counters, read_at = read_gateway(gateway) or {}, time.monotonic()
    while True:
        items = snapshot(demo)
        now_counters, now = read_gateway(gateway), time.monotonic()
        traffic: dict[str, Traffic] = {}
        if now_counters is not None:
            traffic = traffic_between(counters, now_counters, now - read_at)
            counters, read_at = now_counters, now
        record(demo, items, traffic)
        screen.show(table(items, now - demo.started, traffic))
        if ended_at is None and all(load.poll() is not None for load in loads):
            ended_at = time.monotonic()
            screen.release()
            say(f"traffic replay finished; watching the scale-down for {cooldown_seconds:.0f} s")
        if ended_at is not None and time.monotonic() - ended_at > cooldown_seconds:
            screen.release()
            return counters
        time.sleep(5)


@contextmanager
def local_cluster() -> Iterator[Session]:
    say("starting the local cluster (kube-apiserver, KWOK fake GPU nodes, Prometheus)")
    session = start_local(name=f"thrifty-demo-{os.getpid()}")
    try:
        yield session
    finally:
        say("stopping the local cluster")
        for problem in session.stop():
            say(f"while stopping: {problem}")


def run(args: argparse.Namespace) -> int:
    if not CODE_TRACE.is_file():
        say(f"trace not found: {CODE_TRACE} (set THRIFTY_TRACES_DIR)")
        return 2
    with local_cluster() as session:
        demo = Demo(session.cluster)
        try:
            install(demo.cluster)
            start_fleet(demo, session)
            gateway = start_gateway(demo, session)
            keys = create_tenants(demo.cluster)
            operator_port = start_operator(demo, session)
            wait_ready(demo)
            say(f"replaying {args.trace_minutes:g} min of the code trace {args.speedup:g}x faster")
            say(f"through the gateway as {len(keys)} tenants: {', '.join(keys)}")
            say(ATTRIBUTION)
            began = time.time()
            loads = start_loads(demo, gateway, keys, args.trace_minutes, args.speedup)
            screen = Screen.on(sys.stdout)
            totals = watch(demo, gateway, loads, args.cooldown_seconds, screen)
            print(tenant_table(gateway), flush=True)
            print(chargeback(demo, began, operator_port), flush=True)
            lines = reference_lines(snapshot(demo), demo.samples, read_gateway(gateway) or totals)
            print("\n".join(["Self-hosted against the reference price:", *lines]), flush=True)
            plot(demo, REPO_ROOT / "out" / "demo.png")
        except KeyboardInterrupt:
            say("interrupted")
            if demo.samples:
                plot(demo, REPO_ROOT / "out" / "demo.png")
        finally:
            demo.stop_processes()
    return 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def scrape(session: Session, job: str, port: int) -> None:
    """Registers 127.0.0.1:`port` with the harness's Prometheus (file_sd), labelled by job only."""
    sd_dir = session.cluster.scrape_sd_dir
    if sd_dir is None:
        raise RuntimeError("the demo needs the harness's own Prometheus (file_sd directory)")
    target = [{"targets": [f"127.0.0.1:{port}"], "labels": {"job": job}}]
    (sd_dir / f"{job}.json").write_text(json.dumps(target))


def start_operator(demo: Demo, session: Session) -> int:
    """The operator, its /metrics scraped (the cost series `thrifty report` integrates)."""
    say("starting the operator")
    port = free_port()
    env = {
        **OPERATOR_ENV,
        "THRIFTY_PROMETHEUS_URL": demo.cluster.prometheus_url,
        "THRIFTY_METRICS_PORT": str(port),
        "THRIFTY_NAMESPACES": NAMESPACE,
    }
    demo.spawn("operator", [sys.executable, "-m", "thrifty.control"], env)
    scrape(session, "thrifty-operator", port)
    return port


def start_fleet(demo: Demo, session: Session) -> None:
    """The fleet mirror: one simulated vLLM engine per Running pod, registered with Prometheus,
    each on its pod IP's loopback twin, so the gateway reaches it through the EndpointSlice."""
    say("starting the fleet mirror (simulated vLLM engines for the KWOK pods)")
    sd_dir = session.cluster.scrape_sd_dir
    if sd_dir is None:
        raise RuntimeError("the demo needs the harness's own Prometheus (file_sd directory)")
    argv = [
        sys.executable,
        "-m",
        "thrifty_runtime.fleet_mirror",
        "--namespace",
        NAMESPACE,
        "--file-sd",
        str(sd_dir / "thrifty-fleet.json"),
        "--state-file",
        str(demo.log_dir / "fleet.json"),
        "--loopback-pod-network",
        LOOPBACK_POD_NETWORK,
    ]
    demo.spawn("fleet-mirror", argv, {})


def start_gateway(demo: Demo, session: Session) -> str:
    """thrifty-gateway as in a pod: watches ModelServices, EndpointSlices and key Secrets."""
    say("starting thrifty-gateway")
    port = free_port()
    argv = [
        sys.executable, "-m", "thrifty_runtime.gateway",
        "--namespace", NAMESPACE, "--api-key-namespace", NAMESPACE,
        "--host", "127.0.0.1", "--port", str(port),
        "--loopback-pod-network", LOOPBACK_POD_NETWORK,
    ]  # fmt: skip
    demo.spawn("gateway", argv, {})
    scrape(session, "thrifty-gateway", port)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool | None:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                return response.status == 200 or None
        except OSError:
            return None

    wait_until(ready, timeout_seconds=60, what="the gateway ready")
    return url


def create_tenants(cluster: Cluster) -> dict[str, str]:
    """One API-key Secret per tenant (keys made here, never printed): tenant -> key."""
    keys = {}
    for tenant, limits in TENANTS.items():
        key = f"sk-demo-{secrets.token_urlsafe(24)}"
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": f"{tenant}-api-key",
                "namespace": NAMESPACE,
                "labels": {"thrifty.dev/tenant": tenant},
                "annotations": limits,
            },
            "stringData": {"api-key": key},
        }
        cluster.apply(json.dumps(secret))
        keys[tenant] = key
    return keys


def start_loads(
    demo: Demo, gateway: str, keys: dict[str, str], trace_minutes: float, speedup: float
) -> list[subprocess.Popen[bytes]]:
    """The first `trace_minutes` of the code trace, `speedup` times faster, through the gateway:
    each tenant replays its own consecutive third at a third of the speed, so together they send
    the trace's rate and finish together."""
    share = trace_minutes * 60 / len(keys)  # trace seconds per tenant
    replay_seconds = trace_minutes * 60 / speedup
    loads = []
    for index, (tenant, key) in enumerate(keys.items()):
        argv = [
            sys.executable, "-m", "thrifty_runtime.loadgen",
            "--gateway", gateway, "--model", SERVED_MODEL, "--api-key-env", "THRIFTY_DEMO_KEY",
            "--trace", str(CODE_TRACE),
            "--start", str(index * share),
            "--duration", str(replay_seconds),
            "--speedup", str(speedup / len(keys)),
            "--max-seconds", str(replay_seconds),
            "--max-requests", "1000000",
            "--seed", str(index),
        ]  # fmt: skip
        loads.append(demo.spawn(f"load-{tenant}", argv, {"THRIFTY_DEMO_KEY": key}))
    return loads


def tenant_table(gateway: str) -> str:
    """Tokens and outcomes per tenant, from the gateway's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{gateway}/metrics", timeout=10) as response:
        text = response.read().decode()
    rows: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            tenant = sample.labels.get("tenant")
            if not tenant:
                continue
            row = rows.setdefault(tenant, {})
            if sample.name == "thrifty_gateway_tokens_total":
                row[sample.labels["kind"]] = row.get(sample.labels["kind"], 0) + sample.value
            elif sample.name == "thrifty_gateway_tenant_requests_total":
                outcome = sample.labels["outcome"]
                row[outcome] = row.get(outcome, 0) + sample.value
    lines = [f"{'tenant':8} {'ok':>6} {'429':>6} {'prompt tokens':>14} {'output tokens':>14}"]
    for tenant in sorted(rows):
        row = rows[tenant]
        lines.append(
            f"{tenant:8} {row.get('ok', 0):6.0f} {row.get('rate_limited', 0):6.0f} "
            f"{row.get('prompt', 0):14.0f} {row.get('completion', 0):14.0f}"
        )
    return "\n".join(lines)


def chargeback(demo: Demo, began: float, operator_port: int) -> str:
    """`thrifty report` over the demo: each tenant's share of the cost, from Prometheus."""
    del operator_port  # scraped through file_sd; named for the reader of `run`
    time.sleep(5)  # one more scrape of the last counters (every 2 s) before the report's query
    start = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(began))
    end = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    argv = [sys.executable, "-m", "thrifty.cli", "report", "--prometheus-url"]
    argv += [demo.cluster.prometheus_url, "--start", start, "--end", end, "--period", "hour"]
    result = subprocess.run(argv, capture_output=True, text=True, cwd=REPO_ROOT, check=False)
    if result.returncode != 0:
        return f"thrifty report failed: {result.stderr.strip()}"
    return "Chargeback over the demo (thrifty report):\n" + result.stdout


def wait_ready(demo: Demo) -> None:
    def ready() -> bool | None:
        items = snapshot(demo)
        return (
            bool(items)
            and all((item.get("status") or {}).get("readyReplicas", 0) >= 1 for item in items)
        ) or None

    wait_until(ready, timeout_seconds=120, what="the ModelServices Ready", interval_seconds=2)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trace-minutes", type=float, default=20.0, help="slice of the trace")
    parser.add_argument("--speedup", type=float, default=5.0, help="time compression")
    parser.add_argument("--cooldown-seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
