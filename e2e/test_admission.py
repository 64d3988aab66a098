"""Hardening against a real API server: what admission refuses, names that always work, a fuzz.

Admission is the CRDs' OpenAPI bounds and CEL rules as generated from the models, so these tests
check that the rules compile, that the API server applies them as the models do, and that every
refusal names its field. The operator runs beside them: every accepted object must reach a status
and the operator must never log a traceback.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import Cluster
from harness.cluster import wait_until
from operator_process import OperatorProcess, StartOperator, operator_process
from test_reconcile import apply, condition, crds_and_pools, example
from thrifty.api import costbudget, gpupool, modelservice
from thrifty.reconciler import render

__all__ = ["crds_and_pools", "operator_process"]  # fixtures, re-exported for pytest

API = "thrifty.dev/v1alpha1"
NOWHERE_POOL = "fuzz-nowhere"
"""A pool whose nodes do not exist: objects placed on it render workloads but take no GPU."""


@dataclass(frozen=True)
class Outcome:
    accepted: bool
    message: str


def server_side_apply(
    cluster: Cluster, namespace: str | None, bodies: list[dict[str, Any]]
) -> dict[str, Outcome]:
    """Apply every body in one `kubectl apply --server-side`; per object name: accepted or why not.

    kubectl reports each object on its own (applied ones on stdout, refusals on stderr)."""
    args = ["apply", "--server-side", "--force-conflicts", "-f", "-"]
    result = cluster.kubectl(
        *args,
        *(["-n", namespace] if namespace else []),
        input="\n---\n".join(json.dumps(b) for b in bodies),
        check=False,
        timeout=120,
    )
    outcomes: dict[str, Outcome] = {}
    for line in result.stdout.splitlines():
        found = re.match(r"^[a-z.]+/(\S+) serverside-applied", line)
        if found:
            outcomes[found.group(1)] = Outcome(True, "")
    for body in bodies:
        name = body["metadata"]["name"]
        if name in outcomes:
            continue
        # One line, or a list of causes on the lines that follow (several fields refused).
        mention = re.search(
            rf'"{re.escape(name)}" is invalid: (.*?)(?=\n(?:The |Error from server)|\Z)',
            result.stderr,
            re.S,
        )
        assert mention is not None, f"no outcome for {name}:\n{result.stderr[-3000:]}"
        outcomes[name] = Outcome(False, mention.group(1))
    return outcomes


def model_service(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "ModelService", "metadata": {"name": name}, "spec": spec}


def minimal(**changes: Any) -> dict[str, Any]:
    return {"model": {"uri": "hf://Qwen/Qwen3-0.6B"}, "pools": [NOWHERE_POOL], **changes}


@pytest.fixture(scope="module")
def nowhere_pool(cluster: Cluster, crds_and_pools: None) -> Iterator[None]:
    pool = {
        "apiVersion": API,
        "kind": "GPUPool",
        "metadata": {"name": NOWHERE_POOL},
        "spec": {
            "accelerator": "none",
            "gpuMemoryGib": 80,
            "gpusPerNode": 8,
            "nodeSelector": {"thrifty.dev/pool": NOWHERE_POOL},
            "pricePerGpuHour": 1.0,
        },
    }
    apply(cluster, None, pool)
    yield
    cluster.kubectl("delete", "gpupool", NOWHERE_POOL, "--wait=false", check=False)


def no_traceback(process: OperatorProcess) -> None:
    logs = process.logs()
    assert "Traceback" not in logs, logs[logs.index("Traceback") - 2000 :][:6000]


# --- named refusals from the adversarial run ---------------------------------------------------

REFUSED: list[tuple[dict[str, Any], str]] = [
    (minimal(engine={"extraArgs": ["-tp", "8"]}), "spec.engine.extraArgs[0]"),
    (minimal(engine={"extraArgs": ["--tensor_parallel_size=8"]}), "spec.engine.extraArgs[0]"),
    (minimal(engine={"extraArgs": ["--x", "-pp", "2"]}), "spec.engine.extraArgs[1]"),
    (minimal(engine={"extraArgs": ["--por=9000"]}), "spec.engine.extraArgs[0]"),
    (minimal(engine={"extraArgs": ["--served_model_name=other"]}), "spec.engine.extraArgs[0]"),
    (minimal(engine={"extraArgs": ["--shutdown_timeout=0"]}), "spec.engine.extraArgs[0]"),
    (minimal(engine={"extraArgs": ["--host", "0.0.0.0"]}), "spec.engine.extraArgs[0]"),
    (minimal(engine={"extraArgs": ["--data-parallel-size", "2"]}), "spec.engine.extraArgs[0]"),
    (minimal(engine={"extraArgs": ["--config", "/etc/passwd"]}), "spec.engine.extraArgs[0]"),
    (minimal(engine={"extraArgs": ["-qfp8"]}), "spec.engine.extraArgs[0]"),
    (minimal(engine={"extraArgs": ["--", "other/model"]}), "spec.engine.extraArgs[0]"),
    (minimal(engine={"extraArgs": ["--trust-remote-code"]}), "spec.engine.extraArgs"),
    (minimal(engine={"extraArgs": ["--allowed-local-media-path", "/"]}), "spec.engine.extraArgs"),
    (minimal(engine={"env": [{"name": "VLLM_PORT", "value": "1"}]}), "spec.engine.env"),
    (minimal(engine={"env": [{"name": "HF_TOKEN", "value": "x"}]}), "spec.engine.env"),
    (minimal(engine={"maxModelLen": 2**63 - 1}), "spec.engine.maxModelLen"),
    (minimal(engine={"maxNumSeqs": 2**63 - 1}), "spec.engine.maxNumSeqs"),
    (minimal(scaling={"scaleDownDelaySeconds": 2**63 - 1}), "spec.scaling.scaleDownDelaySeconds"),
    (
        minimal(scaling={"queueDepthTargetPerReplica": 1e-320}),
        "spec.scaling.queueDepthTargetPerReplica",
    ),
    (
        minimal(scaling={"queueDepthTargetPerReplica": 1e308}),
        "spec.scaling.queueDepthTargetPerReplica",
    ),
    (
        minimal(latencyTarget={"timeToFirstTokenP95Seconds": 1e308}),
        "spec.latencyTarget.timeToFirstTokenP95Seconds",
    ),
    (minimal(resources={"cpu": "99999999999999999999999"}), "spec.resources.cpu"),
    (minimal(costTarget={"maxDollarsPerHour": 1.7e308}), "spec.costTarget.maxDollarsPerHour"),
    (minimal(model={"uri": "pvc://claim/../../etc"}), "spec.model"),
    (minimal(pools=[NOWHERE_POOL, NOWHERE_POOL]), "spec.pools"),
]


def test_the_adversarial_specs_are_refused_naming_the_field(
    cluster: Cluster, namespace: str, nowhere_pool: None
) -> None:
    bodies = [model_service(f"refused-{i}", spec) for i, (spec, _) in enumerate(REFUSED)]
    bodies.append(model_service("still-fine", minimal(engine={"extraArgs": ["-O3", "--seed=1"]})))
    outcomes = server_side_apply(cluster, namespace, bodies)
    for i, (spec, field) in enumerate(REFUSED):
        outcome = outcomes[f"refused-{i}"]
        assert not outcome.accepted, f"accepted: {spec}"
        assert field in outcome.message, (field, outcome.message)
    assert outcomes["still-fine"].accepted


def test_a_name_longer_than_a_label_value_is_refused_naming_the_rule(
    cluster: Cluster, namespace: str, nowhere_pool: None
) -> None:
    outcomes = server_side_apply(cluster, namespace, [model_service("a" * 64, minimal())])
    assert "metadata.name must be at most 63 characters" in outcomes["a" * 64].message
    pool = {"apiVersion": API, "kind": "GPUPool", "metadata": {"name": "p" * 64}}
    pool["spec"] = example("gpupool-l4.yaml")["spec"]
    assert "at most 63" in server_side_apply(cluster, None, [pool])["p" * 64].message


# --- names that always work ---------------------------------------------------------------------

NAMES = [
    "llama-3.1-8b",
    "7b-chat",
    "x.y",
    "a" * 62 + "x",
    "a" * 62 + "y",  # shortens like the one above
]


def test_model_services_named_like_models_become_ready(
    cluster: Cluster, namespace: str, operator_process: StartOperator, crds_and_pools: None
) -> None:
    operator = operator_process(namespaces=[namespace])
    spec = {"model": {"uri": "hf://Qwen/Qwen3-0.6B"}, "pools": ["l4-on-demand"]}
    spec["resources"] = {"cpu": "1", "memory": "1Gi"}
    outcomes = server_side_apply(cluster, namespace, [model_service(n, spec) for n in NAMES[:4]])
    assert all(o.accepted for o in outcomes.values()), outcomes

    def settled(body: dict[str, Any]) -> bool:
        return any(
            (condition(body, t) or {}).get("status") == "True" for t in ("Ready", "Degraded")
        )

    def all_settled() -> list[dict[str, Any]] | None:
        bodies = [cluster.kubectl_json("get", "ms", n, "-n", namespace) for n in NAMES[:4]]
        return bodies if all(settled(b) for b in bodies) else None

    bodies = wait_until(all_settled, timeout_seconds=180, what="Ready or Degraded on each")
    for body in bodies:
        assert (condition(body, "Ready") or {}).get("status") == "True", body["status"]
    for name in NAMES[:4]:
        for kind in ("deployment", "service", "pdb"):
            found = cluster.kubectl_json(
                "get", kind, "-n", namespace, "-l", f"thrifty.dev/model-service={name}"
            )["items"]
            pools = [o["metadata"]["labels"].get("thrifty.dev/pool") for o in found]
            child = render.engine_name(name)
            if kind == "deployment":
                child = render.deployment_name(name, str(pools[0]))
            assert [o["metadata"]["name"] for o in found] == [child], (kind, name)
    no_traceback(operator)


def test_names_that_collide_after_shortening_get_their_own_children(
    cluster: Cluster, namespace: str, operator_process: StartOperator, nowhere_pool: None
) -> None:
    operator = operator_process(namespaces=[namespace])
    server_side_apply(cluster, namespace, [model_service(n, minimal()) for n in NAMES[3:]])

    def services() -> dict[str, str] | None:
        found = cluster.kubectl_json("get", "services", "-n", namespace)["items"]
        owners = {
            s["metadata"]["labels"]["thrifty.dev/model-service"]: s["metadata"]["name"]
            for s in found
        }
        return owners if len(owners) == 2 else None

    owners = wait_until(services, timeout_seconds=120, what="a Service for each ModelService")
    assert owners == {n: render.engine_name(n) for n in NAMES[3:]}
    assert len(set(owners.values())) == 2
    no_traceback(operator)


# --- fuzz -------------------------------------------------------------------------------------

_INTS = st.one_of(
    st.integers(min_value=-2, max_value=70),
    st.sampled_from([0, 1, 999, 1000, 1001, 65_536, 16_777_216, 16_777_217, 2**31, 2**63 - 1]),
)
_REPLICAS = st.sampled_from([-1, 0, 1, 2, 3, 1001, 2**63 - 1])
"""Replica counts stay small when valid: every accepted object renders real (pending) pods."""
_FLOATS = st.one_of(
    st.floats(min_value=-1, max_value=2000, allow_nan=False),
    st.sampled_from([1e-320, 0.0, 0.01, 0.009, 999.99, 1000.0, 1e6, 1.7e308]),
)
_ARGS = st.sampled_from(
    ["--enable-prefix-caching", "--max-num-batched-tokens", "8192", "-O3", "--por=9000", "-tp",
     "--tensor_parallel_size=2", "--trust-remote-code", "--", "-q", "--seed=-1", "--conf", "x"]
)  # fmt: skip


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


def _clean(body: dict[str, Any]) -> dict[str, Any]:
    """Leave out the fields drawn as None (absent on the wire)."""
    out: dict[str, Any] = {}
    for key, value in body.items():
        if isinstance(value, dict):
            value = _clean(value)
        if value is not None:
            out[key] = value
    return out


_MS_SPEC = st.fixed_dictionaries(
    {
        "model": st.fixed_dictionaries(
            {
                "uri": st.sampled_from(
                    [
                        "hf://Qwen/Qwen3-0.6B",
                        "pvc://weights/llama",
                        "s3://bucket/m/",
                        "hf://Qwen/Qwen3-0.6B",
                        "pvc://weights/llama-3.1/v1",
                        "s3://b.c/x",
                        "pvc://claim/../../etc",
                        "hf://org/a..b",
                        "s3://b/./x",
                        "http://x/y",
                        "hf://org",
                        "pvc://Claim",
                        "hf://org/name with space",
                    ]
                ),
                "revision": _maybe(st.sampled_from(["main", "a/../b", "v1.0", "x" * 129])),
            }
        ),
        "pools": st.lists(
            st.sampled_from([NOWHERE_POOL, NOWHERE_POOL, "l4", "a.b", "p" * 64, "Bad", ""]),
            min_size=1,
            max_size=3,
        ),
        "engine": _maybe(
            st.fixed_dictionaries(
                {
                    "tensorParallelSize": _maybe(_INTS),
                    "pipelineParallelSize": _maybe(_INTS),
                    "maxModelLen": _maybe(_INTS),
                    "maxNumSeqs": _maybe(_INTS),
                    "gpuMemoryUtilization": _maybe(_FLOATS),
                    "shutdownTimeoutSeconds": _maybe(_INTS),
                    "extraArgs": _maybe(st.lists(_ARGS, max_size=3)),
                    "allowUnsafeArgs": _maybe(st.booleans()),
                    "env": _maybe(
                        st.lists(
                            st.fixed_dictionaries(
                                {
                                    "name": st.sampled_from(["FOO", "HF_TOKEN", "VLLM_PORT"]),
                                    "value": st.just("1"),
                                }
                            ),
                            max_size=2,
                        )
                    ),
                }
            )
        ),
        "resources": _maybe(
            st.fixed_dictionaries(
                {
                    "cpu": _maybe(
                        st.sampled_from(["1", "7500m", "0.5", "99999999999999999999999", "1.5m"])
                    ),
                    "memory": _maybe(st.sampled_from(["1Gi", "32K", "64Gi", "1e3", "999999Ti"])),
                }
            )
        ),
        "scaling": _maybe(
            st.fixed_dictionaries(
                {
                    "minReplicas": _maybe(_REPLICAS),
                    "maxReplicas": _maybe(_REPLICAS),
                    "queueDepthTargetPerReplica": _maybe(_FLOATS),
                    "scaleDownDelaySeconds": _maybe(_INTS),
                    "mode": _maybe(st.sampled_from(["Auto", "Manual", "Bogus"])),
                }
            )
        ),
        "latencyTarget": _maybe(
            st.fixed_dictionaries({"timeToFirstTokenP95Seconds": _maybe(_FLOATS)})
        ),
        "costTarget": _maybe(
            st.fixed_dictionaries(
                {
                    "maxDollarsPerHour": _maybe(_FLOATS),
                    "maxDollarsPerMillionTokens": _maybe(_FLOATS),
                    "enforcement": _maybe(st.sampled_from(["Hard", "Soft", "Maybe"])),
                }
            )
        ),
        "replicas": _maybe(_REPLICAS),
    }
).map(_clean)

_POOL_SPEC = st.fixed_dictionaries(
    {
        "accelerator": st.sampled_from(["NVIDIA-L4", "", "x" * 129]),
        "gpuMemoryGib": _FLOATS,
        "gpusPerNode": _INTS,
        "nodeSelector": st.dictionaries(
            st.sampled_from(["thrifty.dev/pool", "k"]),
            st.sampled_from([NOWHERE_POOL, "v" * 64, "bad value"]),
            max_size=2,
        ),
        "pricePerGpuHour": _FLOATS,
        "maxGpus": _maybe(_INTS),
    }
).map(_clean)

_BUDGET_SPEC = st.fixed_dictionaries(
    {"maxDollarsPerHour": _maybe(_FLOATS), "maxDollarsPerMillionTokens": _maybe(_FLOATS)}
).map(_clean)

_NAME_SHAPES = st.sampled_from(["m", "x.y", "7b", "a" * 58, "a" * 59, "llama-3.1"])

_FIELD_NAMED = re.compile(r"(spec[.:\[]|metadata\.name)")


def _valid(model: type[pydantic.BaseModel], spec: dict[str, Any], name: str) -> bool:
    try:
        model.model_validate(spec)
    except pydantic.ValidationError:
        return False
    return len(name) <= 63


def _check_batch(
    outcomes: dict[str, Outcome], bodies: list[dict[str, Any]], model: type[pydantic.BaseModel]
) -> None:
    for body in bodies:
        name = body["metadata"]["name"]
        outcome = outcomes[name]
        expected = _valid(model, body["spec"], name)
        if outcome.accepted:
            assert expected, f"accepted but invalid by the models: {body}"
        else:
            assert not expected, f"refused but valid by the models: {body}\n{outcome.message}"
            # Each clause of the refusal names a field (spec.<path>, or the name rule).
            assert _FIELD_NAMED.search(outcome.message), outcome.message


class _Fuzz:
    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.cluster, self.namespace = cluster, namespace
        self.counter = 0
        self.model_services: list[str] = []
        self.refused = 0
        self.pools: list[str] = []

    def name(self, shape: str) -> str:
        self.counter += 1
        return f"{shape}-{self.counter}"


@pytest.mark.timeout(900)
def test_fuzzed_specs_admission_agrees_with_the_models_and_the_operator_copes(
    cluster: Cluster, namespace: str, operator_process: StartOperator, nowhere_pool: None
) -> None:
    operator = operator_process(namespaces=[namespace])
    fuzz = _Fuzz(cluster, namespace)
    run = secrets.token_hex(2)

    @settings(
        max_examples=20,
        deadline=None,
        database=None,
        # CI replays the same examples (a failure there reproduces); a developer's run explores.
        derandomize=bool(os.environ.get("CI")),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        services=st.lists(st.tuples(_NAME_SHAPES, _MS_SPEC), min_size=6, max_size=6),
        pools=st.lists(_POOL_SPEC, min_size=3, max_size=3),
        budgets=st.lists(_BUDGET_SPEC, min_size=3, max_size=3),
    )
    def batch(
        services: list[tuple[str, dict[str, Any]]],
        pools: list[dict[str, Any]],
        budgets: list[dict[str, Any]],
    ) -> None:
        ms = [model_service(fuzz.name(shape), spec) for shape, spec in services]
        outcomes = server_side_apply(cluster, namespace, ms)
        _check_batch(outcomes, ms, modelservice.ModelServiceSpec)
        fuzz.refused += sum(not o.accepted for o in outcomes.values())
        fuzz.model_services += [
            b["metadata"]["name"] for b in ms if outcomes[b["metadata"]["name"]].accepted
        ]
        gp = [
            {
                "apiVersion": API,
                "kind": "GPUPool",
                "metadata": {"name": f"fuzz-{run}-{fuzz.name('p')}"},
                "spec": s,
            }
            for s in pools
        ]
        pool_outcomes = server_side_apply(cluster, None, gp)
        fuzz.pools += [n for n, o in pool_outcomes.items() if o.accepted]
        _check_batch(pool_outcomes, gp, gpupool.GPUPoolSpec)
        cb = [
            {
                "apiVersion": API,
                "kind": "CostBudget",
                "metadata": {"name": fuzz.name("b")},
                "spec": s,
            }
            for s in budgets
        ]
        _check_batch(server_side_apply(cluster, namespace, cb), cb, costbudget.CostBudgetSpec)

    try:
        batch()

        # Every accepted ModelService is reconciled (a status for its generation) without a
        # traceback: the operator copes with whatever admission lets through.
        def all_observed() -> bool | None:
            items = cluster.kubectl_json("get", "ms", "-n", namespace)["items"]
            pending = [
                i["metadata"]["name"]
                for i in items
                if (i.get("status") or {}).get("observedGeneration") != i["metadata"]["generation"]
            ]
            return True if not pending else None

        wait_until(all_observed, timeout_seconds=180, what="a status on every accepted object")
        print(f"fuzz: {len(fuzz.model_services)} ModelServices accepted, {fuzz.refused} refused")
        assert fuzz.model_services and fuzz.refused, "the fuzz must reach both outcomes"
        no_traceback(operator)
        assert operator.running
    finally:
        if fuzz.pools:
            cluster.kubectl("delete", "gpupool", *fuzz.pools, "--wait=false", check=False)
