"""The dataset abstraction: train / val / test splits of images in [0,1] (never normalised here).

A dataset factory takes the :class:`~rftbench.config.DataConfig`, the model's
:class:`~rftbench.spec.DataSpec` (input size, interpolation, crop_pct) and a seed, and returns
:class:`Splits`. Where a dataset has no validation split, a seeded, stratified one is carved
from train and recorded in ``Splits.info``. Tuning uses val, never test.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..config import DataConfig
from ..errors import ConfigError, DataError, RftbenchError
from ..paths import cache_dir
from ..spec import DataSpec
from ..registry import Registry


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


@dataclass(frozen=True)
class DatasetMeta:
    """What ``rftbench datasets list`` shows about a dataset, and how its images are augmented.

    ``layout`` is the on-disk layout under the data root (shown when files are missing);
    ``download`` says where ``download: true`` fetches from (empty: not downloadable);
    ``low_res``: native images are small (pad-and-crop augmentation instead of resized crops);
    ``hflip``: horizontal flips keep the label (false for digits);
    ``augment``: the augmentation preset ``data.augment: true`` means (see
    :mod:`rftbench.data.augment`); empty: ``crop_flip`` where flips keep the label, else ``crop``.
    """

    name: str
    title: str
    source: str
    num_classes: int | None
    splits: str
    layout: str
    download: str = ""
    low_res: bool = False
    hflip: bool = True
    options: dict[str, str] = field(default_factory=dict)
    augment: str = ""

    @property
    def default_augment(self) -> str:
        return self.augment or ("crop_flip" if self.hflip else "crop")


DATASET_META: dict[str, DatasetMeta] = {}


def register_dataset(meta: DatasetMeta) -> Callable[[DatasetFactory], DatasetFactory]:
    """Decorator: register a dataset factory under ``meta.name`` with its description."""

    def deco(fn: DatasetFactory) -> DatasetFactory:
        DATASETS.add(meta.name, fn)
        DATASET_META[meta.name] = meta
        return fn

    return deco


def data_root(cfg: DataConfig) -> Path:
    """Where datasets live: ``data.root`` ($VARS and ~ expanded), else ``$RFTBENCH_DATA``, else
    ``<rftbench cache>/data``."""
    if cfg.root:
        expanded = os.path.expandvars(os.path.expanduser(cfg.root))
        if "$" in expanded:
            raise ConfigError(f"data.root {cfg.root!r} names an environment variable that is not set "
                              f"({expanded!r}); set it (e.g. export RFTBENCH_DATA=/data) or give a plain path.")
        return Path(expanded)
    env = os.environ.get("RFTBENCH_DATA")
    if env:
        return Path(os.path.expanduser(env))
    return cache_dir() / "data"


# options every image dataset takes: the scale range of RandomResizedCrop in training
COMMON_OPTIONS: dict[str, Any] = {"crop_scale": (0.08, 1.0)}


def take_options(cfg: DataConfig, allowed: dict[str, Any]) -> dict[str, Any]:
    """``cfg.options`` merged over ``allowed`` (the defaults) and :data:`COMMON_OPTIONS`;
    unknown keys are an error that lists the known ones."""
    allowed = {**COMMON_OPTIONS, **allowed}
    unknown = sorted(set(cfg.options) - set(allowed))
    if unknown:
        raise ConfigError(f"dataset {cfg.name!r} has no option(s) {unknown}; it takes "
                          f"{', '.join(sorted(allowed)) or 'none'}.")
    return {**allowed, **cfg.options}


class TensorImageDataset(Dataset):
    """Images held in memory as one float tensor (N, C, H, W) in [0,1] plus int64 labels.

    ``indices`` (optional) says which rows of the source data the images are, so that the
    splits of one source can be checked for overlap (as :attr:`ImageView.indices` does).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable | None = None,
                 indices: Sequence[int] | None = None):
        assert images.ndim == 4 and len(images) == len(labels)
        assert indices is None or len(indices) == len(labels)
        self.images, self.labels, self.transform = images, labels, transform
        self.indices = None if indices is None else np.asarray(indices, dtype=np.int64)

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


class ImageView(Dataset):
    """Some samples of a dataset that yields ``(PIL image, label)``, with a transform applied.

    Items are ``(float32 tensor (C,H,W) in [0,1], int)``. Labels are given up front (read from
    the dataset's metadata, so building a split never decodes images). A file that cannot be
    decoded raises :class:`DataError` naming the dataset and sample.
    """

    def __init__(self, base: Dataset, indices: Sequence[int], labels: Sequence[int], transform: Callable,
                 dataset_name: str):
        assert len(indices) == len(labels)
        self.base, self.transform, self.dataset_name = base, transform, dataset_name
        self.indices = np.asarray(indices, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        j = int(self.indices[i])
        try:
            img = self.base[j][0]
            x = self.transform(img)
        except RftbenchError:
            raise
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            from .files import path_of_sample

            path = path_of_sample(self.base, j)
            raise DataError(f"dataset {self.dataset_name!r}: sample {j}{f' ({path})' if path else ''} cannot be "
                            f"read ({type(exc).__name__}: {exc}). The file is corrupt or partial; replace it "
                            f"(or download the dataset again with `data.download: true`).") from exc
        return x, int(self.labels[i])

    @property
    def targets(self) -> list[int]:
        return self.labels.tolist()


def stratified_split(labels: Sequence[int], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices so that about ``fraction`` of each class goes to the second part.

    Returns (kept, carved) index arrays, each sorted. Deterministic in ``seed``.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    kept, carved = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        k = int(round(len(idx) * fraction))
        carved.append(idx[:k])
        kept.append(idx[k:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(carved))


def per_class_split(labels: Sequence[int], n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split with ``n_per_class`` samples of each class in the first part (all of a class
    when it has fewer) and the rest in the second. Returns sorted (first, rest)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    first, rest = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        first.append(idx[:n_per_class])
        rest.append(idx[n_per_class:])
    return np.sort(np.concatenate(first)), np.sort(np.concatenate(rest))


def indices_sha256(indices: Sequence[int]) -> str:
    """sha256 of an index list (as little-endian int64), recorded with every result that used it."""
    return hashlib.sha256(np.asarray(indices, dtype="<i8").tobytes()).hexdigest()


def eval_subset_indices(n_total: int, n_samples: int, seed: int, labels: Sequence[int] | None = None) -> np.ndarray:
    """A fixed, seeded evaluation subset of ``min(n_samples, n_total)`` indices.

    With ``labels`` (one per sample of the split) it is class-stratified
    (:func:`stratified_subset_indices`): every class when ``n_samples`` >= the number of
    classes, in an interleaved order whose every prefix is class-balanced. Without, a seeded
    random sample in a seeded random order.
    """
    if labels is not None:
        return stratified_subset_indices(labels, n_samples, seed)
    rng = np.random.default_rng(seed)
    return rng.permutation(n_total)[:min(n_samples, n_total)]


def _class_quotas(counts: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Samples to take per class: one of every class first (of ``n`` seeded classes, weighted
    by size, when ``n`` < classes), the rest proportional to class size (largest remainder)."""
    k = len(counts)
    if n >= counts.sum():
        return counts.copy()
    if n < k:
        quota = np.zeros(k, np.int64)
        quota[rng.choice(k, size=n, replace=False, p=counts / counts.sum())] = 1
        return quota
    quota = np.minimum(counts, 1)
    while quota.sum() < n:
        room = counts - quota
        share = (n - quota.sum()) * room / room.sum()
        add = np.minimum(np.floor(share).astype(np.int64), room)
        if add.sum() == 0:  # the remainder: to the largest fractional shares (ties by seeded order)
            order = np.lexsort((rng.permutation(k), -(share - np.floor(share))))
            add[order[:n - quota.sum()]] = 1
            add = np.minimum(add, room)
        quota += add
    return quota


def stratified_subset_indices(labels: Sequence[int], n_samples: int, seed: int) -> np.ndarray:
    """A seeded, class-stratified sample of ``min(n_samples, len(labels))`` indices of a split
    (every class when ``n_samples`` >= classes, the rest proportional to class size), in a
    seeded interleaved order: round r holds the r-th sample of every class that has one, the
    classes in a seeded order. So every prefix of it (AutoAttack's, the probe's) covers as many
    classes as it can, with per-class counts that differ by at most one while classes last."""
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = _class_quotas(counts, min(n_samples, len(labels)), rng)
    class_order = rng.permutation(len(classes))
    rank, pos, chosen = [], [], []
    for ci in range(len(classes)):
        members = np.flatnonzero(labels == classes[ci])
        take = rng.permutation(members)[:quota[ci]]
        chosen.append(take)
        rank.append(np.arange(len(take)))
        pos.append(np.full(len(take), int(np.flatnonzero(class_order == ci)[0])))
    if not chosen:
        return np.zeros(0, np.int64)
    idx, r, p = np.concatenate(chosen), np.concatenate(rank), np.concatenate(pos)
    return idx[np.lexsort((p, r))].astype(np.int64)


def class_counts(labels: Sequence[int]) -> dict[str, int]:
    """Samples per class (keys: the class labels as strings, for JSON)."""
    classes, counts = np.unique(np.asarray(labels, dtype=np.int64), return_counts=True)
    return {str(int(c)): int(n) for c, n in zip(classes, counts)}


def dataset_labels(dataset: Dataset) -> np.ndarray | None:
    """Every label of ``dataset`` without decoding images where it says them (``targets``/
    ``labels``, through ``torch.utils.data.Subset``); else None."""
    if isinstance(dataset, torch.utils.data.Subset):
        inner = dataset_labels(dataset.dataset)
        return None if inner is None else inner[np.asarray(dataset.indices, dtype=np.int64)]
    for attr in ("targets", "labels"):
        v = getattr(dataset, attr, None)
        if v is not None and not callable(v):
            arr = np.asarray(v.tolist() if isinstance(v, torch.Tensor) else v)
            if arr.ndim == 1 and len(arr) == len(dataset) and np.issubdtype(arr.dtype, np.integer):
                return arr.astype(np.int64)
    return None


@dataclass
class Part:
    """One official split of a dataset: a dataset yielding (PIL image, label), with its labels."""

    base: Dataset
    labels: list[int]
    indices: np.ndarray | None = None  # a subset of base (None: all of it)

    def index_array(self) -> np.ndarray:
        return np.arange(len(self.labels)) if self.indices is None else self.indices

    def label_array(self) -> np.ndarray:
        return np.asarray(self.labels, dtype=np.int64)[self.index_array()]


def assemble_splits(name: str, *, train: Part, test: Part, val: Part | None, class_names: list[str],
                    cfg: DataConfig, spec: DataSpec, seed: int, meta: DatasetMeta,
                    info: dict[str, Any] | None = None) -> Splits:
    """Views with the model's transforms over official parts; a val split carved (seeded,
    stratified by ``cfg.val_fraction``) from train where the dataset has none. All recorded."""
    from .augment import AugmentContext, build_augment
    from .transforms import describe, eval_transform

    crop_scale = tuple(float(v) for v in cfg.options.get("crop_scale", COMMON_OPTIONS["crop_scale"]))
    if len(crop_scale) != 2 or not 0 < crop_scale[0] <= crop_scale[1] <= 1:
        raise ConfigError(f"data.options.crop_scale must be [low, high] with 0 < low <= high <= 1; got {crop_scale}.")
    ctx = AugmentContext(spec, low_res=meta.low_res, hflip=meta.hflip, crop_scale=crop_scale)
    tf_train, augment_info = build_augment(cfg, ctx, meta.default_augment)
    tf_eval = eval_transform(spec)
    tr_idx, tr_lab = train.index_array(), train.label_array()
    carved = val is None
    if carved:
        kept, cut = stratified_split(tr_lab.tolist(), cfg.val_fraction, seed)
        val_idx, val_lab, val_base = tr_idx[cut], tr_lab[cut], train.base
        tr_idx, tr_lab = tr_idx[kept], tr_lab[kept]
    else:
        val_idx, val_lab, val_base = val.index_array(), val.label_array(), val.base
    te_idx, te_lab = test.index_array(), test.label_array()
    splits = Splits(
        ImageView(train.base, tr_idx, tr_lab, tf_train, name), ImageView(val_base, val_idx, val_lab, tf_eval, name),
        ImageView(test.base, te_idx, te_lab, tf_eval, name), len(class_names), list(class_names))
    splits.info = {
        "dataset": name, "num_classes": len(class_names), "n_train": len(tr_idx), "n_val": len(val_idx),
        "n_test": len(te_idx), "val_carved_from_train": carved,
        "val_fraction": cfg.val_fraction if carved else None, "split_seed": seed if carved else None,
        "train_indices_sha256": indices_sha256(tr_idx), "val_indices_sha256": indices_sha256(val_idx),
        "test_indices_sha256": indices_sha256(te_idx),
        "transforms": {"train": describe(tf_train), "eval": describe(tf_eval)}, "normalised": False,
        "augment": augment_info,
        **(info or {}),
    }
    return splits


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
