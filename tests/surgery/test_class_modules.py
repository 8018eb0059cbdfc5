import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from neurotomy.checkpoint import save_checkpoint
from neurotomy.data import load_dataset
from neurotomy.data.tensor_dataset import Normalization, TensorImageDataset
from neurotomy.errors import NeurotomyError
from neurotomy.loading import load_checkpoint, load_model
from neurotomy.scores.classwise import ClassActivation
from neurotomy.jobs.split import split
from neurotomy.surgery.class_modules import module_class_index, module_metrics, module_set_metrics, one_vs_rest
from neurotomy.surgery.class_search import GAConfig


class KnownFilters(nn.Module):
    """Filter c (c < 4) sees only input channel c, the class-c signal; filters 4…7 see all
    channels weakly and the same for every class; logit c reads filter c."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4)
        with torch.no_grad():
            self.conv.weight.zero_()
            for c in range(4):
                self.conv.weight[c, c, 1, 1] = 1.0
            self.conv.weight[4:, :, 1, 1] = 0.05
            self.fc.weight.zero_()
            self.fc.bias.zero_()
            for c in range(4):
                self.fc.weight[c, c] = 12.0  # confident (softmax ≥ 0.9), as CNNSplitter's relevance needs
        self.eval()

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.relu(self.bn(self.conv(x)))), 1))


def _known_data(n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    images = 0.1 * torch.rand(n, 4, 8, 8, generator=g)
    images[torch.arange(n), labels] += 0.5 + 0.5 * torch.rand(n, 8, 8, generator=g)
    return TensorImageDataset(images, labels, ["a", "b", "c", "d"], Normalization((0.0,) * 4, (1.0,) * 4))


@pytest.mark.parametrize("search", ["threshold", "ga"])
def test_module_keeps_the_filters_its_class_uses(search):
    model, train, test = KnownFilters(), _known_data(), _known_data(200, seed=1)
    assert (model(test.images).argmax(1) == test.targets).all()
    scores = ClassActivation()(model, train, quiet=True)
    assert scores.info["images_per_class"] == [100] * 4
    modules = []
    for c in range(4):
        module = split(model, train, c, scores=scores, search=search, ga=GAConfig(population=8, generations=6),
                       calibration_images=200, finetune_epochs=1, finetune_images=200, quiet=True)
        assert module.kept["conv"] == [c]
        assert module.model.conv.out_channels == 1 and module.model.fc.out_features == 2
        assert module.kept_fraction == 1 / 8 and module.macs < module.macs_original
        metrics = module_metrics(module.model, test, c)
        assert metrics["balanced_accuracy"] >= 0.95 and metrics["recall"] >= 0.9
        modules.append(module)
    assert module_set_metrics(modules) == {"coupling": 0.0, "cohesion": 1.0, "modules": 4}


def test_module_saves_and_loads_without_pickle(tmp_path):
    model = load_model("zoo:lenet5-digits")
    train, test = load_dataset("digits"), load_dataset("digits", split="test")
    module = split(model, train, 3, calibration_images=200, finetune_epochs=1, finetune_images=300,
                   seed=1, quiet=True)
    assert sum(m.out_channels for m in module.model.modules() if isinstance(m, nn.Conv2d)) < 22
    path = save_checkpoint(module.model, module.model.neurotomy_meta, tmp_path / "class3")
    assert path.name == "class3.safetensors" and set(load_file(str(path))) == set(module.model.state_dict())
    loaded = load_checkpoint(path)
    x = test.images[:64]
    assert torch.equal(loaded(x), module.model(x))
    assert module_class_index(loaded) == 3 and loaded.neurotomy_meta.classes == ["not 3", "3"]
    metrics = module_metrics(loaded, test)
    assert metrics["class"] == 3 and metrics["recall"] > 0.8 and metrics["precision"] > 0.6


def test_one_vs_rest_is_balanced_and_split_rejects_bad_requests():
    data = _known_data()
    ovr = one_vs_rest(data, 2, max_images=60)
    assert len(ovr) == 60 and int(ovr.targets.sum()) == 30
    assert ((data.images[:, 2].mean((1, 2)) > 0.4).sum() == 100)  # sanity of the fixture
    model = KnownFilters()
    with pytest.raises(NeurotomyError, match="out of range"):
        split(model, data, 4, quiet=True)
    with pytest.raises(NeurotomyError, match="unknown search"):
        split(model, data, 0, search="annealing", quiet=True)
    with pytest.raises(NeurotomyError, match="not a class module"):
        module_class_index(load_model("zoo:lenet5-digits"))
