"""Tiny datasets written in each family's real on-disk format (no download).

Every image of class ``k`` is a solid colour ``PALETTE[k]`` (JPEG keeps solid colours to within
a few levels), so a test can check that images and labels stay paired through the registry.
Builders return a :class:`Fixture`: the per-split counts, the number of classes, and the
(class, attribute, value) patches that replace torchvision's md5 sums of the real files by the
sums of the fixture's files, so that torchvision's own integrity check runs on them.
"""
from __future__ import annotations

import hashlib
import json
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240)]


@dataclass
class Fixture:
    counts: dict[str, int]  # official split -> number of images
    num_classes: int
    patches: list[tuple[Any, str, Any]] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)  # named files tests may corrupt

    def apply(self, monkeypatch) -> "Fixture":
        for obj, attr, value in self.patches:
            monkeypatch.setattr(obj, attr, value)
        return self


def md5(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def solid(k: int, size: int = 12, mode: str = "RGB") -> Image.Image:
    img = Image.new("RGB", (size, size), PALETTE[k])
    return img.convert(mode)


def save(img: Image.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, quality=95) if path.suffix == ".jpg" else img.save(path)
    return path


def labels_for(n: int, n_classes: int) -> list[int]:
    return [i % n_classes for i in range(n)]


def _array(labels: list[int], size: int) -> np.ndarray:
    """(N, size, size, 3) uint8 solid-colour images."""
    return np.stack([np.full((size, size, 3), PALETTE[k], dtype=np.uint8) for k in labels])


# ---------------------------------------------------------------- torchvision formats
def make_cifar(root: Path, hundred: bool = False, per_batch: int = 6, n_test: int = 6, n_classes: int = 3) -> Fixture:
    """CIFAR's pickled batches: dicts with ``data`` (N, 3072) uint8 rows (R, G, B planes)."""
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR100 if hundred else CIFAR10
    folder = root / cls.base_folder
    folder.mkdir(parents=True)
    key = "fine_labels" if hundred else "labels"

    def batch(name: str, n: int) -> None:
        ys = labels_for(n, n_classes)
        data = _array(ys, 32).transpose(0, 3, 1, 2).reshape(n, -1)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, key: ys, "filenames": [f"{i}.png" for i in range(n)]}, f)

    names = ["train"] if hundred else [f"data_batch_{i}" for i in range(1, 6)]
    for name in names:
        batch(name, per_batch * (5 if hundred else 1))
    batch("test" if hundred else "test_batch", n_test)
    meta_name, meta_key = ("meta", "fine_label_names") if hundred else ("batches.meta", "label_names")
    with open(folder / meta_name, "wb") as f:
        pickle.dump({meta_key: [f"class{k}" for k in range(n_classes)]}, f)
    train_list = [[n, md5(folder / n)] for n in names]
    test_name = "test" if hundred else "test_batch"
    patches = [(cls, "train_list", train_list), (cls, "test_list", [[test_name, md5(folder / test_name)]]),
               (cls, "meta", {"filename": meta_name, "key": meta_key, "md5": md5(folder / meta_name)})]
    return Fixture({"train": per_batch * 5, "test": n_test}, n_classes, patches,
                   {"batch": folder / names[-1], "folder": folder})


def make_svhn(root: Path, n_train: int = 12, n_test: int = 6, n_classes: int = 3) -> Fixture:
    """SVHN's .mat files: X (32, 32, 3, N) uint8 and y (N, 1) with 10 standing for digit 0."""
    import scipy.io
    from torchvision.datasets import SVHN

    folder = root / "svhn"
    folder.mkdir(parents=True)
    split_list = dict(SVHN.split_list)
    for split, n in (("train", n_train), ("test", n_test)):
        ys = labels_for(n, n_classes)
        x = _array(ys, 32).transpose(1, 2, 3, 0)
        y = np.asarray([[10 if k == 0 else k] for k in ys], dtype=np.uint8)
        fname = f"{split}_32x32.mat"
        scipy.io.savemat(folder / fname, {"X": x, "y": y})
        split_list[split] = [split_list[split][0], fname, md5(folder / fname)]
    return Fixture({"train": n_train, "test": n_test}, 10, [(SVHN, "split_list", split_list)],
                   {"train": folder / "train_32x32.mat"})


def make_stl10(root: Path, n_train: int = 6, n_test: int = 4, n_classes: int = 3) -> Fixture:
    """STL-10's binaries: uint8 (N, 3, 96, 96) stored column-major; labels 1-10."""
    from torchvision.datasets import STL10

    folder = root / STL10.base_folder
    folder.mkdir(parents=True)

    def write(prefix: str, n: int, with_labels: bool = True) -> None:
        ys = labels_for(n, n_classes)
        x = _array(ys, 96).transpose(0, 3, 2, 1)  # (N, C, W, H): torchvision transposes back
        (folder / f"{prefix}_X.bin").write_bytes(np.ascontiguousarray(x).tobytes())
        if with_labels:
            (folder / f"{prefix}_y.bin").write_bytes(np.asarray([k + 1 for k in ys], np.uint8).tobytes())

    write("train", n_train)
    write("test", n_test)
    write("unlabeled", 2, with_labels=False)
    (folder / "class_names.txt").write_text("\n".join(["airplane", "bird", "car", "cat", "deer", "dog", "horse",
                                                       "monkey", "ship", "truck"]))
    train_list = [[f, md5(folder / f)] for f in ("train_X.bin", "train_y.bin", "unlabeled_X.bin")]
    test_list = [[f, md5(folder / f)] for f in ("test_X.bin", "test_y.bin")]
    return Fixture({"train": n_train, "test": n_test}, 10,
                   [(STL10, "train_list", train_list), (STL10, "test_list", test_list)])


def _idx_images(path: Path, images: np.ndarray) -> None:
    n, h, w = images.shape
    path.write_bytes(struct.pack(">IIII", 0x00000803, n, h, w) + images.astype(np.uint8).tobytes())


def _idx_labels(path: Path, labels: list[int]) -> None:
    path.write_bytes(struct.pack(">II", 0x00000801, len(labels)) + np.asarray(labels, np.uint8).tobytes())


def make_mnist(root: Path, folder_name: str = "MNIST", n_train: int = 12, n_test: int = 6,
               n_classes: int = 3) -> Fixture:
    """MNIST / Fashion-MNIST idx files in ``<folder>/raw``; class k is gray level 60 * (k + 1)."""
    raw = root / folder_name / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        ys = labels_for(n, n_classes)
        _idx_images(raw / f"{prefix}-images-idx3-ubyte", np.stack([np.full((28, 28), 60 * (k + 1)) for k in ys]))
        _idx_labels(raw / f"{prefix}-labels-idx1-ubyte", ys)
    return Fixture({"train": n_train, "test": n_test}, 10, files={"train_images": raw / "train-images-idx3-ubyte"})


def make_flowers102(root: Path, n_classes: int = 3) -> Fixture:
    """flowers-102/jpg/image_%05d.jpg with imagelabels.mat (1-based labels) and setid.mat."""
    import scipy.io
    from torchvision.datasets import Flowers102

    folder = root / "flowers-102"
    n = 15
    ys = labels_for(n, n_classes)
    for i, k in enumerate(ys, 1):
        save(solid(k), folder / "jpg" / f"image_{i:05d}.jpg")
    scipy.io.savemat(folder / "imagelabels.mat", {"labels": np.asarray([[k + 1 for k in ys]])})
    ids = np.arange(1, n + 1)
    scipy.io.savemat(folder / "setid.mat", {"trnid": ids[:6][None], "valid": ids[6:9][None], "tstid": ids[9:][None]})
    file_dict = dict(Flowers102._file_dict)
    file_dict["label"] = ("imagelabels.mat", md5(folder / "imagelabels.mat"))
    file_dict["setid"] = ("setid.mat", md5(folder / "setid.mat"))
    return Fixture({"train": 6, "val": 3, "test": 6}, 102, [(Flowers102, "_file_dict", file_dict)])


def make_caltech101(root: Path, per_class: int = 5, n_classes: int = 3) -> Fixture:
    """caltech101/101_ObjectCategories/<class>/image_%04d.jpg (one grayscale image per class)."""
    cats = root / "caltech101" / "101_ObjectCategories"
    save(solid(5), cats / "BACKGROUND_Google" / "image_0001.jpg")
    for k in range(n_classes):
        for i in range(1, per_class + 1):
            save(solid(k, mode="L" if i == 1 else "RGB"), cats / f"cat{k}" / f"image_{i:04d}.jpg")
    return Fixture({"all": per_class * n_classes}, n_classes)


def make_oxford_pet(root: Path, n_classes: int = 3) -> Fixture:
    """oxford-iiit-pet/images/<Breed>_<n>.jpg with annotations/{trainval,test}.txt."""
    base = root / "oxford-iiit-pet"
    breeds = ["Abyssinian", "american_bulldog", "Bengal"][:n_classes]
    counts = {}
    for split, per in (("trainval", 4), ("test", 2)):
        lines = []
        for k, breed in enumerate(breeds):
            for i in range(per):
                name = f"{breed}_{split}{i}"
                save(solid(k), base / "images" / f"{name}.jpg")
                lines.append(f"{name} {k + 1} {1 if breed[0].isupper() else 2} 1")
        (base / "annotations").mkdir(parents=True, exist_ok=True)
        (base / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")
        counts["train" if split == "trainval" else "test"] = per * len(breeds)
    return Fixture(counts, n_classes)


def make_fgvc_aircraft(root: Path, n_classes: int = 3) -> Fixture:
    """fgvc-aircraft-2013b/data/: images/<id>.jpg, variants.txt, images_variant_<split>.txt."""
    data = root / "fgvc-aircraft-2013b" / "data"
    variants = ["707-320", "A300B4", "Cessna 172"][:n_classes]
    (data / "images").mkdir(parents=True)
    (data / "variants.txt").write_text("\n".join(variants) + "\n")
    counts, img_id = {}, 1000
    for split, per in (("train", 3), ("val", 1), ("test", 2)):
        lines = []
        for k, v in enumerate(variants):
            for _ in range(per):
                img_id += 1
                save(solid(k), data / "images" / f"{img_id:07d}.jpg")
                lines.append(f"{img_id:07d} {v}")
        (data / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")
        counts[split] = per * len(variants)
    return Fixture(counts, n_classes)


def make_stanford_cars(root: Path, n_classes: int = 3) -> Fixture:
    """stanford_cars/: cars_{train,test}/<file>.jpg, devkit/*.mat, cars_test_annos_withlabels.mat."""
    import scipy.io

    base = root / "stanford_cars"
    names = np.array(["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Audi R8 Coupe 2012"][:n_classes],
                     dtype=object)
    (base / "devkit").mkdir(parents=True)
    scipy.io.savemat(base / "devkit" / "cars_meta.mat", {"class_names": names})
    counts = {}
    for split, per, ann_path in (("train", 4, base / "devkit" / "cars_train_annos.mat"),
                                 ("test", 2, base / "cars_test_annos_withlabels.mat")):
        rows = []
        for k in range(n_classes):
            for i in range(per):
                fname = f"{k}{i:04d}.jpg"
                save(solid(k), base / f"cars_{split}" / fname)
                rows.append((1, 1, 10, 10, k + 1, fname))
        ann = np.zeros(len(rows), dtype=[(f, "O") for f in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2",
                                                             "class", "fname")])
        for i, r in enumerate(rows):
            ann[i] = r
        scipy.io.savemat(ann_path, {"annotations": ann})
        counts[split] = per * n_classes
    return Fixture(counts, n_classes)


def make_dtd(root: Path, n_classes: int = 3) -> Fixture:
    """dtd/dtd/images/<class>/<file>.jpg with labels/{train,val,test}1.txt."""
    data = root / "dtd" / "dtd"
    classes = ["banded", "blotchy", "braided"][:n_classes]
    (data / "labels").mkdir(parents=True)
    counts = {}
    for split, per in (("train", 3), ("val", 1), ("test", 2)):
        lines = []
        for k, c in enumerate(classes):
            for i in range(per):
                save(solid(k), data / "images" / c / f"{c}_{split}{i}.jpg")
                lines.append(f"{c}/{c}_{split}{i}.jpg")
        (data / "labels" / f"{split}1.txt").write_text("\n".join(lines) + "\n")
        counts[split] = per * len(classes)
    return Fixture(counts, n_classes)


def make_food101(root: Path, n_classes: int = 3) -> Fixture:
    """food-101/images/<class>/<id>.jpg with meta/{train,test}.json."""
    base = root / "food-101"
    classes = ["apple_pie", "baby_back_ribs", "baklava"][:n_classes]
    (base / "meta").mkdir(parents=True)
    counts = {}
    for split, per in (("train", 4), ("test", 2)):
        meta = {}
        for k, c in enumerate(classes):
            ids = [f"{c}/{split}{i}" for i in range(per)]
            for rel in ids:
                save(solid(k), base / "images" / f"{rel}.jpg")
            meta[c] = ids
        (base / "meta" / f"{split}.json").write_text(json.dumps(meta))
        counts[split] = per * len(classes)
    return Fixture(counts, n_classes)


# ---------------------------------------------------------------- archives and folders
def make_stanford_dogs(root: Path, n_classes: int = 3) -> Fixture:
    """stanford_dogs/Images/<wnid>-<breed>/<file>.jpg with train_list.mat / test_list.mat (cells)."""
    import scipy.io

    base = root / "stanford_dogs"
    breeds = ["n02085620-Chihuahua", "n02085782-Japanese_spaniel", "n02085936-Maltese_dog"][:n_classes]
    counts = {}
    for split, per in (("train", 4), ("test", 2)):
        files, labels = [], []
        for k, b in enumerate(breeds):
            for i in range(per):
                rel = f"{b}/{b.split('-')[0]}_{split}{i}.jpg"
                save(solid(k), base / "Images" / rel)
                files.append(rel)
                labels.append(k + 1)
        cells = np.empty((len(files), 1), dtype=object)
        for i, f in enumerate(files):
            cells[i, 0] = np.array([f])
        scipy.io.savemat(base / f"{split}_list.mat", {"file_list": cells, "annotation_list": cells,
                                                      "labels": np.asarray(labels)[:, None]})
        counts[split] = len(files)
    return Fixture(counts, n_classes, files={"train_list": base / "train_list.mat"})


def make_cub200(root: Path, n_classes: int = 3) -> Fixture:
    """CUB_200_2011/: images/<NNN.Name>/<file>.jpg and the four index text files."""
    base = root / "CUB_200_2011"
    classes = [f"{k + 1:03d}.Bird_{k}" for k in range(n_classes)]
    images, labels, split, counts, img_id = [], [], [], {"train": 0, "test": 0}, 0
    for k, c in enumerate(classes):
        for i in range(6):
            img_id += 1
            rel = f"{c}/Bird_{k}_{i:04d}.jpg"
            save(solid(k), base / "images" / rel)
            is_train = i < 4
            images.append(f"{img_id} {rel}")
            labels.append(f"{img_id} {k + 1}")
            split.append(f"{img_id} {int(is_train)}")
            counts["train" if is_train else "test"] += 1
    (base / "images.txt").write_text("\n".join(images) + "\n")
    (base / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (base / "train_test_split.txt").write_text("\n".join(split) + "\n")
    (base / "classes.txt").write_text("\n".join(f"{k + 1} {c}" for k, c in enumerate(classes)) + "\n")
    return Fixture(counts, n_classes, files={"labels": base / "image_class_labels.txt"})


def make_imagefolder(root: Path, with_splits: bool = False, per_class: int = 5, n_classes: int = 3) -> Fixture:
    """<root>/<class>/<file>.png, or train/ and test/ class trees."""
    if with_splits:
        counts = {}
        for split, per in (("train", per_class), ("test", 2)):
            for k in range(n_classes):
                for i in range(per):
                    save(solid(k), root / split / f"class{k}" / f"{i}.png")
            counts[split] = per * n_classes
        return Fixture(counts, n_classes)
    for k in range(n_classes):
        for i in range(per_class):
            save(solid(k), root / f"class{k}" / f"{i}.tif")
    return Fixture({"all": per_class * n_classes}, n_classes)
