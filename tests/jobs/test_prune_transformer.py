"""PruneJob on a transformer: heads and neurons scored by a transformer criterion, cut, reloaded."""

import json

import pytest
import torch

from neurotomy.checkpoint import save_checkpoint
from neurotomy.errors import NeurotomyError
from neurotomy.jobs.prune import PruneJob
from neurotomy.loading import load_model
from neurotomy.models.transformer import attention_sites, mlp_sites


def test_neurons_cut_to_a_macs_target_and_heads_by_ratio_reload(vit_digits, tmp_path):
    model, train, test = vit_digits
    job = PruneJob(criterion="taylor", target_macs=0.2, units="neurons", measure_latency=False,
                   score_images=128, quiet=True)
    pruned, record = job.run(model, train, test)
    assert record["units"] == ["neuron"] and record["acc_original"] > 0.8
    assert abs(record["macs_reduction"] - 0.2) <= 0.02  # 32 neurons per block: fine enough steps
    assert record["acc_recalibrated"] == record["acc_pruned"] and "nothing" in record["recalibration"]  # LayerNorm
    assert [s.num_heads for s in attention_sites(pruned)] == [2, 2]
    assert record["acc_pruned"] > 0.5
    # heads and neurons by ratio: one ratio for both families, so one of the two heads of each block goes
    both, record = PruneJob(criterion="l1", ratio=0.5, units="heads,neurons", measure_latency=False,
                            quiet=True).run(model, train, test)
    assert [s.num_heads for s in attention_sites(both)] == [1, 1]
    assert [s.hidden for s in mlp_sites(both)] == [16, 16]
    for cut in (pruned, both):
        reloaded = load_model(save_checkpoint(cut, cut.neurotomy_meta, tmp_path / "vit.safetensors"))
        x = torch.stack([test[i][0] for i in range(8)])
        torch.testing.assert_close(reloaded(x), cut.eval()(x))


def test_a_target_over_several_families_is_split_by_calibration_loss(vit_digits):
    """PruneJob hands the transformer surgery seeded training batches, so the split of a MACs target
    between heads, neurons and the residual stream is chosen by measured loss — the same on a rerun."""
    model, train, test = vit_digits
    job = PruneJob(criterion="l1", target_macs=0.3, units="all", measure_latency=False, quiet=True)
    first, record = job.run(model, train, test)
    again, rerun = job.run(model, train, test)
    assert record["allocation"]["chosen_by"] == "calibration loss" and record["allocation"]["candidates_measured"] > 1
    assert record["calibration_images"] == 512
    assert record["allocation"] == rerun["allocation"] and abs(record["macs_reduction"] - 0.3) <= 0.01
    x = torch.stack([test[i][0] for i in range(8)])
    torch.testing.assert_close(first.eval()(x), again.eval()(x))


def test_transformer_settings_are_checked_before_work(vit_digits):
    model, train, test = vit_digits
    with pytest.raises(NeurotomyError, match="does not score transformer heads"):
        PruneJob(criterion="hrank", ratio=0.3, units="heads").run(model, train, test)
    with pytest.raises(NeurotomyError, match="unit kind|units"):
        PruneJob(criterion="l1", ratio=0.3, units="filters").run(model, train, test)
    with pytest.raises(NeurotomyError, match="one step"):
        PruneJob(criterion="l1", target_macs=0.3, steps=2).run(model, train, test)
    cnn = load_model("zoo:lenet5-digits")
    with pytest.raises(NeurotomyError, match="applies to transformers"):
        PruneJob(criterion="l1", ratio=0.3, units="heads").run(cnn, train, test)


def test_a_latency_target_cuts_a_transformer_through_the_job_and_the_cli(vit_digits, tmp_path, capsys):
    """--target-speedup on a transformer: the job searches the MACs target by timing the cut (here on a
    runtime whose latency is affine in the MACs, so the figures are exact), and the CLI writes the model."""
    from neurotomy.cli import main
    from neurotomy.surgery.latency import LATENCY_RUNTIMES
    from neurotomy.models.summary import count_macs_params
    from tests.surgery.test_transformer_latency import AffineRuntime

    if "affine" not in LATENCY_RUNTIMES:
        LATENCY_RUNTIMES.add("affine", AffineRuntime)
    model, train, test = vit_digits
    job = PruneJob(criterion="l1", target_speedup=1.4, units="heads,neurons", latency_runtime="affine", threads=1,
                   latency_batch=4, measure_latency=False, quiet=True)
    pruned, record = job.run(model, train, test)
    shape = model.neurotomy_meta.input_shape
    speedup = count_macs_params(model, shape)[0] / count_macs_params(pruned, shape)[0]  # the runtime is linear
    assert record["target_speedup"] == 1.4 and record["speedup_measured"] == pytest.approx(speedup)
    assert abs(speedup / 1.4 - 1) <= 0.15 and record["latency_attempts"]
    path = save_checkpoint(model, model.neurotomy_meta, tmp_path / "vit.safetensors")
    out = tmp_path / "cut.safetensors"
    assert main(["prune", str(path), "--data", "digits", "--criterion", "l1", "--units", "heads,neurons",
                 "--target-speedup", "1.4", "--latency-runtime", "affine", "--threads", "1", "--latency-batch", "4",
                 "--no-latency", "--out", str(out), "--json", "--quiet"]) == 0
    cli_record = json.loads(capsys.readouterr().out)
    assert cli_record["speedup_measured"] == pytest.approx(record["speedup_measured"]) and out.exists()


def test_a_transformer_latency_prune_prints_its_table_without_a_prediction(vit_digits, tmp_path, capsys):
    """The transformer's cut is timed, not predicted from a table: the text output says what was measured."""
    from neurotomy.cli import main
    from neurotomy.surgery.latency import LATENCY_RUNTIMES
    from tests.surgery.test_transformer_latency import AffineRuntime

    if "affine" not in LATENCY_RUNTIMES:
        LATENCY_RUNTIMES.add("affine", AffineRuntime)
    model = vit_digits[0]
    path = save_checkpoint(model, model.neurotomy_meta, tmp_path / "vit.safetensors")
    out = tmp_path / "cut.safetensors"
    assert main(["prune", str(path), "--data", "digits", "--criterion", "l1", "--units", "heads,neurons",
                 "--target-speedup", "1.4", "--latency-runtime", "affine", "--threads", "1", "--latency-batch", "4",
                 "--no-latency", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "latency target:" in printed and "measured" in printed and "predicted" not in printed and out.exists()


def test_a_model_too_costly_to_calibrate_gets_the_data_free_split(vit_digits, monkeypatch):
    # each calibration candidate runs the model on every calibration image: past the MACs budget for even
    # 16 images (a MaxViT-T at 224 px took 180 s and 3.6 GB on 64) the split is chosen without data
    model, train, test = vit_digits
    monkeypatch.setattr("neurotomy.jobs.prune.CALIBRATION_MACS", 1.0)
    _, record = PruneJob(criterion="l1", target_macs=0.3, units="all", measure_latency=False,
                         quiet=True).run(model, train, test)
    assert record["calibration_images"] == 0 and record["allocation"]["chosen_by"] != "calibration loss"
    assert abs(record["macs_reduction"] - 0.3) <= 0.01
