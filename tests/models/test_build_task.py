"""The setup door: every family answers its input spec without weights; build_task reads a
backbone's weights once and keeps the numbers of the old probe-then-build order."""
from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from conftest import tiny_config
from rftbench.data import DATASETS, Splits, TensorImageDataset, build_splits
from rftbench.errors import CheckpointError, ConfigError, UnknownNameError
from rftbench.models import MODEL_FAMILIES, SPEC_READERS, create_model, data_spec, save_checkpoint, weights_sha256
from rftbench.task import Task, build_model, build_task, resolve_device, seed_everything
from rftbench.spec import DataSpec

AA_EXAMPLES = Path(importlib.util.find_spec("pyautoattack").origin).parent / "examples"
RB_NAME = "robustbench:cifar10/Linf/Sehwag2021Proxy_R18"


@pytest.fixture
def weight_reads(monkeypatch):
    """Every call of torch.load or safetensors' load_file, wherever it was imported, by path."""
    import safetensors.torch

    reads: list[str] = []

    def counting(orig):
        def wrapper(f, *args, **kwargs):
            reads.append(os.path.realpath(f) if isinstance(f, (str, os.PathLike)) else repr(f))
            return orig(f, *args, **kwargs)

        return wrapper

    for orig in (torch.load, safetensors.torch.load_file):
        wrapper = counting(orig)
        for mod in list(sys.modules.values()):
            for attr, value in list(getattr(mod, "__dict__", {}).items()):
                if value is orig:
                    monkeypatch.setattr(mod, attr, wrapper)
    return reads


@pytest.fixture
def tiny_data():
    """A 3-class dataset of random images in the model's input size (12 images, no files)."""

    def factory(cfg, spec: DataSpec, seed: int) -> Splits:
        g = torch.Generator().manual_seed(seed)
        ds = TensorImageDataset(torch.rand(12, *spec.input_size, generator=g), torch.arange(12) % 3)
        return Splits(ds, ds, ds, 3, ["a", "b", "c"], {"spec": spec.to_dict()})

    DATASETS.add("spec_probe", factory)
    yield "spec_probe"
    DATASETS.unregister("spec_probe")


@pytest.fixture
def offline_caches(tmp_path, monkeypatch):
    """Empty Hugging Face and torch.hub caches, offline, and a RobustBench folder under tmp_path."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("RFTBENCH_ROBUSTBENCH_DIR", str(tmp_path / "rb"))
    return tmp_path


# ---------------------------------------------------------------- data_spec: metadata only
SPEC_CASES = [
    ("small_cnn", False, {}), ("small_cnn", False, {"in_chans": 3}), ("builtin:small_resnet", False, {}),
    ("timm:test_resnet.r160_in1k", False, {}), ("timm:test_vit", False, {}), ("timm:test_efficientnet", False, {}),
    ("torchvision:resnet18", False, {}), ("torchvision:mobilenet_v3_small.IMAGENET1K_V1", False, {}),
    (RB_NAME, False, {}),
]


@pytest.mark.parametrize("name,pretrained,kwargs", SPEC_CASES, ids=[c[0] + str(c[2] or "") for c in SPEC_CASES])
def test_data_spec_is_the_built_models_spec_and_reads_no_weights(name, pretrained, kwargs, weight_reads):
    spec = data_spec(name, pretrained=pretrained, kwargs=kwargs)
    assert weight_reads == [] and isinstance(spec, DataSpec)
    assert spec == create_model(name, 3, pretrained=pretrained, kwargs=kwargs).spec


def test_data_spec_of_checkpoints_and_the_embedded_default(tmp_path, embedded_cache, weight_reads):
    vit = create_model("timm:test_vit", 4, pretrained=False, kwargs={"img_size": 64})
    p = save_checkpoint(vit, tmp_path / "vit.safetensors")
    cnn3 = save_checkpoint(create_model("small_cnn", 2, pretrained=False, kwargs={"in_chans": 3}), tmp_path / "c.st")
    specs = [data_spec(f"file:{p}"), data_spec("small_cnn", weights=str(cnn3)), data_spec("small_cnn")]
    assert weight_reads == []  # architecture specs come from safetensors headers / .json files
    assert specs[0] == vit.spec and specs[1].input_size == (3, 16, 16)
    assert specs[2] == create_model("small_cnn", 5, pretrained=True).spec == DataSpec((1, 16, 16), (0.5,), (0.5,))
    with pytest.raises(CheckpointError, match="does not exist"):
        data_spec("small_cnn", weights=str(tmp_path / "missing.safetensors"))
    with pytest.raises(UnknownNameError, match="timm"):
        data_spec("tim:resnet18")


def test_a_family_without_a_spec_reader_is_probed_without_weights(monkeypatch):
    calls = []

    def plugin(rest, num_classes, *, pretrained, weights, kwargs):
        calls.append(pretrained)
        return create_model("small_cnn", num_classes, pretrained=False)

    MODEL_FAMILIES.add("plugin_family", plugin)
    try:
        assert data_spec("plugin_family:x") == DataSpec((1, 16, 16), (0.5,), (0.5,)) and calls == [False]
    finally:
        MODEL_FAMILIES.unregister("plugin_family")


# ---------------------------------------------------------------- build_task: one read per backbone
def _hf_cached(root: Path, repo: str, net: torch.nn.Module) -> Path:
    """Put ``net``'s weights where huggingface_hub keeps ``repo``'s model.safetensors."""
    base = root / "hf" / f"models--{repo.replace('/', '--')}"
    snap = base / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text("0" * 40)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(snap / "model.safetensors"))
    return snap / "model.safetensors"


def _weights_file(kind: str, root: Path) -> tuple[dict, Path]:
    """Model config overrides and the one file their build must read."""
    if kind == "builtin":
        from rftbench.embedded import pretrained_checkpoint

        return {"model__name": "small_cnn"}, pretrained_checkpoint("small_cnn")
    if kind == "timm_hub":
        return {"model__name": "timm:test_resnet.r160_in1k"}, _hf_cached(
            root, "timm/test_resnet.r160_in1k", timm.create_model("test_resnet", num_classes=1000))
    if kind == "timm_file":
        save_file({k: v.contiguous() for k, v in timm.create_model("test_resnet").state_dict().items()},
                  str(root / "w.safetensors"))
        return {"model__name": "timm:test_resnet", "model__weights": str(root / "w.safetensors")}, root / "w.safetensors"
    if kind == "torchvision_cache":
        import torchvision

        from rftbench.hub import url_cache_path

        path = url_cache_path(torchvision.models.MobileNet_V3_Small_Weights.IMAGENET1K_V1.url)
        path.parent.mkdir(parents=True)
        torch.save(torchvision.models.mobilenet_v3_small().state_dict(), path)
        return {"model__name": "torchvision:mobilenet_v3_small.IMAGENET1K_V1"}, path
    if kind == "file":
        path = save_checkpoint(create_model("timm:test_vit", 7, pretrained=False), root / "ft.safetensors")
        return {"model__name": f"file:{path}"}, path
    path = root / "rb" / "cifar10" / "Linf" / "Sehwag2021Proxy_R18.pt"
    path.parent.mkdir(parents=True)
    shutil.copy(AA_EXAMPLES / "model_test.pt", path)
    return {"model__name": RB_NAME}, path


@pytest.mark.parametrize("kind", ["builtin", "timm_hub", "timm_file", "torchvision_cache", "file", "robustbench"])
def test_build_task_reads_the_backbone_weights_once(kind, offline_caches, tiny_data, embedded_cache, weight_reads):
    overrides, path = _weights_file(kind, offline_caches)
    cfg = tiny_config(data__name=tiny_data, train__device="cpu", **overrides)
    weight_reads.clear()
    task = build_task(cfg)
    assert weight_reads == [os.path.realpath(path)]
    assert isinstance(task, Task) and task.device == torch.device("cpu")
    assert task.spec == task.model.spec and task.splits.info["spec"] == task.spec.to_dict()
    assert task.model.num_classes == 3 and task.model(task.splits.train[0][0][None]).shape == (1, 3)


# ---------------------------------------------------------------- build_task: order, numbers, options
def _old_order(cfg):
    """What train() and experiment.py did before build_task: probe, splits, seed, build."""
    probe = build_model(cfg, num_classes=2)
    splits = build_splits(cfg.data, probe.spec, cfg.seed)
    seed_everything(cfg.seed)
    return build_model(cfg, splits.num_classes), splits


def test_build_task_keeps_the_numbers_of_the_old_order_even_when_it_pretrains(tmp_path, monkeypatch):
    monkeypatch.setenv("RFTBENCH_CACHE", str(tmp_path / "fresh"))  # the first build pretrains
    cfg = tiny_config(seed=3, train__device="cpu")
    task = build_task(cfg)
    torch.manual_seed(99)  # whatever the global state, build_task's result is the same
    again = build_task(cfg)
    model, splits = _old_order(cfg)
    assert weights_sha256(task.model) == weights_sha256(again.model) == weights_sha256(model)
    assert task.splits.info["val_indices_sha256"] == splits.info["val_indices_sha256"]
    # and the global generators are left where the old order left them
    build_task(cfg)
    after_task = torch.rand(3)
    _old_order(cfg)
    assert torch.equal(after_task, torch.rand(3))


def test_build_task_places_the_model_and_honours_channels_last(tiny_data):
    cfg = tiny_config(model__name="builtin:small_resnet", model__pretrained=False, data__name=tiny_data,
                      train__channels_last=True, train__device="cpu")
    task = build_task(cfg)
    conv = task.model.net.stem[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert next(task.model.parameters()).device == torch.device("cpu")
    plain = build_task(tiny_config(model__name="builtin:small_resnet", model__pretrained=False,
                                   data__name=tiny_data, train__device="cpu"))
    assert plain.model.net.stem[0].weight.is_contiguous()


def test_keep_head_evaluates_a_checkpoint_with_its_own_head(tmp_path, embedded_cache):
    five = create_model("small_cnn", 5, pretrained=True)
    p5 = save_checkpoint(five, tmp_path / "five.safetensors")
    task = build_task(tiny_config(model__name=f"file:{p5}", train__device="cpu"), keep_head=True)
    assert weights_sha256(task.model) == weights_sha256(five)  # the trained head, not a new one
    p3 = save_checkpoint(create_model("small_cnn", 3, pretrained=False), tmp_path / "three.safetensors")
    with pytest.raises(ConfigError, match="has 3 outputs but dataset 'digits' has 5 classes"):
        build_task(tiny_config(model__name=f"file:{p3}", train__device="cpu"), keep_head=True)
    # to train, a head of another size is replaced by a fresh one of the dataset's size
    assert build_task(tiny_config(model__name=f"file:{p3}", train__device="cpu")).model.num_classes == 5
    # other families have no task head to keep: a fresh one, as in training
    assert build_task(tiny_config(train__device="cpu"), keep_head=True).model.num_classes == 5


def test_a_spec_reader_that_disagrees_with_its_factory_is_caught(monkeypatch, tiny_data):
    monkeypatch.setitem(SPEC_READERS, "builtin", lambda rest, **kw: DataSpec((1, 8, 8), (0.5,), (0.5,)))
    cfg = tiny_config(model__pretrained=False, data__name=tiny_data, train__device="cpu")
    with pytest.raises(ConfigError, match="spec reader does not match its factory"):
        build_task(cfg)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ConfigError, match="not a device"):
        resolve_device("gpu0")
