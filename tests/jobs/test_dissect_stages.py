"""The dissect stages added for deployment, directions/concepts and transformers, each checked
against an independent computation (hooks and formulas written here, scipy's Spearman)."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from neurotomy.checkpoint import ModelMeta
from neurotomy.data.subsets import balanced_indices, balanced_subset
from neurotomy.dynamics.features import default_layers
from neurotomy.dynamics.modularity import modularity_curve
from neurotomy.errors import ModelError, NeurotomyError
from neurotomy.jobs.budget import parse_budget
from neurotomy.jobs.dissect_stages import (concept_records, deployment_available, deployment_records,
                                           reason_methods, transformer_readout, transformer_records,
                                           transformer_score_records, transformer_scores)
from neurotomy.quantize import Int8Error

TINY = replace(parse_budget("tiny"), deploy_calibration_images=16, deploy_latency_batch=4, deploy_reason_images=2)


@pytest.fixture(scope="module")
def vit_scores(vit_digits):
    model, train, _ = vit_digits
    return transformer_scores(model, train, ["l1", "l2", "taylor"], 64)


def _naive_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA (Kornblith et al. 2019, eq. 5): ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F), features centred."""
    x, y = x.double() - x.double().mean(0), y.double() - y.double().mean(0)
    return float((y.T @ x).norm() ** 2 / ((x.T @ x).norm() * (y.T @ y).norm()))


def test_transformer_records_against_hooks_and_direct_calls(vit_digits, vit_scores):
    model, _, test = vit_digits
    test = balanced_subset(test, 200, 0)
    random_state = torch.get_rng_state()
    record = transformer_records(model, model, test, TINY, vit_scores["taylor"])
    assert torch.equal(torch.get_rng_state(), random_state)  # an optional stage draws nothing from the global state
    heads = vit_scores["taylor"]["head"]
    assert record["heads"]["layers"] == ["blocks.0.attn", "blocks.1.attn"]
    assert record["heads"]["values"] == [heads[name].tolist() for name in record["heads"]["layers"]]
    assert record["units"]["heads"]["original"] == [2, 2] and record["units"]["neurons"]["original"] == [32, 32]
    # each view's curve is the curve of that view alone (same probe set, same graphs)
    for view in ("cls", "patches"):
        alone = modularity_curve(model, test, layers=default_layers(model, f":{view}"), per_class=10,
                                 graph_size=100, seed=0, quiet=True)
        assert record["modularity"]["views"][view]["q"] == pytest.approx(alone.q, abs=1e-6)
    # CKA between blocks: features taken here by hooks on the blocks (class token; mean of the 4 patch tokens)
    cka = record["cka"]
    per_class = TINY.cka_samples // len(test.classes)
    images = torch.stack([test[int(i)][0] for i in balanced_indices(torch.as_tensor(test.targets), per_class, 0)])
    outputs = {}
    hooks = [model.blocks[i].register_forward_hook(lambda m, a, out, i=i: outputs.__setitem__(i, out.detach()))
             for i in range(2)]
    with torch.no_grad():
        model(images)
    for h in hooks:
        h.remove()
    views = {f"blocks.{i}:cls": outputs[i][:, 0] for i in range(2)}
    views |= {f"blocks.{i}:patches": outputs[i][:, 1:].mean(1) for i in range(2)}
    for a, row in zip(cka["layers_a"], cka["values"]):
        for b, value in zip(cka["layers_b"], row):
            assert value == pytest.approx(_naive_cka(views[a], views[b]), abs=1e-4), (a, b)


def test_transformer_score_agreement_is_spearman_over_heads_and_per_mlp(vit_scores):
    record = transformer_score_records(vit_scores, "l1")
    assert [c["name"] for c in record["criteria"]] == ["l1", "l2", "taylor"]
    assert [c["needs"] for c in record["criteria"]] == ["weights", "weights", "data"]
    a, b = vit_scores["l1"], vit_scores["taylor"]
    heads = spearmanr(torch.cat([a["head"][n] for n in a["head"]]), torch.cat([b["head"][n] for n in b["head"]]))
    mlps = [spearmanr(a["neuron"][n], b["neuron"][n]).statistic for n in a["neuron"]]
    expected = np.mean([heads.statistic, *mlps])
    assert record["agreement"][0][2] == pytest.approx(expected, abs=1e-6) == record["agreement"][2][0]
    assert record["per_layer"]["layers"] == ["heads (all blocks)", "blocks.0.mlp.fc1", "blocks.1.mlp.fc1"]


def test_the_readout_is_where_a_transformers_relevance_lives(vit_digits):
    """After the final LayerNorm, Σ a·∂y/∂a is the logit's share through the classifier; before it, the
    norm's scale invariance makes it ~0 (so relevance shares of block-output directions are meaningless)."""
    model, _, test = vit_digits
    assert transformer_readout(model) == "norm"
    images, labels = next(iter(torch.utils.data.DataLoader(test, batch_size=64)))
    totals = {}
    for name in ("blocks.1", "norm"):
        seen = {}
        hook = model.get_submodule(name).register_forward_hook(lambda m, a, out: seen.setdefault("a", out))
        logits = model(images)
        hook.remove()
        grad, = torch.autograd.grad(logits.gather(1, labels[:, None]).sum(), seen["a"])
        totals[name] = float((seen["a"] * grad).sum())
    assert abs(totals["blocks.1"]) < 0.01 * abs(totals["norm"])


def test_attention_rollout_joins_the_reasons_of_a_transformer(vit_digits, lenet_digits):
    assert reason_methods(vit_digits[0]) == ("gradcam", "gradient", "pathway", "rollout")
    assert reason_methods(lenet_digits[0]) == ("gradcam", "gradient", "pathway")


@pytest.mark.skipif(not deployment_available(), reason="onnxruntime not installed")
def test_deployment_records_keep_no_paths_and_fall_back_to_fp32(lenet_digits, monkeypatch, one_thread):
    import neurotomy.jobs.deploy as deploy

    model, train, test = lenet_digits
    test = balanced_subset(test, 100, 0)
    random_state = torch.get_rng_state()
    record = deployment_records(model, model, train, test, TINY, quiet=True)
    assert torch.equal(torch.get_rng_state(), random_state)  # an optional stage draws nothing from the global state
    assert [(r["model"], r["format"]) for r in record["rows"]] == [
        (m, f) for m in ("original", "pruned") for f in ("torch", "onnx-fp32", "onnx-int8")]
    assert record["int8_refused"] is None and record["settings"]["calibration_images"] == 16
    assert all("path" not in r for r in record["rows"])
    assert all("path" not in e for files in record["files"].values() for e in files.values())

    def refuse_int8(*args, **kwargs):
        raise Int8Error("onnxruntime cannot quantize op Einsum of this model")
    monkeypatch.setattr(deploy, "quantize_int8", refuse_int8)
    fallback = deployment_records(model, model, train, test, TINY, quiet=True)
    # the op named, and what dissect did instead — not the deploy command's "--int8" (dissect has none)
    assert fallback["int8_refused"].startswith("onnxruntime cannot quantize op Einsum of this model, so this section "
                                               "shows the fp32 ONNX files only, the pruned one as the deployed model")
    assert "--int8" not in fallback["int8_refused"] and "\n" not in fallback["int8_refused"]
    assert {r["format"] for r in fallback["rows"]} == {"torch", "onnx-fp32"}

    def refuse_export(*args, **kwargs):
        raise ModelError("ONNX cannot export op Foo")
    monkeypatch.setattr(deploy, "export_onnx", refuse_export)
    assert deployment_records(model, model, train, test, TINY, quiet=True)["skipped"] == "ONNX cannot export op Foo"


def test_concepts_of_a_model_without_conv_or_block_are_skipped_with_the_reason(lenet_digits):
    _, train, test = lenet_digits
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    record = concept_records(mlp, train, test, TINY, None, quiet=True)
    assert "no residual block or conv layer" in record["skipped"]


def test_dissect_refuses_what_it_cannot_do_before_any_work(vit_digits, tmp_path, monkeypatch):
    import neurotomy.jobs.dissect as job

    model, train, test = vit_digits
    with pytest.raises(NeurotomyError, match="does not score a transformer's heads and MLP neurons"):
        job.dissect(model, train, test, tmp_path, budget="tiny", criterion="fpgm", quiet=True)
    monkeypatch.setattr(job, "deployment_available", lambda: False)
    with pytest.raises(NeurotomyError, match="needs onnx and onnxruntime"):
        job.dissect(model, train, test, tmp_path, budget="tiny", deploy=True, quiet=True)
    assert list(tmp_path.iterdir()) == []


class FunctionalRelu(nn.Module):
    """Its activation called as a function, or (``relu=False``) no activation at all; its input shape recorded."""

    def __init__(self, relu: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4, 10)
        self.relu = relu
        self.neurotomy_meta = ModelMeta("user", {"in_channels": 1, "input_size": 8, "num_classes": 10})

    def forward(self, x):
        x = self.conv(x)
        return self.fc((torch.relu(x) if self.relu else x).mean((2, 3)))


def test_pathway_masks_called_activations_and_is_skipped_with_a_note_for_a_model_without_any(lenet_digits):
    from neurotomy.jobs.dissect_stages import reason_records
    from neurotomy.errors import NeurotomyWarning

    torch.manual_seed(0)
    data = balanced_subset(lenet_digits[2], 10, 0)
    functional = FunctionalRelu().eval()
    assert reason_methods(functional) == ("gradcam", "gradient", "pathway")
    record, _ = reason_records(functional, functional, data, methods=reason_methods(functional))
    assert "pathway" in record["agreement"]["methods"] and not record.get("skipped")
    model = FunctionalRelu(relu=False).eval()
    assert reason_methods(model) == ("gradcam", "gradient")
    with pytest.warns(NeurotomyWarning, match="pathway explanation is skipped: the model has no activation module"):
        record, _ = reason_records(model, model, data, methods=reason_methods(model))
    assert "pathway" in record["skipped"] and set(record["agreement"]["methods"]) == {"gradcam", "gradient"}
