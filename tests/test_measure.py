import torch

from neurotomy.checkpoint import ModelMeta
from neurotomy.measure import checkpoint_size, compare_models, interleaved_latency
from neurotomy.models import build_model
from neurotomy.scores import get_criterion
from neurotomy.surgery.filters import prune_filters


def test_compare_models_record():
    args = {"in_channels": 1, "num_classes": 10, "input_size": 28}
    model = build_model("resnet20", **args).eval()
    model.neurotomy_meta = ModelMeta("resnet20", args)
    pruned = prune_filters(model, get_criterion("l1")(model), target_macs=0.5).model
    metrics = {"accuracy": 0.5, "per_class_recall": [0.5] * 10}
    record = compare_models(model, pruned, (1, 28, 28), metrics, metrics, latency_batches=(1, 8))
    assert record["macs_ratio"] > 1.9 and record["params_ratio"] > 1.5
    assert record["pruned"]["file_bytes"] < record["original"]["file_bytes"]
    for key in ("latency_b1", "latency_b8"):
        for side in ("original", "pruned"):
            t = record[side][key]
            assert 0 < t["min_ms"] <= t["median_ms"]
    assert record["threads"] == torch.get_num_threads()
    assert len(record["load_average"]) == 2 and isinstance(record["machine_busy"], bool)
    assert record["original"]["latency_b8"]["load_average"] == record["pruned"]["latency_b8"]["load_average"]
    assert record["speedup_batch8"] == record["original"]["latency_b8"]["median_ms"] / record["pruned"]["latency_b8"]["median_ms"]


def test_checkpoint_size_matches_saved_file(tmp_path):
    from neurotomy.checkpoint import save_checkpoint
    model = build_model("lenet5", 1, 10, 8)
    meta = ModelMeta("lenet5", {"in_channels": 1, "num_classes": 10, "input_size": 8})
    model.neurotomy_meta = meta
    assert checkpoint_size(model) == save_checkpoint(model, meta, tmp_path / "m").stat().st_size


def test_latency_leaves_models_in_eval_and_untouched():
    model = build_model("lenet5", 1, 10, 28)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    interleaved_latency([model], (1, 28, 28), batch_size=2, rounds=2, repeats=1)
    assert not model.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_latency_is_timed_without_autograd():
    """A timed forward records no graph (inference, as deployed and as the latency table times layers):
    the model sees inference mode on every call, warm-up included."""
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, x):
            seen.append((torch.is_inference_mode_enabled(), torch.is_grad_enabled()))
            return x * 2

    interleaved_latency([Spy()], (1, 4, 4), batch_size=2, rounds=2, repeats=1, warmup=1)
    assert len(seen) == 3 and set(seen) == {(True, False)}


def test_compare_models_single_threaded_and_without_latency():
    model = build_model("lenet5", 1, 10, 28).eval()
    before = torch.get_num_threads()
    record = compare_models(model, model, (1, 28, 28), latency_batches=(2,), threads=1)
    assert record["threads"] == 1 and record["original"]["latency_b2"]["threads"] == 1
    assert torch.get_num_threads() == before
    record = compare_models(model, model, (1, 28, 28), latency_batches=())
    assert record["load_average"] is None and record["threads"] == before
