"""PruneJob (neurotomy.jobs.prune): a fine-tune that made the model worse is not kept (unless
forced); an interrupted fine-tune resumes from its state to the very weights of an uninterrupted one."""

import pytest
import torch

from neurotomy.errors import NeurotomyError, NeurotomyWarning
from neurotomy.jobs.prune import PruneJob
from neurotomy.run_state import RunState

JOB = dict(criterion="l1", target_macs=0.3, measure_latency=False, quiet=True, recalibrate_images=256)


def _ruin(model, *args, **kwargs):
    """A 'fine-tune' that makes the model worse."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(0)) * 0.5)
    return []


def test_the_fine_tune_recipe_reaches_finetune(lenet_digits, monkeypatch, one_thread):
    model, train, test = lenet_digits
    seen = {}

    def _record(model, data, epochs, **kwargs):
        seen.update(kwargs, epochs=epochs)
        return []

    monkeypatch.setattr("neurotomy.jobs.prune.finetune", _record)
    PruneJob(**JOB, finetune_epochs=2, finetune_lr=0.003, finetune_batch=32, distill=True, distill_temperature=3.0,
             distill_alpha=0.7, force=True).run(model, train, test)
    assert (seen["epochs"], seen["lr"], seen["batch_size"]) == (2, 0.003, 32)
    assert (seen["distill_temperature"], seen["distill_alpha"]) == (3.0, 0.7)
    assert isinstance(seen["teacher"], torch.nn.Module) and seen["teacher"] is not model
    seen.clear()
    PruneJob(**JOB, finetune_epochs=1, force=True).run(model, train, test)
    # without distill no teacher; the weights default to the recipe that lost least at −85 % MACs
    assert seen["teacher"] is None and (seen["distill_temperature"], seen["distill_alpha"]) == (2.0, 0.9)


@pytest.mark.parametrize("settings, needle", [({"distill_alpha": 1.2}, "distill_alpha"),
                                              ({"distill_temperature": 0.0}, "distill_temperature"),
                                              ({"finetune_batch": 0}, "finetune_batch")])
def test_a_bad_fine_tune_recipe_is_refused_before_any_work(lenet_digits, monkeypatch, settings, needle):
    model, train, test = lenet_digits
    monkeypatch.setattr("neurotomy.jobs.prune.evaluate", lambda *a, **k: pytest.fail("evaluated before the check"))
    with pytest.raises(NeurotomyError, match=needle):
        PruneJob(**JOB, finetune_epochs=1, **settings).run(model, train, test)


def test_a_fine_tune_that_lowers_accuracy_is_not_kept_unless_forced(lenet_digits, monkeypatch, one_thread):
    model, train, test = lenet_digits
    monkeypatch.setattr("neurotomy.jobs.prune.finetune", _ruin)
    with pytest.warns(NeurotomyWarning, match="fine-tuning lowered test accuracy"):
        pruned, record = PruneJob(**JOB, finetune_epochs=1).run(model, train, test)
    assert record["kept"] == "recalibrated" and record["acc_finetuned"] < record["acc_recalibrated"]
    assert "kept the model before fine-tuning" in record["note"]
    assert record["comparison"]["pruned"]["accuracy"] == record["acc_recalibrated"]
    assert pruned.neurotomy_meta.metrics["test"]["accuracy"] == record["acc_recalibrated"]

    _, record = PruneJob(**JOB, finetune_epochs=1, force=True).run(model, train, test)
    assert record["kept"] == "finetuned" and "note" not in record
    assert record["comparison"]["pruned"]["accuracy"] == record["acc_finetuned"]


class _NotScoring:
    default_images = 640

    def __call__(self, *args, **kwargs):
        raise AssertionError("a resumed prune scored again")


def test_prune_fine_tune_resumes_to_the_same_weights(lenet_digits, tmp_path, monkeypatch, one_thread):
    model, train, test = lenet_digits
    job = PruneJob(**JOB, finetune_epochs=3, force=True)
    expected, expected_record = job.run(model, train, test)

    save_fit = RunState.save_fit

    def crash_after_epoch_1(self, key, fingerprint, epoch, *args):
        save_fit(self, key, fingerprint, epoch, *args)
        if epoch == 1:
            raise RuntimeError("killed")

    monkeypatch.setattr(RunState, "save_fit", crash_after_epoch_1)
    with pytest.raises(RuntimeError), RunState.beside(tmp_path / "pruned.safetensors") as state:
        job.run(model, train, test, state=state)
    monkeypatch.undo()
    monkeypatch.setattr("neurotomy.jobs.prune.get_criterion", lambda name: _NotScoring())  # the saved scores are used
    with RunState.beside(tmp_path / "pruned.safetensors", resume=True) as state:
        pruned, record = job.run(model, train, test, state=state)
    assert not state.path.exists()
    for (name, a), b in zip(pruned.state_dict().items(), expected.state_dict().values()):
        assert torch.equal(a, b), name
    assert record["acc_finetuned"] == expected_record["acc_finetuned"]
