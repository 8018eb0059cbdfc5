"""The benchmark scripts (``benchmarks/*.py`` are scripts, not a package), loaded as modules so their
logic can be tested.

Example:
    >>> load_benchmark("audit_provenance").audit.__name__
    'audit'
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(script: str, name: str | None = None) -> ModuleType:
    """``benchmarks/<script>.py`` executed as the module ``name`` (default ``script``; give another where
    the script's own name would shadow a package, e.g. ``vit``). ``benchmarks/`` goes on ``sys.path`` so
    the script's imports of its neighbours (``tp_baselines``, …) resolve, and the module is registered
    in ``sys.modules`` because dataclasses look their module up there."""
    name = name or script
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
