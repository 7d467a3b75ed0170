"""The dataset registry on tiny fixtures written in each family's real on-disk format."""
from __future__ import annotations

import itertools
import json
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torchvision.transforms import functional as TF

import dataset_fixtures as F
from rftbench.cli import main
from rftbench.config import DataConfig
from rftbench.data import DATASETS, build_splits, eval_subset_indices, indices_sha256, stratified_split
from rftbench.data.digits import TARGET_CLASSES, load_digits_tensors
from rftbench.errors import ConfigError, DataError, OfflineError, UnknownNameError
from rftbench.spec import DataSpec

SPEC = DataSpec((3, 16, 16), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "bilinear", 0.875)

# name -> (fixture builder, number of classes the registry must report)
FAMILIES = {
    "cifar10": (lambda r: F.make_cifar(r), 3),  # CIFAR's class count comes from its meta file
    "cifar100": (lambda r: F.make_cifar(r, hundred=True), 3),
    "svhn": (F.make_svhn, 10),
    "stl10": (F.make_stl10, 10),
    "mnist": (F.make_mnist, 10),
    "fashion_mnist": (lambda r: F.make_mnist(r, "FashionMNIST"), 10),
    "flowers102": (F.make_flowers102, 102),
    "caltech101": (F.make_caltech101, 3),
    "oxford_pet": (F.make_oxford_pet, 3),
    "fgvc_aircraft": (F.make_fgvc_aircraft, 3),
    "stanford_cars": (F.make_stanford_cars, 3),
    "dtd": (F.make_dtd, 3),
    "food101": (F.make_food101, 3),
    "stanford_dogs": (F.make_stanford_dogs, 3),
    "cub200": (F.make_cub200, 3),
}
GRAY = {"mnist", "fashion_mnist"}


def _expected_pixels(name: str, label: int) -> list[torch.Tensor]:
    """The [0,1] colours every pixel of an image of ``label`` may have in the fixtures."""
    if name in GRAY:
        return [torch.full((3,), 60 * (label + 1) / 255)]
    r, g, b = F.PALETTE[label]
    colours = [torch.tensor([r, g, b]) / 255]
    if name == "caltech101":  # one grayscale image per class, repeated to three channels
        colours.append(torch.full((3,), (0.299 * r + 0.587 * g + 0.114 * b) / 255))
    return colours


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_each_family_loads_its_real_format_through_the_registry(name, tmp_path, monkeypatch):
    make, n_classes = FAMILIES[name]
    fx = make(tmp_path).apply(monkeypatch)
    cfg = DataConfig(name=name, root=str(tmp_path), val_fraction=0.34)
    s = build_splits(cfg, SPEC, seed=1)
    assert s.num_classes == n_classes == len(s.class_names)
    if "all" in fx.counts:  # no official split: test carved, all images used exactly once
        assert len(s.train) + len(s.val) + len(s.test) == fx.counts["all"]
        assert s.info["val_carved_from_train"] and "test_split" in s.info
    else:
        assert len(s.test) == fx.counts["test"]
        if "val" in fx.counts:  # official val split used as is
            assert len(s.val) == fx.counts["val"] and len(s.train) == fx.counts["train"]
            assert s.info["val_carved_from_train"] is False
        else:  # val carved from train, stratified and recorded
            assert len(s.train) + len(s.val) == fx.counts["train"] and len(s.val) > 0
            assert s.info["val_carved_from_train"] and s.info["val_fraction"] == 0.34 and s.info["split_seed"] == 1
            assert set(s.val.targets) <= set(s.train.targets)
    assert s.info["test_indices_sha256"] == indices_sha256(s.test.indices)
    assert s.info["normalised"] is False
    # every split yields pixel-space images at the model's input size, paired with their labels
    for split in (s.train, s.val, s.test):
        for i in range(min(len(split), 4)):
            x, y = split[i]
            assert x.dtype == torch.float32 and x.shape == (3, 16, 16)
            assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
            if split is not s.train:  # eval transform: a solid image stays that solid colour
                assert any(torch.allclose(x.mean(dim=(1, 2)), c, atol=4 / 255) for c in _expected_pixels(name, y))
                assert float((x - x.mean(dim=(1, 2), keepdim=True)).abs().max()) < 4 / 255  # solid


def test_grayscale_repeats_to_three_channels_and_colour_to_one(tmp_path, monkeypatch):
    F.make_mnist(tmp_path / "m")
    x, _ = build_splits(DataConfig(name="mnist", root=str(tmp_path / "m")), SPEC).test[0]
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    F.make_cifar(tmp_path / "c").apply(monkeypatch)
    gray_spec = DataSpec((1, 20, 20), (0.5,), (0.5,))
    x, y = build_splits(DataConfig(name="cifar10", root=str(tmp_path / "c")), gray_spec).test[0]
    r, g, b = F.PALETTE[y]
    assert x.shape == (1, 20, 20)
    assert abs(float(x.mean()) - (0.299 * r + 0.587 * g + 0.114 * b) / 255) < 2 / 255  # PIL's luma


def test_transforms_follow_the_model_spec_and_never_normalise(tmp_path):
    F.make_imagefolder(tmp_path, per_class=4)
    # non-constant images, to check resize / crop geometry against torchvision's functional API
    gradient = np.tile(np.linspace(0, 255, 60, dtype=np.uint8), (45, 1))
    for i in range(4):
        Image.fromarray(np.stack([gradient, gradient[::-1], 255 - gradient], -1)).save(tmp_path / "class0" / f"{i}.tif")
    spec = DataSpec((3, 24, 24), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bicubic", 0.8)
    s = build_splits(DataConfig(name="imagefolder", root=str(tmp_path), augment="crop_flip"), spec, seed=0)
    assert 0 in s.test.targets
    for i, j in enumerate(s.test.indices):
        img = Image.open(s.test.base.samples[j][0]).convert("RGB")
        resized = TF.resize(img, 30, interpolation=TF.InterpolationMode.BICUBIC)  # 24 / 0.8
        assert torch.equal(s.test[i][0], TF.to_tensor(TF.center_crop(resized, [24, 24])))
    assert "Normalize" not in s.info["transforms"]["eval"] + s.info["transforms"]["train"]
    assert "RandomResizedCrop" in s.info["transforms"]["train"] and "RandomHorizontalFlip" in s.info["transforms"]["train"]
    x, _ = s.train[0]
    assert x.shape == (3, 24, 24)
    no_aug = build_splits(DataConfig(name="imagefolder", root=str(tmp_path), augment=False), spec, seed=0)
    assert no_aug.info["transforms"]["train"] == no_aug.info["transforms"]["eval"]


def test_low_res_and_digit_datasets_pad_crop_without_flips(tmp_path, monkeypatch):
    F.make_svhn(tmp_path).apply(monkeypatch)
    s = build_splits(DataConfig(name="svhn", root=str(tmp_path)), SPEC)
    assert "RandomCrop" in s.info["transforms"]["train"] and "Flip" not in s.info["transforms"]["train"]
    F.make_cifar(tmp_path).apply(monkeypatch)
    s = build_splits(DataConfig(name="cifar10", root=str(tmp_path)), SPEC)
    assert "RandomCrop" in s.info["transforms"]["train"] and "RandomHorizontalFlip" in s.info["transforms"]["train"]


def test_val_split_is_seeded_stratified_and_disjoint(tmp_path, monkeypatch):
    F.make_cifar(tmp_path, per_batch=12).apply(monkeypatch)  # 60 train images, 20 per class
    cfg = DataConfig(name="cifar10", root=str(tmp_path), val_fraction=0.25)
    a, b, c = (build_splits(cfg, SPEC, seed=s) for s in (3, 3, 4))
    assert set(a.train.indices).isdisjoint(a.val.indices) and len(a.train) + len(a.val) == 60
    assert np.bincount(a.val.labels).tolist() == [5, 5, 5]
    assert a.info["val_indices_sha256"] == b.info["val_indices_sha256"] != c.info["val_indices_sha256"]
    assert a.info["test_indices_sha256"] == c.info["test_indices_sha256"]  # test never depends on the seed


def test_imagefolder_with_split_folders_and_caltech_per_class_protocol(tmp_path):
    F.make_imagefolder(tmp_path / "uc", with_splits=True, per_class=6)
    s = build_splits(DataConfig(name="imagefolder", root=str(tmp_path / "uc"), val_fraction=0.5), SPEC)
    assert (len(s.train), len(s.val), len(s.test)) == (9, 9, 6) and s.info["official_splits"] == ["train", "test"]
    F.make_caltech101(tmp_path, per_class=5)
    s = build_splits(DataConfig(name="caltech101", root=str(tmp_path), val_fraction=0.0,
                                options={"train_per_class": 2}), SPEC)
    assert len(s.train) == 6 and len(s.test) == 9 and "BACKGROUND_Google" not in s.class_names
    with pytest.raises(ConfigError, match="train_per_class"):
        build_splits(DataConfig(name="caltech101", root=str(tmp_path), options={"train_per_class": 0}), SPEC)
    with pytest.raises(ConfigError, match="annotation_level, crop_scale"):
        build_splits(DataConfig(name="fgvc_aircraft", root=str(tmp_path), options={"level": "family"}), SPEC)


def test_missing_dataset_names_the_layout_and_the_download_option(tmp_path):
    t0 = time.perf_counter()
    with pytest.raises(DataError) as err:
        build_splits(DataConfig(name="cifar10", root=str(tmp_path)), SPEC)
    msg = str(err.value)
    assert "cifar-10-batches-py" in msg and "data_batch_1" in msg and "data.download: true" in msg
    assert str(tmp_path) in msg
    with pytest.raises(DataError, match="(?s)CUB_200_2011.*images.txt.*data.download: true"):
        build_splits(DataConfig(name="cub200", root=str(tmp_path)), SPEC)
    with pytest.raises(DataError, match="cannot be downloaded automatically"):
        build_splits(DataConfig(name="stanford_cars", root=str(tmp_path), download=True), SPEC)
    with pytest.raises(DataError, match="does not exist"):
        build_splits(DataConfig(name="imagefolder", root=str(tmp_path / "nowhere")), SPEC)
    with pytest.raises(ConfigError, match="not set"):
        build_splits(DataConfig(name="imagefolder", root="$RFTBENCH_SURELY_UNSET_VAR/x"), SPEC)
    assert time.perf_counter() - t0 < 5


def test_download_without_network_fails_fast(tmp_path, monkeypatch):
    import rftbench.hub as hub

    monkeypatch.setattr(hub, "can_reach", lambda host, port=443, timeout=1.5: False)
    t0 = time.perf_counter()
    with pytest.raises(OfflineError, match="(?s)www.cs.toronto.edu cannot be reached.*cifar-10-python.tar.gz"):
        build_splits(DataConfig(name="cifar10", root=str(tmp_path), download=True), SPEC)
    monkeypatch.setenv("RFTBENCH_OFFLINE", "1")
    monkeypatch.setattr(hub, "can_reach", lambda *a, **k: pytest.fail("offline mode must not probe the network"))
    with pytest.raises(OfflineError, match="offline mode is set"):
        build_splits(DataConfig(name="stanford_dogs", root=str(tmp_path), download=True), SPEC)
    assert time.perf_counter() - t0 < 5


def test_corrupt_or_partial_files_fail_clearly(tmp_path, monkeypatch):
    fx = F.make_cifar(tmp_path / "c").apply(monkeypatch)
    data = fx.files["batch"].read_bytes()
    fx.files["batch"].write_bytes(data[: len(data) // 2])  # an interrupted copy
    with pytest.raises(DataError, match="(?s)corrupt or partial.*md5 checksum.*data_batch_5"):
        build_splits(DataConfig(name="cifar10", root=str(tmp_path / "c")), SPEC)
    fx = F.make_mnist(tmp_path / "m")
    fx.files["train_images"].write_bytes(fx.files["train_images"].read_bytes()[:100])
    with pytest.raises(DataError, match="corrupt or partial"):
        build_splits(DataConfig(name="mnist", root=str(tmp_path / "m")), SPEC)
    fx = F.make_stanford_dogs(tmp_path / "d")
    fx.files["train_list"].write_bytes(b"MATLAB 5.0 MAT-file, truncated")
    with pytest.raises(DataError, match="stanford_dogs.*corrupt or partial"):
        build_splits(DataConfig(name="stanford_dogs", root=str(tmp_path / "d")), SPEC)
    fx = F.make_cub200(tmp_path / "b")
    fx.files["labels"].write_text("1 1\n2\n")
    with pytest.raises(DataError, match="malformed line"):
        build_splits(DataConfig(name="cub200", root=str(tmp_path / "b")), SPEC)
    # a truncated image fails when read, naming the file
    F.make_food101(tmp_path / "f")
    s = build_splits(DataConfig(name="food101", root=str(tmp_path / "f")), SPEC)
    victim = s.test.base._image_files[int(s.test.indices[0])]
    victim.write_bytes(victim.read_bytes()[:40])
    with pytest.raises(DataError, match=f"(?s){victim.name}.*cannot be read.*corrupt or partial"):
        s.test[0]


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(UnknownNameError) as err:
        build_splits(DataConfig(name="cifar11"), SPEC)
    msg = str(err.value)
    assert "Did you mean 'cifar10'" in msg
    for name in ("cifar100", "stanford_dogs", "cub200", "imagefolder", "digits", "food101", "dtd"):
        assert name in msg


def test_datasets_list_cli(capsys):
    assert main(["datasets", "list", "--json"]) == 0
    items = {d["name"]: d for d in json.loads(capsys.readouterr().out)}
    assert set(items) == set(DATASETS.names())
    assert len(items) >= 17
    assert items["stanford_cars"]["download"] is None and items["cifar10"]["download"].startswith("https://")
    assert "train_32x32.mat" in items["svhn"]["layout"] and items["svhn"]["augmentation"] == "pad-crop"
    assert main(["datasets", "list"]) == 0 and "caltech101" in capsys.readouterr().out


# ---------------------------------------------------------------- splits: disjoint, stratified, seeded
def _assert_stratified(part: np.ndarray, whole: np.ndarray, fraction: float) -> None:
    """Each class's count in ``part`` is within one sample of ``fraction`` of its count in ``whole``."""
    k = int(whole.max()) + 1
    got, total = np.bincount(part, minlength=k), np.bincount(whole, minlength=k)
    assert np.all(np.abs(got - fraction * total) <= 1), (got.tolist(), (fraction * total).tolist())


def test_digits_splits_are_disjoint_pixel_space_and_stratified():
    spec = DataSpec((1, 16, 16), (0.5,), (0.5,))
    s = build_splits(DataConfig(name="digits", val_fraction=0.2), spec, seed=0)
    x, y = load_digits_tensors(16)
    keep = torch.isin(y, torch.tensor(TARGET_CLASSES))
    x, y = x[keep], y[keep] - TARGET_CLASSES[0]  # the target task: digits 5-9 relabelled 0-4
    parts = {"train": s.train, "val": s.val, "test": s.test}
    for name, d in parts.items():  # each split holds exactly the source rows it names
        assert torch.equal(d.images, x[d.indices]) and torch.equal(d.labels, y[d.indices]), name
        assert 0.0 <= d.images.min() and d.images.max() <= 1.0 and d.images.shape[1:] == (1, 16, 16)
    sets = {k: set(d.indices.tolist()) for k, d in parts.items()}
    for (a, sa), (b, sb) in itertools.combinations(sets.items(), 2):
        assert sa.isdisjoint(sb), f"{a} and {b} share {sorted(sa & sb)[:5]}"
    assert set().union(*sets.values()) == set(range(len(y)))  # every image of the task is in one split
    labels = y.numpy()
    _assert_stratified(labels[s.test.indices], labels, 0.3)  # test: 30% of each class
    trainval = np.concatenate([s.train.indices, s.val.indices])
    _assert_stratified(labels[s.val.indices], labels[trainval], 0.2)  # val: val_fraction of the rest
    assert s.num_classes == 5 and s.info["n_val"] == len(s.val) > 0 and s.info["val_carved_from_train"]
    other = build_splits(DataConfig(name="digits", val_fraction=0.2), spec, seed=1)
    assert set(other.val.indices.tolist()) != sets["val"]  # the run's seed moves val ...
    assert set(other.test.indices.tolist()) == sets["test"]  # ... never test


@settings(max_examples=60, deadline=None)
@given(counts=st.lists(st.integers(0, 40), min_size=1, max_size=6), fraction=st.floats(0.0, 1.0),
       seed=st.integers(0, 2**31 - 1))
def test_stratified_split_is_a_seeded_stratified_partition(counts, fraction, seed):
    labels = np.repeat(np.arange(len(counts)), counts)
    rng = np.random.default_rng(seed)
    labels = labels[rng.permutation(len(labels))]  # classes interleaved, as in real label lists
    kept, carved = stratified_split(labels.tolist(), fraction, seed)
    assert set(kept.tolist()).isdisjoint(carved.tolist())
    assert sorted(kept.tolist() + carved.tolist()) == list(range(len(labels)))
    if len(labels):
        _assert_stratified(labels[carved], labels, fraction)
    again = stratified_split(labels.tolist(), fraction, seed)
    assert np.array_equal(kept, again[0]) and np.array_equal(carved, again[1])


def test_stratified_split_keeps_class_proportions():
    labels = [0] * 100 + [1] * 50
    kept, carved = stratified_split(labels, 0.2, seed=3)
    assert len(carved) == 30 and sorted([labels[i] for i in carved]).count(1) == 10
    assert set(kept).isdisjoint(carved) and len(kept) + len(carved) == 150
    assert (kept == stratified_split(labels, 0.2, seed=3)[0]).all()


def test_eval_subset_is_seeded_and_hashed():
    a, b = eval_subset_indices(1000, 100, 7), eval_subset_indices(1000, 100, 7)
    assert (a == b).all() and len(set(a.tolist())) == 100
    assert indices_sha256(a) == indices_sha256(b) != indices_sha256(eval_subset_indices(1000, 100, 8))
