"""Caching of independent expected values, shared by the cross-checks and the mutation check.

An expected value (a hand loop, a reference library, a Monte Carlo estimate) does not depend on the
code under test, so it is computed once per set of inputs and reused — the mutation check
(:mod:`tests.mutants`) then re-runs only the method under test for each mutant.
"""

from __future__ import annotations

import functools
from typing import Any, Callable


def expected_value(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Cache ``fn`` by the identity of its arguments (models, tensors and datasets are not hashable
    by value); the arguments are kept alive with the value so that an identity is never reused."""
    cache: dict[tuple, tuple[Any, tuple]] = {}

    @functools.wraps(fn)
    def cached(*args: Any) -> Any:
        key = tuple(id(a) for a in args)
        if key not in cache:
            cache[key] = (fn(*args), args)
        return cache[key][0]
    return cached
