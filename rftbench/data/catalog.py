"""What ``rftbench datasets list`` shows."""
from __future__ import annotations

from typing import Any

from .core import DATASET_META, DATASETS


def describe_datasets() -> list[dict[str, Any]]:
    """One JSON-able record per registered dataset (third-party ones show their docstring)."""
    out = []
    for e in DATASETS.entries():
        meta = DATASET_META.get(e.name)
        if meta is None:
            out.append({"name": e.name, "title": " ".join((e.obj.__doc__ or "").split())[:120], "source": e.source})
            continue
        out.append({"name": meta.name, "title": meta.title, "source": meta.source, "num_classes": meta.num_classes,
                    "splits": meta.splits, "layout": meta.layout, "download": meta.download or None,
                    "options": meta.options, "augmentation": _augmentation(meta),
                    "augment_default": meta.default_augment})
    return out


def _augmentation(meta) -> str:
    """What the default preset does to this dataset, in a word or two (pad-crop+flip, ...)."""
    preset = meta.default_augment
    if preset not in ("crop", "crop_flip", "randaugment"):
        return preset
    crop = "pad-crop" if meta.low_res else "resized-crop"
    flip = "+flip" if preset == "crop_flip" or (preset == "randaugment" and meta.hflip) else ""
    return crop + flip + ("+randaugment" if preset == "randaugment" else "")
