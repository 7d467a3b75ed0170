"""Dataset registry: train / val / test splits of images in [0,1] (never normalised here).

A dataset factory takes the :class:`~rftbench.config.DataConfig`, the model's
:class:`~rftbench.models.DataSpec` (input size, interpolation) and a seed, and returns
:class:`Splits`. Where a dataset has no validation split, a seeded, stratified one is carved
from train and recorded in ``Splits.info``. Tuning uses val, never test.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .config import DataConfig
from .errors import ConfigError
from .models import DataSpec
from .registry import Registry


@dataclass
class Splits:
    """The three splits of one task. Each item is ``(image float32 (C,H,W) in [0,1], label int)``."""

    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    class_names: list[str]
    info: dict[str, Any] = field(default_factory=dict)

    def split(self, name: str) -> Dataset:
        if name not in ("train", "val", "test"):
            raise ConfigError(f"unknown split {name!r}; use train, val or test.")
        return getattr(self, name)


DatasetFactory = Callable[[DataConfig, DataSpec, int], Splits]
DATASETS: Registry[DatasetFactory] = Registry("dataset", entry_point_group="rftbench.datasets")


class TensorImageDataset(Dataset):
    """Images held in memory as one float tensor (N, C, H, W) in [0,1] plus int64 labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable | None = None):
        assert images.ndim == 4 and len(images) == len(labels)
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x = self.images[i]
        return (self.transform(x) if self.transform else x), int(self.labels[i])

    def __getitems__(self, idx: Sequence[int]):  # batched fetch: one gather instead of N
        idx_t = torch.as_tensor(idx)
        xs = self.images[idx_t]
        if self.transform is not None:
            xs = torch.stack([self.transform(x) for x in xs])
        return list(zip(xs, self.labels[idx_t].tolist()))

    @property
    def targets(self) -> list[int]:
        return self.labels.tolist()


def stratified_split(labels: Sequence[int], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices so that about ``fraction`` of each class goes to the second part.

    Returns (kept, carved) index arrays, each sorted. Deterministic in ``seed``.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    kept, carved = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        k = int(round(len(idx) * fraction))
        carved.append(idx[:k])
        kept.append(idx[k:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(carved))


def indices_sha256(indices: Sequence[int]) -> str:
    """sha256 of an index list (as little-endian int64), recorded with every result that used it."""
    return hashlib.sha256(np.asarray(indices, dtype="<i8").tobytes()).hexdigest()


def eval_subset_indices(n_total: int, n_samples: int, seed: int) -> np.ndarray:
    """A fixed, seeded evaluation subset: ``min(n_samples, n_total)`` sorted indices."""
    if n_samples >= n_total:
        return np.arange(n_total)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_total, size=n_samples, replace=False))


# ---------------------------------------------------------------- the embedded digits
@DATASETS.register("digits")
def digits(cfg: DataConfig, spec: DataSpec, seed: int) -> Splits:
    """scikit-learn's 8x8 digits, upsampled to the model's input size (16 px for ``small_cnn``).

    options: ``task`` = ``target`` (digits 5-9, relabelled 0-4; the default) or ``source``
    (digits 0-4, the pretraining task) or ``all``; ``test_fraction`` (default 0.3).
    The test split is fixed (seed 0) so that every run of a task sees the same test images.
    """
    from .embedded import SOURCE_CLASSES, TARGET_CLASSES, load_digits_tensors

    opts = dict(cfg.options)
    task = opts.pop("task", "target")
    test_fraction = float(opts.pop("test_fraction", 0.3))
    if opts:
        raise ConfigError(f"dataset 'digits' has no option(s) {sorted(opts)}; it takes task, test_fraction.")
    classes = {"target": TARGET_CLASSES, "source": SOURCE_CLASSES, "all": tuple(range(10))}.get(task)
    if classes is None:
        raise ConfigError(f"dataset 'digits': task must be target, source or all, got {task!r}.")
    c, h, w = spec.input_size
    if h != w:
        raise ConfigError(f"dataset 'digits' makes square images; the model wants {h}x{w}.")
    x, y = load_digits_tensors(h)
    if c != 1:
        x = x.expand(-1, c, -1, -1).contiguous()
    keep = torch.isin(y, torch.tensor(classes))
    x, y = x[keep], y[keep]
    remap = torch.full((10,), -1, dtype=torch.long)
    remap[torch.tensor(classes)] = torch.arange(len(classes))
    y = remap[y]
    trainval, test = stratified_split(y.tolist(), test_fraction, seed=0)
    train_rel, val_rel = stratified_split(y[trainval].tolist(), cfg.val_fraction, seed=seed)
    train, val = trainval[train_rel], trainval[val_rel]
    info = {"dataset": "digits", "task": task, "classes": list(classes), "image_size": h,
            "n_train": len(train), "n_val": len(val), "n_test": len(test),
            "val_carved_from_train": True, "val_fraction": cfg.val_fraction, "split_seed": seed,
            "val_indices_sha256": indices_sha256(val), "test_indices_sha256": indices_sha256(test)}
    mk = lambda idx: TensorImageDataset(x[idx], y[idx])  # noqa: E731
    return Splits(mk(train), mk(val), mk(test), len(classes), [str(k) for k in classes], info)


def build_splits(cfg: DataConfig, spec: DataSpec, seed: int = 0) -> Splits:
    """The one door: build the splits of dataset ``cfg.name`` for a model with input ``spec``."""
    return DATASETS.get(cfg.name)(cfg, spec, seed)


class EpochSampler(torch.utils.data.Sampler[int]):
    """A seeded permutation per epoch, resumable mid-epoch: order = f(seed, epoch) only.

    ``set_epoch(e, skip=k)`` starts epoch ``e`` after its first ``k`` samples, so a resumed
    run sees exactly the batches an uninterrupted one would.
    """

    def __init__(self, n: int, seed: int, shuffle: bool = True):
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self):
        return iter(self.order()[self.skip:])

    def __len__(self) -> int:
        return self.n - self.skip
