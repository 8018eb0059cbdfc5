"""PruneJob finds an amount it cannot meet before it evaluates or scores anything: a MACs target
beyond what the layers' widths allow, limits that leave no channel to cut, a ratio too small to cut
one; an ignored layer given as a string is that layer."""

import pytest

from neurotomy.errors import PruningError
from neurotomy.jobs.prune import PruneJob

QUIET = dict(criterion="taylor", measure_latency=False, quiet=True, recalibrate_images=64)


@pytest.fixture
def no_work(monkeypatch):
    """Evaluating or scoring fails the test: the error must come first."""
    def refuse(*args, **kwargs):
        raise AssertionError("the job evaluated or scored before finding the amount out of reach")

    monkeypatch.setattr("neurotomy.jobs.prune.evaluate", refuse)
    monkeypatch.setattr(PruneJob, "_scores", refuse)


@pytest.mark.parametrize("settings,needle", [
    (dict(target_macs=0.999), r"a macs reduction of 100% cannot be reached: with min_channels=1"),
    (dict(target_params=0.9, min_channels=100), r"a params reduction of 90% cannot be reached: with min_channels=100"),
    (dict(ratio=0.5, min_channels=100), r"ratio 0.5 removes no channel: with min_channels=100 .*lower those limits"),
    (dict(ratio=0.3, round_to=64), r"ratio 0.3 removes no channel: with min_channels=1, round_to=64"),
    (dict(ratio=0.01), r"ratio 0.01 removes no channel: it rounds down to 0 channels"),
    (dict(target_macs=0.999, steps=2), r"a macs reduction of 100% cannot be reached"),
])
def test_an_amount_out_of_reach_fails_before_any_work(lenet_digits, no_work, settings, needle):
    model, train, test = lenet_digits
    with pytest.raises(PruningError, match=needle):
        PruneJob(**QUIET, **settings).run(model, train, test)


def test_an_ignored_layer_given_as_a_string_is_one_layer(lenet_digits, one_thread):
    model, train, test = lenet_digits
    conv = [n for n, m in model.named_modules() if type(m).__name__ == "Conv2d"][0]
    job = dict(criterion="l1", ratio=0.5, measure_latency=False, quiet=True, recalibrate_images=64)
    _, record = PruneJob(**job, ignored_layers=conv).run(model, train, test)
    assert conv not in record["channels"] and record["channels"]
    with pytest.raises(PruningError, match=f"ignored layer '{conv}x' is not in the model"):
        PruneJob(**job, ignored_layers=conv + "x")._validate(model)
