import os

import pytest
import torch

from neurotomy import timing
from neurotomy.timing import BusyMachineWarning, interleaved_timing, torch_threads, wait_until_quiet


@pytest.fixture
def load(monkeypatch):
    """Set the 1-minute load seen by the helpers: ``load.value = x``."""
    class Load:
        value = 0.0
    monkeypatch.setattr(os, "getloadavg", lambda: (Load.value,) * 3)
    return Load


def test_rounds_alternate_the_order(load):
    calls = []
    functions = [lambda name=name: calls.append(name) for name in "abc"]
    interleaved_timing(functions, rounds=4, repeats=2, warmup=1, warn=False)
    warmup, timed = calls[:3], calls[3:]
    assert warmup == ["a", "b", "c"]
    assert timed == list("aabbcc" "ccbbaa" "aabbcc" "ccbbaa")


def test_median_and_min_per_call(monkeypatch, load):
    """A fake clock: each call advances it by the next of its function's durations (seconds)."""
    clock = [0.0]
    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock[0])

    def taking(*per_round):  # two calls per round (repeats=2), each as long as its round says
        durations = [d for d in per_round for _ in range(2)]
        return lambda: clock.__setitem__(0, clock[0] + durations.pop(0))
    result = interleaved_timing([taking(0.003, 0.001, 0.002), taking(0.010, 0.030, 0.020)],
                                rounds=3, repeats=2, warmup=0, warn=False)
    assert result[0]["median_ms"] == pytest.approx(2.0) and result[0]["min_ms"] == pytest.approx(1.0)
    assert result[1]["median_ms"] == pytest.approx(20.0) and result[1]["min_ms"] == pytest.approx(10.0)
    assert result[0]["rounds"] == 3 and result[0]["repeats"] == 2


def test_load_and_threads_recorded_and_one_line_warning_when_busy(load):
    cores = os.cpu_count()
    load.value = 0.5 * cores + 0.5
    with pytest.warns(BusyMachineWarning) as caught:
        result = interleaved_timing([lambda: None], rounds=2, repeats=1, warmup=0)
    assert len(caught) == 1 and "\n" not in str(caught[0].message)
    assert f"{load.value:.2f}" in str(caught[0].message)
    assert result[0]["load_average"] == [load.value, load.value] and result[0]["machine_busy"]
    assert result[0]["threads"] == torch.get_num_threads()


def test_no_warning_on_a_quiet_machine(load, recwarn):
    load.value = 0.5 * os.cpu_count()  # at the threshold: not above it
    result = interleaved_timing([lambda: None], rounds=1, repeats=1, warmup=0)
    assert not [w for w in recwarn if issubclass(w.category, BusyMachineWarning)]
    assert result[0]["machine_busy"] is False


def test_threads_one_is_used_and_restored(load):
    before = torch.get_num_threads()
    seen = []
    result = interleaved_timing([lambda: seen.append(torch.get_num_threads())], rounds=2, repeats=1, warmup=1,
                                threads=1, warn=False)
    assert set(seen) == {1} and result[0]["threads"] == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError):
        with torch_threads(1):
            raise RuntimeError
    assert torch.get_num_threads() == before


def test_rounds_and_repeats_must_be_positive():
    with pytest.raises(ValueError):
        interleaved_timing([lambda: None], rounds=0)


def test_wait_until_quiet_polls_then_gives_up(load, monkeypatch):
    cores = os.cpu_count()
    slept = []
    load.value = cores  # busy
    assert wait_until_quiet(30, poll_s=10, sleep=slept.append) is False
    assert slept == [10, 10, 10]

    def calm_down(seconds):
        slept.append(seconds)
        load.value = 0.0
    slept.clear()
    load.value = cores
    assert wait_until_quiet(30, poll_s=10, sleep=calm_down) is True and slept == [10]
    assert wait_until_quiet(0, sleep=lambda s: pytest.fail("a quiet machine needs no wait")) is True


def test_require_quiet_machine_refuses_or_warns_when_it_stays_busy(load):
    from neurotomy.timing import BusyMachineError, require_quiet_machine

    load.value = os.cpu_count()
    no_sleep = lambda s: None  # noqa: E731
    with pytest.raises(BusyMachineError, match="--allow-busy"):
        require_quiet_machine(30, sleep=no_sleep)
    with pytest.warns(BusyMachineWarning):
        assert require_quiet_machine(30, allow_busy=True, sleep=no_sleep) is False
    load.value = 0.0
    assert require_quiet_machine(30, sleep=no_sleep) is True
