"""What the cross-checks share: cached independent expected values, and one thread for tiny tensors.

An expected value (a hand loop, a reference library, a Monte Carlo estimate) does not depend on the
code under test, so it is computed once per set of inputs and reused — the mutation check
(:mod:`tests.mutants`) then re-runs only the method under test for each mutant.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

import torch

CHECK_THREADS = 1


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run with one torch thread, restoring the previous setting. The cross-checks' tensors are
    small: two threads gain little on them, and on the shared 2-core machine, busy with other jobs,
    two threads per op made them 10–30× slower (a ResNet-20 integrated-gradients check: 30 s with
    two threads, 1 s with one, at a load average of 7)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(CHECK_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


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
