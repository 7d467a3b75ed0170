"""Fine-grained datasets that torchvision does not ship, from their standard archive layouts.

Stanford Dogs (``images.tar`` + ``lists.tar``: official train/test lists as .mat files) and
CUB-200-2011 (``CUB_200_2011.tgz``: images plus ``images.txt``, ``image_class_labels.txt``,
``train_test_split.txt``, ``classes.txt``). Both use their official train/test splits; val is
carved from train.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import DataConfig
from ..errors import RftbenchError
from ..spec import DataSpec
from .availability import corrupt_error, ensure_available
from .core import DatasetMeta, Part, Splits, assemble_splits, data_root, register_dataset, take_options
from .files import ImageFileList

DOGS = DatasetMeta(
    "stanford_dogs", "Stanford Dogs", "archive (images.tar + lists.tar)", 120,
    "train / test (official lists); val carved from train",
    "stanford_dogs/\n  Images/n02085620-Chihuahua/n02085620_10074.jpg ...\n"
    "  train_list.mat, test_list.mat  (from lists.tar; a lists/ subfolder works too)",
    "http://vision.stanford.edu/aditya86/ImageNetDogs/images.tar")
DOGS_ARCHIVES = ("http://vision.stanford.edu/aditya86/ImageNetDogs/images.tar",
                 "http://vision.stanford.edu/aditya86/ImageNetDogs/lists.tar")

CUB = DatasetMeta(
    "cub200", "CUB-200-2011", "archive (CUB_200_2011.tgz)", 200,
    "train / test (official train_test_split.txt); val carved from train",
    "CUB_200_2011/\n  images/001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg ...\n"
    "  images.txt, image_class_labels.txt, train_test_split.txt, classes.txt",
    "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz")


def _download(urls: tuple[str, ...], into: Path) -> None:
    from torchvision.datasets.utils import download_and_extract_archive

    for url in urls:
        download_and_extract_archive(url, download_root=str(into))


def _mat_list(path: Path) -> tuple[list[str], list[int]]:
    from scipy.io import loadmat

    mat = loadmat(str(path), squeeze_me=True)
    files = [str(np.atleast_1d(f)[0]) if not isinstance(f, str) else f for f in np.atleast_1d(mat["file_list"])]
    labels = [int(v) - 1 for v in np.atleast_1d(mat["labels"])]
    if len(files) != len(labels) or not files:
        raise ValueError(f"{path.name}: file_list has {len(files)} entries, labels {len(labels)}")
    return files, labels


@register_dataset(DOGS)
def stanford_dogs(cfg: DataConfig, spec: DataSpec, seed: int) -> Splits:
    """Stanford Dogs (120 breeds) from its archives; official train/test lists."""
    opts = take_options(cfg, {})
    root = data_root(cfg)
    base = root / "stanford_dogs"
    lists = base / "lists" if (base / "lists" / "train_list.mat").is_file() else base
    required = ["Images", str((lists / "train_list.mat").relative_to(base)),
                str((lists / "test_list.mat").relative_to(base))]
    if ensure_available(DOGS, root, base, required, cfg.download):
        _download(DOGS_ARCHIVES, base)
    try:
        tr_files, tr_labels = _mat_list(lists / "train_list.mat")
        te_files, te_labels = _mat_list(lists / "test_list.mat")
    except RftbenchError:
        raise
    except Exception as exc:
        raise corrupt_error(DOGS, root, exc) from exc
    n_classes = max(tr_labels + te_labels) + 1
    names = [f"class {i}" for i in range(n_classes)]
    for f, y in zip(tr_files + te_files, tr_labels + te_labels):
        names[y] = f.split("/")[0].split("-", 1)[-1]
    train = ImageFileList([base / "Images" / f for f in tr_files], tr_labels)
    test = ImageFileList([base / "Images" / f for f in te_files], te_labels)
    return assemble_splits(DOGS.name, train=Part(train, tr_labels), test=Part(test, te_labels), val=None,
                           class_names=names, cfg=cfg, spec=spec, seed=seed, meta=DOGS,
                           info={"root": str(root), "source": DOGS.source, "options": opts,
                                 "official_splits": ["train", "test"]})


def _table(path: Path, n_fields: int) -> dict[int, list[str]]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            parts = line.split(maxsplit=n_fields - 1)
            if len(parts) != n_fields:
                raise ValueError(f"{path.name}: malformed line {line!r}")
            out[int(parts[0])] = parts[1:]
    return out


@register_dataset(CUB)
def cub200(cfg: DataConfig, spec: DataSpec, seed: int) -> Splits:
    """CUB-200-2011 (200 bird species) from its archive; official train/test split."""
    opts = take_options(cfg, {})
    root = data_root(cfg)
    base = root / "CUB_200_2011"
    required = ["images", "images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt"]
    if ensure_available(CUB, root, base, required, cfg.download):
        _download((CUB.download,), root)
    try:
        images = _table(base / "images.txt", 2)
        labels = _table(base / "image_class_labels.txt", 2)
        is_train = _table(base / "train_test_split.txt", 2)
        classes = _table(base / "classes.txt", 2)
        ids = sorted(images)
        if set(ids) != set(labels) or set(ids) != set(is_train):
            raise ValueError("images.txt, image_class_labels.txt and train_test_split.txt list different image ids")
    except RftbenchError:
        raise
    except Exception as exc:
        raise corrupt_error(CUB, root, exc) from exc
    names = [classes[k][0].split(".", 1)[-1] for k in sorted(classes)]
    paths = [base / "images" / images[i][0] for i in ids]
    ys = [int(labels[i][0]) - 1 for i in ids]
    flags = np.asarray([is_train[i][0] == "1" for i in ids])
    ds = ImageFileList(paths, ys)
    return assemble_splits(CUB.name, train=Part(ds, ys, np.flatnonzero(flags)),
                           test=Part(ds, ys, np.flatnonzero(~flags)), val=None, class_names=names, cfg=cfg,
                           spec=spec, seed=seed, meta=CUB,
                           info={"root": str(root), "source": CUB.source, "options": opts,
                                 "official_splits": ["train", "test"]})
