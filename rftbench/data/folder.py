"""A generic ImageFolder dataset (e.g. UC-Merced land use): ``<root>/<class>/<image>``.

``data.root`` is either a folder with ``train/`` (and optionally ``val/``, ``test/``) class
trees, or one class tree holding everything; missing splits are carved, stratified: test once
with seed 0 (``test_fraction``), val from train with the run's seed (``val_fraction``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import DataConfig
from ..errors import ConfigError, DataError
from ..spec import DataSpec
from .core import DatasetMeta, Part, Splits, assemble_splits, data_root, register_dataset, stratified_split, \
    take_options

FOLDER = DatasetMeta(
    "imagefolder", "ImageFolder (any class-per-folder tree)", "torchvision.datasets.ImageFolder", None,
    "train/ val/ test/ subfolders where present; missing test carved once (seed 0), missing val from train",
    "<data.root>/\n  train/<class>/<image> [val/<class>/<image>] [test/<class>/<image>]\n"
    "or <data.root>/<class>/<image>  (e.g. UCMerced_LandUse/Images/<class>/<image>.tif)",
    options={"test_fraction": "fraction of each class held out as test when there is no test/ (default 0.2)",
             "train_dir": "name of the train subfolder (default train)", "val_dir": "default val",
             "test_dir": "default test"},
    hflip=False, augment="none")  # unknown content: nothing that could change a label unless asked


def _image_folder(path: Path):
    from torchvision.datasets import ImageFolder

    try:
        return ImageFolder(str(path))
    except (FileNotFoundError, OSError) as exc:
        raise DataError(f"dataset 'imagefolder': {path} is not a usable class-per-folder tree ({exc}).\n"
                        f"Expected layout:\n  {FOLDER.layout}") from exc


@register_dataset(FOLDER)
def imagefolder(cfg: DataConfig, spec: DataSpec, seed: int) -> Splits:
    """Any ``<class>/<image>`` tree; split subfolders where present, carved splits where not."""
    if not cfg.root:
        raise ConfigError("dataset 'imagefolder' needs data.root: the folder that holds the class folders "
                          "(or train/, val/, test/ subfolders of them).")
    opts = take_options(cfg, {"test_fraction": 0.2, "train_dir": "train", "val_dir": "val", "test_dir": "test"})
    if not 0 < float(opts["test_fraction"]) < 1:
        raise ConfigError(f"dataset 'imagefolder': test_fraction must be in (0, 1); got {opts['test_fraction']!r}.")
    root = data_root(cfg)
    if not root.is_dir():
        raise DataError(f"dataset 'imagefolder': data.root {root} does not exist.\nExpected layout:\n  "
                        + FOLDER.layout.replace("\n", "\n  "))
    split_dirs = {k: root / opts[f"{k}_dir"] for k in ("train", "val", "test")}
    has_split_dirs = split_dirs["train"].is_dir()
    info = {"root": str(root), "source": FOLDER.source, "options": opts}
    train_ds = _image_folder(split_dirs["train"] if has_split_dirs else root)
    classes = list(train_ds.classes)

    def other(kind: str):
        if not (has_split_dirs and split_dirs[kind].is_dir()):
            return None
        ds = _image_folder(split_dirs[kind])
        if ds.classes != classes:
            raise DataError(f"dataset 'imagefolder': {split_dirs[kind]} has classes {ds.classes[:5]}... but "
                            f"{split_dirs['train']} has {classes[:5]}...; every split needs the same class folders.")
        return Part(ds, list(ds.targets))

    test, val = other("test"), other("val")
    if test is None:
        trainval, test_idx = stratified_split(train_ds.targets, float(opts["test_fraction"]), seed=0)
        train = Part(train_ds, list(train_ds.targets), trainval)
        test = Part(train_ds, list(train_ds.targets), test_idx)
        info["test_split"] = f"stratified {float(opts['test_fraction'])} of each class (seed 0)"
    else:
        train = Part(train_ds, list(train_ds.targets))
    info["official_splits"] = [k for k in ("train", "val", "test") if has_split_dirs and split_dirs[k].is_dir()]
    if len(np.unique(train.label_array())) < len(classes):
        raise DataError(f"dataset 'imagefolder': some class folders under {root} have no training images.")
    return assemble_splits(FOLDER.name, train=train, test=test, val=val, class_names=classes, cfg=cfg, spec=spec,
                           seed=seed, meta=FOLDER, info=info)
