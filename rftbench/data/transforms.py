"""Image transforms that follow the model's data spec and never normalise (the model does).

Evaluation: resize the shorter side to ``size / crop_pct`` with the spec's interpolation, then
centre-crop to the input size (timm's and torchvision's eval recipe). Training augmentation
is a named preset (:mod:`rftbench.data.augment`). Grayscale images are repeated to three
channels for colour models (and colour images converted to gray for one-channel models).
"""
from __future__ import annotations

import math
from typing import Callable

from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from ..errors import ConfigError
from ..spec import DataSpec


class ToMode:
    """Convert a PIL image to ``"RGB"`` or ``"L"`` (a no-op when it already is)."""

    def __init__(self, mode: str):
        self.mode = mode

    def __call__(self, img):
        return img if img.mode == self.mode else img.convert(self.mode)

    def __repr__(self) -> str:
        return f"ToMode({self.mode!r})"


def _mode(spec: DataSpec) -> str:
    c = spec.input_size[0]
    if c not in (1, 3):
        raise ConfigError(f"image datasets feed 1- or 3-channel models; this model wants {c} channels.")
    return "RGB" if c == 3 else "L"


def _interpolation(spec: DataSpec) -> InterpolationMode:
    try:
        return InterpolationMode(spec.interpolation)
    except ValueError:
        return InterpolationMode.BILINEAR


def eval_transform(spec: DataSpec) -> Callable:
    """PIL image -> float tensor (C, H, W) in [0,1]: resize to size/crop_pct, centre crop."""
    _, h, w = spec.input_size
    interp = _interpolation(spec)
    crop_pct = spec.crop_pct or 1.0
    scale = math.floor(h / crop_pct) if h == w else (math.floor(h / crop_pct), math.floor(w / crop_pct))
    return T.Compose([ToMode(_mode(spec)), T.Resize(scale, interpolation=interp), T.CenterCrop((h, w)),
                      T.ToTensor()])


def describe(transform: Callable) -> str:
    """A one-line description of a transform (recorded in ``Splits.info``)."""
    return " ".join(repr(transform).split())
