"""torchvision's classification datasets, with their official splits and on-disk layouts.

CIFAR-10, CIFAR-100, SVHN, STL-10, MNIST, Fashion-MNIST, Flowers-102, Caltech-101,
Oxford-IIIT Pet, FGVC-Aircraft, Stanford Cars, DTD and Food-101. torchvision reads the files
(and checks md5 sums where it has them); rftbench checks the layout first, turns torchvision's
errors into clear ones, and carves a validation split where the dataset has none.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..config import DataConfig
from ..errors import ConfigError, RftbenchError
from ..spec import DataSpec
from .availability import corrupt_error, ensure_available
from .core import DatasetMeta, Part, Splits, assemble_splits, data_root, per_class_split, register_dataset, \
    stratified_split, take_options

_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                "t10k-labels-idx1-ubyte")


@dataclass(frozen=True)
class TorchvisionSet:
    """How one torchvision dataset is found, split and labelled.

    ``parts`` maps official split names (``train``, ``val``, ``test``; or ``all`` for a dataset
    without splits) to constructor kwargs; ``subdir`` is appended to the data root to get the
    ``root`` torchvision wants; ``required(opts)`` lists paths under it; ``md5(cls, base)``
    lists (file, md5) pairs torchvision checks, to name the culprit when it finds corruption.
    """

    meta: DatasetMeta
    cls_name: str
    parts: dict[str, dict[str, Any]]
    required: Callable[[dict], list[str]]
    labels: Callable[[Any], list[int]]
    classes: Callable[[Any], list[str]]
    subdir: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    ctor_kwargs: Callable[[dict], dict] = lambda opts: {}
    md5: Callable[[type, Path], list[tuple[Path, str]]] | None = None
    validate: Callable[[dict], None] = lambda opts: None


def _torchvision_class(name: str) -> type:
    import torchvision.datasets as tvd

    return getattr(tvd, name)


def _md5_failures(pairs: list[tuple[Path, str]]) -> list[Path]:
    from torchvision.datasets.utils import check_integrity

    return [p for p, md5 in pairs if p.exists() and not check_integrity(str(p), md5)]


def _construct(ts: TorchvisionSet, cls: type, base: Path, root: Path, download: bool, kwargs: dict):
    try:
        return cls(str(base), download=download, **kwargs)
    except RftbenchError:
        raise
    except Exception as exc:  # torchvision's "not found or corrupted", unpickling, .mat / json parsing
        bad = _md5_failures(ts.md5(cls, base)) if ts.md5 is not None else []
        raise corrupt_error(ts.meta, root, exc, bad) from exc


def load_torchvision_set(ts: TorchvisionSet, cfg: DataConfig, spec: DataSpec, seed: int) -> Splits:
    opts = take_options(cfg, ts.options)
    ts.validate(opts)
    root = data_root(cfg)
    base = root / ts.subdir if ts.subdir else root
    download = ensure_available(ts.meta, root, base, ts.required(opts), cfg.download)
    cls = _torchvision_class(ts.cls_name)
    extra = ts.ctor_kwargs(opts)
    built = {}
    for part, kwargs in ts.parts.items():
        built[part] = _construct(ts, cls, base, root, download, {**kwargs, **extra})
    first = next(iter(built.values()))
    class_names = [str(c) for c in ts.classes(first)]
    info = {"root": str(root), "source": f"torchvision.datasets.{ts.cls_name}", "options": opts,
            "official_splits": list(ts.parts)}
    if "all" in built:  # no official splits: carve a fixed (seed 0) stratified test split
        ds = built["all"]
        labels = np.asarray(ts.labels(ds), dtype=np.int64)
        if opts.get("train_per_class"):
            trainval, test = per_class_split(labels, int(opts["train_per_class"]), seed=0)
            info["test_split"] = f"all but {int(opts['train_per_class'])} per class (seed 0)"
        else:
            trainval, test = stratified_split(labels, float(opts["test_fraction"]), seed=0)
            info["test_split"] = f"stratified {float(opts['test_fraction'])} of each class (seed 0)"
        train, test_part, val = Part(ds, labels.tolist(), trainval), Part(ds, labels.tolist(), test), None
    else:
        def part(name: str) -> Part | None:
            return Part(built[name], list(map(int, ts.labels(built[name])))) if name in built else None

        train, test_part, val = part("train"), part("test"), part("val")
    return assemble_splits(ts.meta.name, train=train, test=test_part, val=val, class_names=class_names, cfg=cfg,
                           spec=spec, seed=seed, meta=ts.meta, info=info)


def _register(ts: TorchvisionSet) -> None:
    def factory(cfg: DataConfig, spec: DataSpec, seed: int) -> Splits:
        return load_torchvision_set(ts, cfg, spec, seed)

    factory.__qualname__ = factory.__name__ = f"torchvision_{ts.meta.name}"
    factory.__doc__ = f"{ts.meta.title} ({ts.meta.source}); splits: {ts.meta.splits}."
    register_dataset(ts.meta)(factory)


def _cifar_md5(cls: type, base: Path) -> list[tuple[Path, str]]:
    folder = base / cls.base_folder
    return [(folder / f, m) for f, m in cls.train_list + cls.test_list] + [(folder / cls.meta["filename"],
                                                                            cls.meta["md5"])]


def _one_of(name: str, key: str, opts: dict, allowed: tuple) -> None:
    if opts[key] not in allowed:
        raise ConfigError(f"dataset {name!r}: option {key} must be one of {list(allowed)}; got {opts[key]!r}.")


def _validate_caltech(opts: dict) -> None:
    if opts.get("train_per_class") is not None and (not isinstance(opts["train_per_class"], int)
                                                    or opts["train_per_class"] < 1):
        raise ConfigError("dataset 'caltech101': train_per_class must be a positive number of images per class; "
                          f"got {opts['train_per_class']!r}.")
    if not 0 < float(opts["test_fraction"]) < 1:
        raise ConfigError(f"dataset 'caltech101': test_fraction must be in (0, 1); got {opts['test_fraction']!r}.")


_AIRCRAFT_CLASSES = {"variant": "variants.txt", "family": "families.txt", "manufacturer": "manufacturers.txt"}
_LOW_RES_SPLITS = "train / test (official); val carved from train"

SETS = [
    TorchvisionSet(
        DatasetMeta("cifar10", "CIFAR-10", "torchvision.datasets.CIFAR10", 10, _LOW_RES_SPLITS,
                    "cifar-10-batches-py/\n  data_batch_1 ... data_batch_5, test_batch, batches.meta  (pickled batches)",
                    "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", low_res=True),
        "CIFAR10", {"train": {"train": True}, "test": {"train": False}},
        lambda o: [f"cifar-10-batches-py/{f}" for f in
                   [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]],
        lambda d: d.targets, lambda d: d.classes, md5=_cifar_md5),
    TorchvisionSet(
        DatasetMeta("cifar100", "CIFAR-100", "torchvision.datasets.CIFAR100", 100, _LOW_RES_SPLITS,
                    "cifar-100-python/\n  train, test, meta  (pickled batches, fine labels)",
                    "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", low_res=True),
        "CIFAR100", {"train": {"train": True}, "test": {"train": False}},
        lambda o: [f"cifar-100-python/{f}" for f in ("train", "test", "meta")],
        lambda d: d.targets, lambda d: d.classes, md5=_cifar_md5),
    TorchvisionSet(
        DatasetMeta("svhn", "SVHN (cropped digits)", "torchvision.datasets.SVHN", 10, _LOW_RES_SPLITS,
                    "svhn/\n  train_32x32.mat, test_32x32.mat  (MATLAB: X (32,32,3,N) uint8, y (N,1), 10 means 0)",
                    "http://ufldl.stanford.edu/housenumbers/train_32x32.mat", low_res=True, hflip=False),
        "SVHN", {"train": {"split": "train"}, "test": {"split": "test"}},
        lambda o: ["train_32x32.mat", "test_32x32.mat"],
        lambda d: [int(v) for v in d.labels], lambda d: [str(i) for i in range(10)], subdir="svhn",
        md5=lambda cls, base: [(base / v[1], v[2]) for k, v in cls.split_list.items() if k in ("train", "test")]),
    TorchvisionSet(
        DatasetMeta("stl10", "STL-10", "torchvision.datasets.STL10", 10, _LOW_RES_SPLITS,
                    "stl10_binary/\n  train_X.bin, train_y.bin, test_X.bin, test_y.bin, unlabeled_X.bin, "
                    "class_names.txt  (uint8, 3x96x96 column-major)",
                    "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz", low_res=True),
        "STL10", {"train": {"split": "train"}, "test": {"split": "test"}},
        lambda o: [f"stl10_binary/{f}" for f in ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin",
                                                 "unlabeled_X.bin")],
        lambda d: [int(v) for v in d.labels], lambda d: d.classes,
        md5=lambda cls, base: [(base / cls.base_folder / f, m) for f, m in cls.train_list + cls.test_list]),
    TorchvisionSet(
        DatasetMeta("mnist", "MNIST", "torchvision.datasets.MNIST", 10, _LOW_RES_SPLITS,
                    "MNIST/raw/\n  " + ", ".join(_MNIST_FILES) + "  (idx files)",
                    "https://ossci-datasets.s3.amazonaws.com/mnist/", low_res=True, hflip=False),
        "MNIST", {"train": {"train": True}, "test": {"train": False}},
        lambda o: [f"MNIST/raw/{f}" for f in _MNIST_FILES], lambda d: d.targets.tolist(), lambda d: d.classes),
    TorchvisionSet(
        DatasetMeta("fashion_mnist", "Fashion-MNIST", "torchvision.datasets.FashionMNIST", 10, _LOW_RES_SPLITS,
                    "FashionMNIST/raw/\n  " + ", ".join(_MNIST_FILES) + "  (idx files)",
                    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", low_res=True),
        "FashionMNIST", {"train": {"train": True}, "test": {"train": False}},
        lambda o: [f"FashionMNIST/raw/{f}" for f in _MNIST_FILES], lambda d: d.targets.tolist(),
        lambda d: d.classes),
    TorchvisionSet(
        DatasetMeta("flowers102", "Oxford Flowers-102", "torchvision.datasets.Flowers102", 102,
                    "train / val / test (official)",
                    "flowers-102/\n  jpg/image_00001.jpg ...\n  imagelabels.mat, setid.mat",
                    "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"),
        "Flowers102", {"train": {"split": "train"}, "val": {"split": "val"}, "test": {"split": "test"}},
        lambda o: ["flowers-102/jpg", "flowers-102/imagelabels.mat", "flowers-102/setid.mat"],
        lambda d: d._labels, lambda d: list(d.classes),
        md5=lambda cls, base: [(base / "flowers-102" / f, m) for k, (f, m) in cls._file_dict.items()
                               if k != "image"]),
    TorchvisionSet(
        DatasetMeta("caltech101", "Caltech-101", "torchvision.datasets.Caltech101", 101,
                    "no official split: test carved once (seed 0), val carved from the rest",
                    "caltech101/101_ObjectCategories/<class>/image_0001.jpg ...  (BACKGROUND_Google is dropped)",
                    "https://data.caltech.edu/records/mzrjq-6wc02/files/caltech-101.zip",
                    options={"test_fraction": "fraction of each class held out as test (default 0.2)",
                             "train_per_class": "instead: this many per class for train+val, the rest test"}),
        "Caltech101", {"all": {"target_type": "category"}},
        lambda o: ["caltech101/101_ObjectCategories"], lambda d: list(d.y), lambda d: d.categories,
        options={"test_fraction": 0.2, "train_per_class": None}, validate=lambda o: _validate_caltech(o)),
    TorchvisionSet(
        DatasetMeta("oxford_pet", "Oxford-IIIT Pet", "torchvision.datasets.OxfordIIITPet", 37,
                    "trainval / test (official); val carved from trainval",
                    "oxford-iiit-pet/\n  images/<Breed>_<n>.jpg\n  annotations/trainval.txt, annotations/test.txt",
                    "https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz"),
        "OxfordIIITPet", {"train": {"split": "trainval"}, "test": {"split": "test"}},
        lambda o: ["oxford-iiit-pet/images", "oxford-iiit-pet/annotations/trainval.txt",
                   "oxford-iiit-pet/annotations/test.txt"],
        lambda d: d._labels, lambda d: d.classes),
    TorchvisionSet(
        DatasetMeta("fgvc_aircraft", "FGVC-Aircraft", "torchvision.datasets.FGVCAircraft", 100,
                    "train / val / test (official)",
                    "fgvc-aircraft-2013b/data/\n  images/<id>.jpg\n  variants.txt (families.txt, manufacturers.txt)\n"
                    "  images_variant_train.txt, images_variant_val.txt, images_variant_test.txt",
                    "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz",
                    options={"annotation_level": "variant (100 classes, default), family (70) or manufacturer (30)"}),
        "FGVCAircraft", {"train": {"split": "train"}, "val": {"split": "val"}, "test": {"split": "test"}},
        lambda o: ["fgvc-aircraft-2013b/data/images", f"fgvc-aircraft-2013b/data/{_AIRCRAFT_CLASSES[o['annotation_level']]}"]
        + [f"fgvc-aircraft-2013b/data/images_{o['annotation_level']}_{s}.txt" for s in ("train", "val", "test")],
        lambda d: d._labels, lambda d: d.classes, options={"annotation_level": "variant"},
        ctor_kwargs=lambda o: {"annotation_level": o["annotation_level"]},
        validate=lambda o: _one_of("fgvc_aircraft", "annotation_level", o, ("variant", "family", "manufacturer"))),
    TorchvisionSet(
        DatasetMeta("stanford_cars", "Stanford Cars", "torchvision.datasets.StanfordCars", 196,
                    "train / test (official); val carved from train",
                    "stanford_cars/\n  cars_train/<file>.jpg, cars_test/<file>.jpg\n"
                    "  devkit/cars_meta.mat, devkit/cars_train_annos.mat\n  cars_test_annos_withlabels.mat\n"
                    "(the original URL is gone: use a mirror of the archives, e.g. Kaggle's 'stanford-cars-dataset',\n"
                    " plus cars_test_annos_withlabels.mat)"),
        "StanfordCars", {"train": {"split": "train"}, "test": {"split": "test"}},
        lambda o: ["stanford_cars/devkit/cars_meta.mat", "stanford_cars/devkit/cars_train_annos.mat",
                   "stanford_cars/cars_train", "stanford_cars/cars_test", "stanford_cars/cars_test_annos_withlabels.mat"],
        lambda d: [int(t) for _, t in d._samples], lambda d: d.classes),
    TorchvisionSet(
        DatasetMeta("dtd", "Describable Textures (DTD)", "torchvision.datasets.DTD", 47,
                    "train / val / test (official, partition 1-10)",
                    "dtd/dtd/\n  images/<class>/<file>.jpg\n  labels/train1.txt, val1.txt, test1.txt (... 10)",
                    "https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz",
                    options={"partition": "which of the 10 official splits (default 1)"}),
        "DTD", {"train": {"split": "train"}, "val": {"split": "val"}, "test": {"split": "test"}},
        lambda o: ["dtd/dtd/images"] + [f"dtd/dtd/labels/{s}{o['partition']}.txt" for s in ("train", "val", "test")],
        lambda d: d._labels, lambda d: d.classes, options={"partition": 1},
        ctor_kwargs=lambda o: {"partition": int(o["partition"])},
        validate=lambda o: _one_of("dtd", "partition", o, tuple(range(1, 11)))),
    TorchvisionSet(
        DatasetMeta("food101", "Food-101", "torchvision.datasets.Food101", 101,
                    "train / test (official); val carved from train",
                    "food-101/\n  images/<class>/<id>.jpg\n  meta/train.json, meta/test.json",
                    "http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz"),
        "Food101", {"train": {"split": "train"}, "test": {"split": "test"}},
        lambda o: ["food-101/images", "food-101/meta/train.json", "food-101/meta/test.json"],
        lambda d: d._labels, lambda d: d.classes),
]


for _ts in SETS:
    _register(_ts)
