"""The embedded digits: scikit-learn's 8x8 digits, no download (the demo's and tests' data).

The *source* task (digits 0-4) pretrains the built-in network plainly (see
:mod:`rftbench.embedded`); the *target* task (digits 5-9, relabelled 0-4) is what rftbench
robustly fine-tunes on.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..config import DataConfig
from ..errors import ConfigError
from ..spec import DataSpec
from .augment import AugmentContext, build_augment
from .core import DatasetMeta, Splits, TensorImageDataset, indices_sha256, register_dataset, stratified_split

SOURCE_CLASSES = (0, 1, 2, 3, 4)
TARGET_CLASSES = (5, 6, 7, 8, 9)


def load_digits_tensors(size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as float images in [0,1], shape (N, 1, size, size), and int64 labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp_(0, 1)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    return x, y


DIGITS = DatasetMeta(
    "digits", "embedded digits (scikit-learn 8x8)", "sklearn.datasets.load_digits", 5,
    "test fixed (30%, seed 0); val carved from train", "(none: ships inside scikit-learn)",
    low_res=True, hflip=False, augment="none",
    options={"task": "target (digits 5-9, default), source (0-4, the pretraining task) or all",
             "test_fraction": "default 0.3"})


@register_dataset(DIGITS)
def digits(cfg: DataConfig, spec: DataSpec, seed: int) -> Splits:
    """scikit-learn's 8x8 digits, upsampled to the model's input size (16 px for ``small_cnn``).

    options: ``task`` = ``target`` (digits 5-9, relabelled 0-4; the default) or ``source``
    (digits 0-4, the pretraining task) or ``all``; ``test_fraction`` (default 0.3).
    The test split is fixed (seed 0) so that every run of a task sees the same test images.
    """
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
    tf_train, info["augment"] = build_augment(cfg, AugmentContext(spec, low_res=True, hflip=False, tensor_input=True),
                                              DIGITS.default_augment)
    info["transforms"] = {"train": info["augment"]["transform"], "eval": "identity (in-memory tensors)"}
    # rows of the task's digits; only train is augmented
    mk = lambda idx, tf=None: TensorImageDataset(x[idx], y[idx], tf, indices=idx)  # noqa: E731
    return Splits(mk(train, tf_train), mk(val), mk(test), len(classes), [str(k) for k in classes], info)


def write_imagefolder(root, task: str = "target", size: int = 16) -> dict[str, int]:
    """Write the embedded digits of ``task`` as an MNIST-style ImageFolder tree of grayscale PNGs,
    ``<root>/<digit>/<index>.png`` (class folders in digit order, so the tree is class-ordered),
    for the ``imagefolder`` path (``data.name: imagefolder, data.root: <root>``). Returns the
    number of images per class folder."""
    from pathlib import Path

    from PIL import Image

    classes = {"target": TARGET_CLASSES, "source": SOURCE_CLASSES, "all": tuple(range(10))}.get(task)
    if classes is None:
        raise ConfigError(f"write_imagefolder: task must be target, source or all, got {task!r}.")
    x, y = load_digits_tensors(size)
    counts = {}
    for k in classes:
        folder = Path(root) / str(k)
        folder.mkdir(parents=True, exist_ok=True)
        rows = torch.nonzero(y == k).flatten().tolist()
        for i in rows:
            img = (x[i, 0] * 255).round().clamp(0, 255).to(torch.uint8).numpy()
            Image.fromarray(img, mode="L").save(folder / f"{i:04d}.png")
        counts[str(k)] = len(rows)
    return counts
