import pytest
import torch
from torch import nn

from neurotomy.errors import ModelError
from neurotomy.probe import FunctionProbe, Probe


def test_hooks_removed_even_on_error():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())

    def boom(name, out):
        raise RuntimeError("reducer failed")
    with pytest.raises(RuntimeError, match="reducer failed"):
        with Probe(model, ["0", "1"], on_output=boom):
            model(torch.zeros(1, 1, 4, 4))
    assert all(len(m._forward_hooks) == 0 for m in model.modules())


def test_output_replacement_and_gradients():
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 1))
    grads = {}
    with Probe(model, ["1"], on_output=lambda n, o: o * 0, on_grad=lambda n, o, g: grads.update({n: g})):
        out = model(torch.ones(2, 3))
        out.sum().backward()
    assert torch.allclose(out, model[2].bias.expand(2, 1))
    assert grads["1"].shape == (2, 3)


def test_unknown_layer():
    with pytest.raises(ModelError, match="no layer 'nope'"):
        Probe(nn.Linear(1, 1), ["nope"])


def test_gradient_replacement_against_a_hand_computation():
    """Scale the gradient at the ReLU's output per unit; the first layer's weight gradient is then
    ((r ⊙ 1[z > 0])ᵀ x) with r the scaled ∂L/∂h = w₂ — by hand — while the last layer's is untouched."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    x = torch.randn(5, 3)
    scale = torch.tensor([1.0, -2.0, 0.5, 3.0])
    with Probe(model, ["1"], on_grad=lambda n, o, g: g * scale):
        model(x).sum().backward()
    with torch.no_grad():
        z = model[0](x)
        h = z.relu()
        replaced = model[2].weight.expand(5, 4) * scale  # ∂(Σ out)/∂h = w₂ for every image, then scaled
        dz = replaced * (z > 0)
    assert 0 < int((z > 0).sum()) < z.numel()  # the ReLU gate matters
    torch.testing.assert_close(model[0].weight.grad, dz.T @ x)
    torch.testing.assert_close(model[0].bias.grad, dz.sum(0))
    torch.testing.assert_close(model[2].weight.grad, h.sum(0, keepdim=True))
    assert all(not m._forward_hooks for m in model.modules())


def test_gradient_replacement():
    # on_grad may return the gradient to propagate instead (how neurotomy.grad_mask filters it).
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 1))
    with Probe(model, ["0"], on_grad=lambda n, o, g: torch.zeros_like(g)):
        model(torch.ones(2, 3)).sum().backward()
    assert torch.count_nonzero(model[0].weight.grad) == 0 and torch.count_nonzero(model[2].weight.grad) > 0
    plain = torch.autograd.grad(model(torch.ones(2, 3)).sum(), model[0].weight)[0]
    with Probe(model, ["0"], on_grad=lambda n, o, g: None):  # None: the gradient passes unchanged
        observed = torch.autograd.grad(model(torch.ones(2, 3)).sum(), model[0].weight)[0]
    assert torch.equal(plain, observed) and torch.count_nonzero(plain) > 0
    assert all(not m._forward_hooks for m in model.modules())


def test_function_probe_sees_calls_outside_the_given_modules_only_and_leaves_no_hook():
    relu = nn.ReLU()

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.relu = relu

        def forward(self, x):
            return torch.nn.functional.relu(self.relu(x) - 1.0)  # the module calls F.relu too

    seen = []
    with FunctionProbe([torch.nn.functional.relu], on_output=lambda name, out: seen.append(name) or out + 10,
                       outside=[relu]):
        y = Net()(torch.full((2,), 3.0))
    assert seen == ["relu"] and y.tolist() == [12.0, 12.0]  # one call seen, its output replaced
    with pytest.raises(RuntimeError, match="boom"):
        with FunctionProbe([torch.nn.functional.relu], on_output=lambda name, out: 1 / 0, outside=[relu]):
            raise RuntimeError("boom")
    assert not relu._forward_hooks and not relu._forward_pre_hooks
    assert torch.nn.functional.relu(torch.tensor([-1.0])).item() == 0.0  # the mode is off again


def test_on_enter_sees_each_call_start_before_what_runs_inside():
    model = nn.Sequential(nn.Sequential(nn.Linear(2, 2), nn.ReLU()), nn.Linear(2, 1))
    events = []
    with Probe(model, ["0", "0.0", "1"], on_enter=lambda name, module, inputs: events.append(("start", name)),
               on_module=lambda name, module, inputs, output: events.append(("end", name))):
        model(torch.zeros(1, 2))
    assert events == [("start", "0"), ("start", "0.0"), ("end", "0.0"), ("end", "0"), ("start", "1"), ("end", "1")]
    assert not model[0]._forward_pre_hooks and not model[1]._forward_hooks
