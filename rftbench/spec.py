"""What a model expects of its input: :class:`DataSpec`, shared by models and data.

It sits in its own module, below both :mod:`rftbench.models` and :mod:`rftbench.data`, so that a
dataset can follow a model's input size and interpolation without importing the model registry.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class DataSpec:
    """What a model expects of its input.

    ``input_size`` is (C, H, W) in pixels; ``mean`` / ``std`` are the per-channel constants the
    model's :class:`~rftbench.models.Normalize` applies to [0,1] images; ``interpolation``
    (``bilinear``, ``bicubic``, ``nearest``) and ``crop_pct`` (centre crop = input size / resize
    size) say how evaluation images are resized, as the family's pretrained data config says.
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
