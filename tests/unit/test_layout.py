"""Test modules need unique names: pytest imports them by basename (no packages in tests/ or e2e/),
and a second module of the same name is not collected, or is collected in place of the first."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_every_test_module_name_is_unique_across_tests_and_e2e() -> None:
    names = Counter(
        path.name
        for folder in ("tests", "e2e")
        for path in (REPO_ROOT / folder).rglob("*.py")
        if path.name != "__init__.py" and path.name != "conftest.py"
    )
    assert [name for name, count in names.items() if count > 1] == []
