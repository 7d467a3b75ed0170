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
                    "options": meta.options, "augmentation": ("pad-crop" if meta.low_res else "resized-crop")
                    + ("+flip" if meta.hflip else ""), "augment_default": meta.default_augment})
    return out
