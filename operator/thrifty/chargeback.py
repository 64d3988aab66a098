"""Chargeback: each tenant's share of what a ModelService cost, and the buy-or-build answer.

A ModelService's cost over a period is its $/hour integrated over the period (the operator's
`thrifty_modelservice_cost_dollars_per_hour`: every replica-hour, idle ones included). Each tenant
is charged the share of it that its tokens (prompt + completion, metered by the gateway) are of all
tokens the ModelService served in that period: the same as pricing its tokens at the realised
$/1M tokens of the period, idle time included, and the tenants' charges add up to the ModelService's
cost exactly. Beside it, the same tokens at the ModelService's reference price
(`spec.costTarget.referenceDollarsPerMillionTokens`, input and output priced apart): what buying
them would have cost.

Pure: numbers in, lines out; Decimal for every sum of money (design.md). The PromQL that feeds it is
in `thrifty.adapters.chargeback`; `thrifty report` prints it as CSV, JSON or Markdown.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

TOKENS_PER_MILLION = Decimal(1_000_000)
CENT = Decimal("0.000001")
"""Report precision: a millionth of a dollar, so lines add up visibly to the total."""

ServiceKey = tuple[str, str]


@dataclass(frozen=True)
class TenantUsage:
    """Tokens one tenant had one ModelService produce in one period."""

    period: str
    tenant: str
    namespace: str
    model_service: str
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class ServiceCost:
    """What one ModelService cost in one period, and its reference price if it has one."""

    period: str
    namespace: str
    model_service: str
    dollars: Decimal
    reference_input_per_million: Decimal | None = None
    reference_output_per_million: Decimal | None = None


@dataclass(frozen=True)
class ChargeLine:
    period: str
    tenant: str
    namespace: str
    model_service: str
    prompt_tokens: int
    completion_tokens: int
    dollars: Decimal
    dollars_per_million_tokens: Decimal | None
    reference_dollars: Decimal | None

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


UNMETERED = "(unmetered)"
"""The tenant of a period's cost no tenant's tokens account for (no traffic, or traffic that did
not pass the gateway): charged to nobody, but shown, so the lines add up to the whole cost."""


def allocate(usage: Iterable[TenantUsage], costs: Iterable[ServiceCost]) -> list[ChargeLine]:
    """One line per period, tenant and ModelService; sorted. A ModelService's cost in a period
    with no tokens at all goes to the `UNMETERED` line."""
    by_service: dict[tuple[str, str, str], list[TenantUsage]] = {}
    for item in usage:
        by_service.setdefault((item.period, item.namespace, item.model_service), []).append(item)
    cost_of = {(c.period, c.namespace, c.model_service): c for c in costs}
    lines: list[ChargeLine] = []
    for key in sorted(set(by_service) | set(cost_of)):
        cost = cost_of.get(key)
        dollars = cost.dollars if cost else Decimal(0)
        items = [i for i in by_service.get(key, []) if i.prompt_tokens + i.completion_tokens > 0]
        total = sum(i.prompt_tokens + i.completion_tokens for i in items)
        if total == 0:
            if dollars:
                lines.append(
                    ChargeLine(key[0], UNMETERED, key[1], key[2], 0, 0, _money(dollars), None, None)
                )
            continue
        realised = dollars * TOKENS_PER_MILLION / total
        for item in items:
            tokens = item.prompt_tokens + item.completion_tokens
            reference = None
            if cost and cost.reference_input_per_million is not None:
                output_price = cost.reference_output_per_million or Decimal(0)
                reference = _money(
                    (
                        item.prompt_tokens * cost.reference_input_per_million
                        + item.completion_tokens * output_price
                    )
                    / TOKENS_PER_MILLION
                )
            lines.append(
                ChargeLine(
                    key[0],
                    item.tenant,
                    key[1],
                    key[2],
                    item.prompt_tokens,
                    item.completion_tokens,
                    _money(dollars * tokens / total),
                    _money(realised),
                    reference,
                )
            )
    return sorted(
        lines, key=lambda line: (line.period, line.namespace, line.model_service, line.tenant)
    )


def _money(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_HALF_EVEN)


# -- formats ------------------------------------------------------------------------------------

COLUMNS = (
    "period",
    "tenant",
    "namespace",
    "model_service",
    "prompt_tokens",
    "completion_tokens",
    "dollars",
    "dollars_per_million_tokens",
    "reference_dollars",
)


def _row(line: ChargeLine) -> list[str]:
    def text(value: Decimal | None) -> str:
        return "" if value is None else str(value)

    return [
        line.period,
        line.tenant,
        line.namespace,
        line.model_service,
        str(line.prompt_tokens),
        str(line.completion_tokens),
        text(line.dollars),
        text(line.dollars_per_million_tokens),
        text(line.reference_dollars),
    ]


def to_csv(lines: Sequence[ChargeLine]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(_row(line) for line in lines)
    return out.getvalue()


def to_json(lines: Sequence[ChargeLine]) -> str:
    """Money as strings (exact decimals), tokens as integers."""
    rows = []
    for line in lines:
        row: dict[str, object] = dict(zip(COLUMNS, _row(line), strict=True))
        row["prompt_tokens"] = line.prompt_tokens
        row["completion_tokens"] = line.completion_tokens
        rows.append(row)
    total = sum((line.dollars for line in lines), Decimal(0))
    return json.dumps({"lines": rows, "total_dollars": str(total)}, indent=2)


def to_markdown(lines: Sequence[ChargeLine]) -> str:
    header = "| " + " | ".join(COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
    body = ["| " + " | ".join(_row(line)) + " |" for line in lines]
    total = sum((line.dollars for line in lines), Decimal(0))
    return "\n".join([header, rule, *body, "", f"Total: ${total}"]) + "\n"
