"""Chargeback: tenants' shares add up to the ModelService's cost; reference prices; formats;
and the adapter's reading of Prometheus answers (with a fake query function)."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

from thrifty import chargeback
from thrifty.adapters import chargeback as queries


def test_tenants_share_a_model_services_cost_by_tokens_and_add_up_to_it_exactly() -> None:
    usage = [
        chargeback.TenantUsage("2026-12-01", "alpha", "team", "chat", 600_000, 150_000),
        chargeback.TenantUsage("2026-12-01", "beta", "team", "chat", 200_000, 50_000),
        chargeback.TenantUsage("2026-12-01", "gamma", "team", "chat", 0, 0),
    ]
    costs = [
        chargeback.ServiceCost(
            "2026-12-01", "team", "chat", Decimal("60.00"), Decimal("3"), Decimal("15")
        ),
        chargeback.ServiceCost("2026-12-01", "team", "idle", Decimal("12.50")),
    ]
    lines = chargeback.allocate(usage, costs)
    by_tenant = {(line.model_service, line.tenant): line for line in lines}
    alpha, beta = by_tenant[("chat", "alpha")], by_tenant[("chat", "beta")]
    assert alpha.dollars == Decimal("45.000000") and beta.dollars == Decimal("15.000000")
    assert alpha.dollars_per_million_tokens == beta.dollars_per_million_tokens == Decimal("60")
    # 600k input at $3/1M + 150k output at $15/1M
    assert alpha.reference_dollars == Decimal("4.050000")
    assert by_tenant[("idle", chargeback.UNMETERED)].dollars == Decimal("12.500000")
    assert ("chat", "gamma") not in by_tenant
    assert sum(line.dollars for line in lines) == Decimal("72.5")


def test_formats_carry_the_same_lines_and_total() -> None:
    lines = chargeback.allocate(
        [chargeback.TenantUsage("2026-12-01", "alpha", "team", "chat", 1, 2)],
        [chargeback.ServiceCost("2026-12-01", "team", "chat", Decimal("1.5"))],
    )
    csv_text = chargeback.to_csv(lines)
    assert csv_text.splitlines()[1] == "2026-12-01,alpha,team,chat,1,2,1.500000,500000.000000,"
    assert json.loads(chargeback.to_json(lines))["total_dollars"] == "1.500000"
    assert "Total: $1.500000" in chargeback.to_markdown(lines)


def test_the_adapter_reads_tokens_cost_and_reference_price_per_period() -> None:
    start = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    asked: list[tuple[str, float]] = []

    def fake(promql: str, at: float) -> list[dict[str, Any]]:
        asked.append((promql, at))
        if "thrifty_gateway_tokens_total" in promql:
            return [
                {"metric": {"tenant": "alpha", "namespace": "team", "modelservice": "chat",
                            "kind": kind}, "value": [at, value]}
                for kind, value in (("prompt", "99.6"), ("completion", "10"))
            ]  # fmt: skip
        if "cost_dollars_per_hour" in promql:
            return [{"metric": {"namespace": "team", "modelservice": "chat"}, "value": [at, "48"]}]
        return [
            {"metric": {"namespace": "team", "modelservice": "chat", "kind": "prompt"},
             "value": [at, "3"]},
        ]  # fmt: skip

    usage, costs = queries.read(fake, start, start + dt.timedelta(days=2), dt.timedelta(days=1))
    assert [u.period for u in usage] == ["2026-12-01", "2026-12-02"]
    assert (usage[0].prompt_tokens, usage[0].completion_tokens) == (100, 10)
    assert costs[0].dollars == Decimal("48") and costs[0].reference_input_per_million == 3
    assert asked[0][1] == (start + dt.timedelta(days=1)).timestamp()
    assert "[86400s]" in asked[0][0] and "[86400s:60s]" in asked[-2][0] + asked[-1][0]
