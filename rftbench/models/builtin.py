"""Built-in networks for CPU work: the demo's small CNN and a small ResNet for 32 px inputs.

Names: ``small_cnn`` / ``small_resnet`` (or ``builtin:<name>``). ``pretrained: true`` means the
embedded non-robust checkpoint (plainly trained on digits 0-4, cached; see
:mod:`rftbench.embedded`).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from ..errors import CheckpointError
from ..registry import Registry
from ..spec import DataSpec
from .checkpoints import checkpoint_spec, load_checkpoint
from .core import MODEL_FAMILIES, PixelModel, name_check, spec_reader


class SmallCNN(nn.Module):
    """A 4-layer CNN for small grayscale or colour images (the embedded default's network)."""

    def __init__(self, num_classes: int = 10, in_chans: int = 1, width: int = 32):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
            nn.Conv2d(w, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(inplace=True),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.num_features = 2 * w
        self.head = nn.Linear(self.num_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        self.head = nn.Linear(self.num_features, num_classes).to(self.head.weight.device)


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = (nn.Sequential() if stride == 1 and cin == cout else
                      nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.short(x))


class SmallResNet(nn.Module):
    """A ResNet-8-style network for 32 px inputs (3 stages of one basic block)."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3, width: int = 16):
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(in_chans, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True))
        self.layers = nn.Sequential(_BasicBlock(w, w, 1), _BasicBlock(w, 2 * w, 2), _BasicBlock(2 * w, 4 * w, 2))
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.num_features = 4 * w
        self.head = nn.Linear(self.num_features, num_classes)

    def forward(self, x):
        return self.head(self.pool(self.layers(self.stem(x))))

    get_classifier = SmallCNN.get_classifier
    reset_classifier = SmallCNN.reset_classifier


@dataclass(frozen=True)
class BuiltinModel:
    """A built-in network: its constructor, default kwargs and input spec."""

    build: Callable[..., nn.Module]
    spec: DataSpec
    kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""


BUILTIN_MODELS: Registry[BuiltinModel] = Registry("built-in model")
BUILTIN_MODELS.add("small_cnn", BuiltinModel(SmallCNN, DataSpec((1, 16, 16), (0.5,), (0.5,)), {"in_chans": 1},
                                             "4-layer CNN, 16 px grayscale (the demo's network)"))
BUILTIN_MODELS.add("small_resnet", BuiltinModel(SmallResNet, DataSpec((3, 32, 32), (0.4914, 0.4822, 0.4465),
                                                                      (0.2470, 0.2435, 0.2616)), {"in_chans": 3},
                                                "ResNet-8-style network for 32 px colour images"))


@name_check("builtin")
def _check_builtin(rest: str) -> None:
    BUILTIN_MODELS.get(rest)


def _spec_with(entry: BuiltinModel, kwargs: dict) -> DataSpec:
    """The entry's spec, with the channel count of ``in_chans`` (one channel's mean/std repeated)."""
    merged = {**entry.kwargs, **kwargs}
    spec = entry.spec
    if "in_chans" in merged and merged["in_chans"] != spec.input_size[0]:
        c = merged["in_chans"]
        spec = DataSpec((c, *spec.input_size[1:]), spec.mean[:1] * c if len(spec.mean) != c else spec.mean,
                        spec.std[:1] * c if len(spec.std) != c else spec.std)
    return spec


@spec_reader("builtin")
def builtin_spec(rest: str, *, pretrained: bool, weights: str | None, kwargs: dict) -> DataSpec:
    """A weights file's own architecture; the embedded checkpoint is built with the entry's
    kwargs; else the entry's spec with ``kwargs`` applied."""
    entry = BUILTIN_MODELS.get(rest)
    if weights is not None:
        return checkpoint_spec(weights)
    return _spec_with(entry, {} if pretrained else kwargs)


# Where a pretrained built-in's weights come from. rftbench.embedded pretrains them with the
# Trainer, a layer above this package, so it registers its provider here from above; the first
# pretrained built-in loads that module by name when nothing registered yet (as a registry loads
# its built-in plugins). Nothing in rftbench.models imports it.
CHECKPOINT_PROVIDER_MODULE = "rftbench.embedded"
_checkpoint_provider: list[Callable[[str], Any]] = []


def register_checkpoint_provider(provider: Callable[[str], Any]) -> Callable[[str], Any]:
    """``provider(name)``: the path of the pretrained checkpoint of built-in ``name``."""
    _checkpoint_provider[:] = [provider]
    return provider


def _embedded_checkpoint(rest: str) -> str:
    if not _checkpoint_provider:  # only a pretrained built-in needs it
        importlib.import_module(CHECKPOINT_PROVIDER_MODULE)
    return str(_checkpoint_provider[0](rest))


@MODEL_FAMILIES.register("builtin")
def builtin_model(rest: str, num_classes: int, *, pretrained: bool, weights: str | None, kwargs: dict) -> PixelModel:
    """small_cnn | small_resnet | builtin:<name> -- rftbench's CPU-sized networks; pretrained = the
    embedded non-robust checkpoint (plain training on digits 0-4, cached)."""
    entry = BUILTIN_MODELS.get(rest)
    merged = {**entry.kwargs, **kwargs}
    spec = _spec_with(entry, kwargs)
    arch = {"name": f"builtin:{rest}", "num_classes": num_classes, "kwargs": merged, "spec": spec.to_dict()}
    embedded = weights is None and pretrained
    if embedded:
        weights = _embedded_checkpoint(rest)
    if weights is not None:
        model = load_checkpoint(weights)
        if model.arch["name"] != arch["name"]:
            raise CheckpointError(f"weights {weights} hold a {model.arch['name']} model, not {arch['name']}.")
        if model.num_classes != num_classes:
            model.reset_classifier(num_classes)
        if embedded:  # its head was trained for the source task only
            model.head_task = {"name": "digits", "options": {"task": "source"}}
        return model
    model = PixelModel(entry.build(num_classes=num_classes, **merged), spec, arch)
    model.fresh_head = True  # randomly initialised
    return model
