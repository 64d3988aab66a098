"""Every THRIFTY_* variable the package reads is documented (docs/operations.md, docs/api.md or,
for `thrifty simulate`, docs/simulator.md) by its full name: a setting that is read but not
written down is one nobody can use or review."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ("operations.md", "api.md", "simulator.md")
OPERATOR = ROOT / "operator" / "thrifty"


def read_variables() -> set[str]:
    names: set[str] = set()
    for path in OPERATOR.rglob("*.py"):
        text = path.read_text()
        names |= set(re.findall(r"\bTHRIFTY_[A-Z][A-Z0-9_]*[A-Z0-9]\b", text))
        if 'ENV_PREFIX = "THRIFTY_PROMETHEUS_"' in text:
            names |= {f"THRIFTY_PROMETHEUS_{n}" for n in re.findall(r'get\("([A-Z_]+)"\)', text)}
    names.discard("THRIFTY_PROMETHEUS")
    return names


def test_every_variable_the_operator_reads_is_documented() -> None:
    read = read_variables()
    assert "THRIFTY_SCALE_DOWN_STEP_SECONDS" in read and "THRIFTY_PROMETHEUS_CA_FILE" in read
    docs = "".join((ROOT / "docs" / name).read_text() for name in DOCS)
    documented = set(re.findall(r"\bTHRIFTY_[A-Z][A-Z0-9_]*[A-Z0-9]\b", docs))
    missing = sorted(read - documented)
    assert not missing, f"read but not documented in docs/{{{','.join(DOCS)}}}: {missing}"
