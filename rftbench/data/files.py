"""A dataset over a list of image files, read with torchvision's default loader (PIL, RGB)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from torch.utils.data import Dataset


class ImageFileList(Dataset):
    """``(PIL image, label)`` for each (path, label); images are decoded on access."""

    def __init__(self, paths: Sequence[Path], labels: Sequence[int]):
        assert len(paths) == len(labels)
        self.paths, self.labels = list(paths), [int(v) for v in labels]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from torchvision.datasets.folder import default_loader

        return default_loader(str(self.paths[i])), self.labels[i]


def path_of_sample(base: Any, i: int) -> str | None:
    """The file behind sample ``i`` of a file-backed dataset (rftbench's or torchvision's), if known."""
    for attr in ("paths", "_image_files", "_images"):
        seq = getattr(base, attr, None)
        if seq is not None:
            return str(seq[i])
    for attr in ("samples", "_samples"):
        seq = getattr(base, attr, None)
        if seq is not None:
            return str(seq[i][0])
    return None
