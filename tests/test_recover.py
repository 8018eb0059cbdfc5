import pytest
import torch
from torch import nn

from neurotomy.data import load_dataset
from neurotomy.errors import ModelError, OptionError
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


def _distilled(temperature: float, alpha: float, teacher: bool = True) -> list[torch.Tensor]:
    data = load_dataset("digits")
    torch.manual_seed(0)
    teacher_model = build_model("vgg11_bn", 1, 10, 8).eval()
    torch.manual_seed(1)
    student = build_model("vgg11_bn", 1, 10, 8)
    finetune(student, data, epochs=1, lr=0.05, batch_size=64, quiet=True, max_images=256,
             teacher=teacher_model if teacher else None, distill_temperature=temperature, distill_alpha=alpha)
    return [p.detach().clone() for p in student.parameters()]


def test_distillation_weight_and_temperature_reach_the_loss():
    # alpha 0 leaves only the hard-label loss: the same steps as no teacher at all
    for a, b in zip(_distilled(4.0, 0.0), _distilled(4.0, 0.5, teacher=False)):
        torch.testing.assert_close(a, b)
    # with the soft loss weighted in, the temperature changes the steps taken
    t2, t8 = _distilled(2.0, 0.9), _distilled(8.0, 0.9)
    assert max((a - b).abs().max().item() for a, b in zip(t2, t8)) > 1e-4


def test_distillation_temperature_must_be_positive():
    with pytest.raises(OptionError, match="distill_temperature"):
        _distilled(0.0, 0.5)


@pytest.mark.parametrize("teacher, needle", [
    (build_model("lenet5", 3, 10, 8), "does not run on this data's (1, 8, 8) images"),
    (build_model("lenet5", 1, 7, 8), "the teacher returns (2, 7) for 2 images but the model returns (2, 10)"),
])
def test_a_teacher_for_other_inputs_or_classes_is_one_line_before_any_step(teacher, needle):
    data = load_dataset("digits")
    student = build_model("lenet5", 1, 10, 8)
    before = [p.detach().clone() for p in student.parameters()]
    student.train()
    with pytest.raises(ModelError) as err:
        finetune(student, data, epochs=1, lr=0.05, quiet=True, max_images=64, teacher=teacher)
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert student.training and all(torch.equal(a, b) for a, b in zip(before, student.parameters()))
