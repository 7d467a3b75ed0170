"""Augmentation presets: each builds the transform it says, records it, and refuses bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision import transforms as T

import dataset_fixtures as F
from rftbench.config import DataConfig, parse_config
from rftbench.data import DATASET_META, build_splits
from rftbench.data.augment import AUGMENTATIONS, AugmentContext, FloatAsUint8, build_augment
from rftbench.data.transforms import describe
from rftbench.errors import ConfigError, UnknownNameError
from rftbench.spec import DataSpec
from rftbench.experiments.validation import validate_names

SPEC = DataSpec((3, 24, 24), (0.5,) * 3, (0.5,) * 3)
DIGITS_SPEC = DataSpec((1, 16, 16), (0.5,), (0.5,))


def _steps(tf) -> list:
    """The flat list of transform objects of a (nested) Compose."""
    out = []
    for t in getattr(tf, "transforms", [tf]):
        out += _steps(t) if isinstance(t, T.Compose) else [t]
    return out


def _types(tf) -> list[type]:
    return [type(t) for t in _steps(tf)]


@pytest.fixture
def folder(tmp_path):
    F.make_imagefolder(tmp_path, per_class=4)
    return tmp_path


@pytest.mark.parametrize("preset, expected", [
    ("crop", [T.RandomResizedCrop]),
    ("crop_flip", [T.RandomResizedCrop, T.RandomHorizontalFlip]),
    ("randaugment", [T.RandomResizedCrop, T.RandAugment]),  # imagefolder: flips do not keep labels by default
])
def test_full_size_presets_build_and_record_their_transform(folder, preset, expected):
    s = build_splits(DataConfig(name="imagefolder", root=str(folder), augment=preset), SPEC, seed=0)
    tf = s.train.transform
    random_steps = [t for t in _types(tf) if t.__name__.startswith("Rand")]
    assert random_steps == expected
    assert s.info["augment"]["preset"] == preset and s.info["augment"]["requested"] == preset
    assert s.info["augment"]["transform"] == describe(tf) == s.info["transforms"]["train"]
    assert s.test.transform is not tf and "Random" not in s.info["transforms"]["eval"]
    x, _ = s.train[0]
    assert x.shape == (3, 24, 24) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1


def test_low_res_presets_pad_and_crop(tmp_path, monkeypatch):
    F.make_cifar(tmp_path).apply(monkeypatch)
    for preset, flips in (("crop", False), ("crop_flip", True), (True, True)):  # cifar's default: crop_flip
        s = build_splits(DataConfig(name="cifar10", root=str(tmp_path), augment=preset), SPEC)
        steps = _steps(s.train.transform)
        crops = [t for t in steps if isinstance(t, T.RandomCrop)]
        assert len(crops) == 1 and crops[0].padding == 3 and crops[0].padding_mode == "reflect"  # 24 // 8
        assert any(isinstance(t, T.RandomHorizontalFlip) for t in steps) == flips
        assert not any(isinstance(t, T.RandomResizedCrop) for t in steps)
    s = build_splits(DataConfig(name="cifar10", root=str(tmp_path), augment="crop",
                                augment_options={"padding": 5}), SPEC)
    assert [t.padding for t in _steps(s.train.transform) if isinstance(t, T.RandomCrop)] == [5]
    assert s.info["augment"]["options"] == {"padding": 5, "scale": None}


def test_none_and_false_are_the_eval_transform(folder):
    for augment in ("none", False):
        s = build_splits(DataConfig(name="imagefolder", root=str(folder), augment=augment), SPEC, seed=0)
        assert s.info["augment"]["preset"] == "none"
        assert s.info["transforms"]["train"] == s.info["transforms"]["eval"]
        assert torch.equal(s.train[0][0], s.train[0][0])  # nothing random


def test_dataset_defaults():
    assert DATASET_META["digits"].default_augment == "none"
    assert DATASET_META["imagefolder"].default_augment == "none"  # unknown content: no flips, no crops
    for name in ("mnist", "svhn"):
        assert DATASET_META[name].default_augment == "crop"
    for name in ("caltech101", "stanford_dogs", "cub200", "stanford_cars", "fgvc_aircraft", "flowers102",
                 "oxford_pet"):  # the paper's recipe: RandomResizedCrop + flip at the model's input size
        meta = DATASET_META[name]
        assert meta.default_augment == "crop_flip" and not meta.low_res


def test_imagefolder_default_never_flips_and_crop_flip_is_asked_for(folder):
    s = build_splits(DataConfig(name="imagefolder", root=str(folder)), SPEC, seed=0)
    assert s.info["augment"] | {"transform": None} == {
        "requested": True, "preset": "none", "dataset_default": "none", "options": {}, "input": "PIL image",
        "transform": None}
    assert not any("Flip" in t.__name__ or "Random" in t.__name__ for t in _types(s.train.transform))


def test_digits_default_is_identity_and_presets_apply_to_the_tensors():
    raw = build_splits(DataConfig(name="digits"), DIGITS_SPEC, seed=0)
    assert raw.train.transform is None and raw.info["augment"]["preset"] == "none"
    assert "Flip" not in raw.info["transforms"]["train"]
    torch.manual_seed(0)
    s = build_splits(DataConfig(name="digits", augment="crop"), DIGITS_SPEC, seed=0)
    assert _types(s.train.transform) == [T.RandomCrop]
    assert s.info["augment"]["input"] == "tensor" and "RandomCrop" in s.info["transforms"]["train"]
    batch = s.train.__getitems__(list(range(64)))
    x = torch.stack([b[0] for b in batch])
    x0 = raw.train.images[:64]
    assert [b[1] for b in batch] == raw.train.labels[:64].tolist()
    assert not torch.equal(x, x0)  # the augmentation has an effect on the embedded digits
    # every augmented image is a shifted copy of its original, padded by reflection (2 = 16 // 8)
    padded = torch.nn.functional.pad(x0, (2, 2, 2, 2), mode="reflect")
    for i in range(64):
        assert any(torch.equal(x[i], padded[i, :, a:a + 16, b:b + 16]) for a in range(5) for b in range(5))


def test_digits_randaugment_and_timm_keep_range_and_shape():
    for preset in ("randaugment", "timm"):
        s = build_splits(DataConfig(name="digits", augment=preset), DIGITS_SPEC, seed=0)
        x, y = s.train[3]
        assert x.shape == (1, 16, 16) and x.dtype == torch.float32 and 0 <= float(x.min()) <= float(x.max()) <= 1
    ra = build_splits(DataConfig(name="digits", augment="randaugment"), DIGITS_SPEC, seed=0)
    assert FloatAsUint8 in _types(ra.train.transform)
    assert not any(isinstance(t, T.RandomHorizontalFlip) for t in _steps(ra.train.transform))  # digits: no flips


def test_timm_options_pass_through_and_are_validated(folder):
    cfg = DataConfig(name="imagefolder", root=str(folder), augment="timm",
                     augment_options={"hflip": 0.0, "scale": [0.5, 1.0], "color_jitter": 0.0, "auto_augment": None})
    s = build_splits(cfg, SPEC, seed=0)
    rrc = [t for t in _steps(s.train.transform) if type(t).__name__ == "RandomResizedCropAndInterpolation"]
    assert len(rrc) == 1 and tuple(rrc[0].scale) == (0.5, 1.0) and rrc[0].size == (24, 24)
    assert not any("Flip" in t.__name__ or "Normalize" in t.__name__ for t in _types(s.train.transform))
    assert s.info["augment"]["options"]["scale"] == [0.5, 1.0]
    assert "RandomResizedCropAndInterpolation" in s.info["augment"]["transform"]
    x, _ = s.train[0]
    assert x.dtype == torch.float32 and x.shape == (3, 24, 24) and float(x.max()) <= 1.0
    bad = [({"hfilp": 0.5}, r"no such argument.*hflip"), ({"re_prob": 0.25}, "random erasing"),
           ({"mean": [0, 0, 0]}, "rftbench sets these itself")]
    for options, message in bad:
        with pytest.raises(ConfigError, match=message):
            build_splits(DataConfig(name="imagefolder", root=str(folder), augment="timm", augment_options=options),
                         SPEC, seed=0)


def test_bad_preset_names_and_options_fail_before_any_work():
    with pytest.raises(UnknownNameError, match=r"Did you mean 'crop_flip'\?.*randaugment"):
        validate_names(parse_config({"data": {"augment": "crop_flp"}}))
    with pytest.raises(ConfigError, match=r"preset 'crop' has no option\(s\) \['flip_p'\]"):
        validate_names(parse_config({"data": {"augment": "crop", "augment_options": {"flip_p": 0.5}}}))
    with pytest.raises(ConfigError, match="augment is false but data.augment_options"):
        validate_names(parse_config({"data": {"augment": False, "augment_options": {"padding": 2}}}))
    with pytest.raises(ConfigError, match="no such argument"):
        validate_names(parse_config({"data": {"augment": "timm", "augment_options": {"bogus": 1}}}))
    assert set(AUGMENTATIONS.names()) >= {"none", "crop", "crop_flip", "randaugment", "timm"}


def test_build_augment_records_what_it_built():
    ctx = AugmentContext(SPEC, low_res=False, hflip=True, crop_scale=(0.3, 1.0))
    tf, info = build_augment(DataConfig(augment=True), ctx, "crop_flip")
    rrc, flip = _steps(tf)[1:3]
    assert isinstance(rrc, T.RandomResizedCrop) and rrc.scale == (0.3, 1.0) and flip.p == 0.5
    assert info["transform"] == describe(tf) and info["preset"] == "crop_flip" and info["requested"] is True
    rng = np.random.default_rng(0)
    img = F.Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8))
    assert tf(img).shape == (3, 24, 24)


def test_datasets_list_shows_each_default(capsys):
    from rftbench.cli import main

    assert main(["datasets", "list", "--json"]) == 0
    import json

    items = {d["name"]: d for d in json.loads(capsys.readouterr().out)}
    assert items["digits"]["augment_default"] == "none" and items["cub200"]["augment_default"] == "crop_flip"
    assert items["mnist"]["augment_default"] == "crop" and items["imagefolder"]["augmentation"] == "none"
    assert items["cifar10"]["augmentation"] == "pad-crop+flip"
    assert items["cub200"]["augmentation"] == "resized-crop+flip"
