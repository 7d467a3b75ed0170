"""The model abstraction every family builds: :class:`PixelModel` on [0,1] images.

A model name is ``<family>:<rest>`` (a bare name is a built-in); :data:`MODEL_FAMILIES` maps
the family to a factory ``factory(rest, num_classes, *, pretrained, weights, kwargs)`` that
returns a :class:`PixelModel`. :func:`create_model` is the one door.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..errors import CheckpointError
from ..registry import Registry
from .heads import get_head, reset_head


@dataclass(frozen=True)
class DataSpec:
    """What a model expects of its input.

    ``input_size`` is (C, H, W) in pixels; ``mean`` / ``std`` are the per-channel constants the
    model's :class:`Normalize` applies to [0,1] images; ``interpolation`` (``bilinear``,
    ``bicubic``, ``nearest``) and ``crop_pct`` (centre crop = input size / resize size) say how
    evaluation images are resized, as the family's pretrained data config says.
    """

    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"
    crop_pct: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DataSpec":
        return cls(
            input_size=tuple(d["input_size"]), mean=tuple(d["mean"]), std=tuple(d["std"]),
            interpolation=d.get("interpolation", "bilinear"), crop_pct=float(d.get("crop_pct", 1.0)),
        )


class Normalize(nn.Module):
    """(x - mean) / std with per-channel constants kept as buffers (they follow .to(device))."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class PixelModel(nn.Module):
    """A classifier on [0,1] images: ``net(normalize(x))``; x is (N, C, H, W), logits (N, classes).

    ``arch`` is a JSON-able spec (``{"name", "num_classes", "kwargs", "spec"}``) from which
    :func:`create_model` rebuilds the same architecture, so a state dict plus ``arch`` is a
    complete, code-free checkpoint.
    """

    def __init__(self, net: nn.Module, spec: DataSpec, arch: dict[str, Any]):
        super().__init__()
        self.normalize = Normalize(spec.mean, spec.std)
        self.net = net
        self.spec = spec
        self.arch = arch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))

    @property
    def num_classes(self) -> int:
        return int(self.arch["num_classes"])

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classification head by a fresh ``num_classes``-way one (timm's
        ``reset_classifier`` where the network has it, else its last linear layer)."""
        reset_head(self.net, num_classes)
        self.arch = {**self.arch, "num_classes": num_classes}

    def head_parameters(self) -> list[nn.Parameter]:
        return list(get_head(self.net).parameters())


# A model family turns the part of a model name after "<family>:" into a PixelModel.
ModelFactory = Callable[..., PixelModel]
MODEL_FAMILIES: Registry[ModelFactory] = Registry("model family", entry_point_group="rftbench.models")

# Optional per-family name checks that need neither network nor weights (used to validate
# configs and experiment grids before any work is done). A check raises an RftbenchError.
NAME_CHECKS: dict[str, Callable[[str], None]] = {}


def name_check(family: str) -> Callable[[Callable[[str], None]], Callable[[str], None]]:
    """Decorator: register the offline name check of ``family``."""

    def deco(fn: Callable[[str], None]) -> Callable[[str], None]:
        NAME_CHECKS[family] = fn
        return fn

    return deco


def split_name(name: str) -> tuple[str, str]:
    """``"timm:resnet18.a1_in1k"`` -> ``("timm", "resnet18.a1_in1k")``; bare names are built-ins."""
    family, sep, rest = name.partition(":")
    if not sep:
        return "builtin", name
    return family, rest


def check_model_name(name: str) -> None:
    """Check that ``name`` resolves (family known, architecture / tag / zoo entry exists)
    without building the model or touching the network. Raises an RftbenchError if not."""
    family, rest = split_name(name)
    MODEL_FAMILIES.get(family)  # unknown family -> the list of known ones
    check = NAME_CHECKS.get(family)
    if check is not None:
        check(rest)


def create_model(name: str, num_classes: int, *, pretrained: bool = True, weights: str | None = None,
                 kwargs: dict | None = None) -> PixelModel:
    """Build the model ``name`` with a ``num_classes``-way head, taking images in [0,1].

    ``pretrained``: the family's pretrained weights (hub / zoo / embedded checkpoint);
    ``weights``: a local file that replaces them (safetensors or a weights-only torch file).
    The head is replaced for ``num_classes`` whatever the weights were trained for.
    """
    family, rest = split_name(name)
    factory = MODEL_FAMILIES.get(family)
    if weights is not None and not Path(weights).expanduser().is_file():
        raise CheckpointError(f"weights file {weights!r} does not exist; set model.weights to an existing file.")
    model = factory(rest, num_classes, pretrained=pretrained, weights=weights, kwargs=dict(kwargs or {}))
    if num_classes and model.num_classes != num_classes:
        model.reset_classifier(num_classes)
    return model
