"""The bench/ scripts as modules for the tests: they are scripts, not a package."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).parents[3] / "bench"


def load(name: str) -> ModuleType:
    """bench/<name>.py, imported once under its own module name; its neighbours (run.py,
    shapes.py) import as the script does, from bench/ on the path while it loads."""
    module_name = f"thrifty_bench_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(module_name, BENCH / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))
