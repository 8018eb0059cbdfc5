import torch
from torch import nn

from neurotomy.data import load_dataset
from neurotomy.models import build_model
from neurotomy.recover import finetune, recalibrate_batchnorm
from neurotomy.train import evaluate


def test_recalibration_equals_exact_statistics():
    data = load_dataset("digits")
    torch.manual_seed(0)
    model = build_model("vgg11_bn", 1, 10, 8).eval()
    used = recalibrate_batchnorm(model, data, images=len(data), batch_size=len(data), quiet=True)
    assert used == len(data)
    first_bn = model.features[1]
    with torch.no_grad():
        conv_out = model.features[0](data.images)
    torch.testing.assert_close(first_bn.running_mean, conv_out.mean((0, 2, 3)), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(first_bn.running_var, conv_out.var((0, 2, 3), unbiased=True), atol=1e-5, rtol=1e-4)
    assert first_bn.momentum == 0.1 and not model.training
    assert all(p.grad is None for p in model.parameters())


def test_recalibration_repairs_wrong_statistics():
    data, test = load_dataset("digits"), load_dataset("digits", split="test")
    model = build_model("vgg11_bn", 1, 10, 8)
    finetune(model, data, epochs=4, lr=0.05, batch_size=32, quiet=True)
    good = evaluate(model, test, quiet=True)["accuracy"]
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.add_(1.0)
            m.running_var.mul_(4.0)
    broken = evaluate(model, test, quiet=True)["accuracy"]
    recalibrate_batchnorm(model, data, quiet=True)
    repaired = evaluate(model, test, quiet=True)["accuracy"]
    assert broken < good - 0.2
    assert repaired > good - 0.03
