"""The model registry: every family, weights from local files, head replacement, offline errors."""
from __future__ import annotations

import importlib.util
import json
import shutil
import time
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from conftest import tiny_config
from rftbench.cli import main
from rftbench.errors import CheckpointError, ConfigError, OfflineError, UnknownNameError
from rftbench.models import check_model_name, create_model, load_checkpoint, save_checkpoint, weights_sha256
from rftbench.models.catalog import PAPER_BACKBONES
from rftbench.training.optim import param_groups

AA_EXAMPLES = Path(importlib.util.find_spec("pyautoattack").origin).parent / "examples"


def _randomise_buffers(net: torch.nn.Module) -> torch.nn.Module:
    """Random BN statistics, so that a weight loader that drops buffers cannot pass."""
    g = torch.Generator().manual_seed(0)
    for name, buf in net.named_buffers():
        if buf.is_floating_point():
            buf.copy_(torch.rand(buf.shape, generator=g) + (0.5 if "var" in name else 0.0))
    return net.eval()


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty Hugging Face cache and torch.hub dir, and no network."""
    import huggingface_hub.constants

    import rftbench.hub as hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("RFTBENCH_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "can_reach", lambda host, port=443, timeout=1.5: False)
    return tmp_path


# ---------------------------------------------------------------- built-ins and rftbench checkpoints
def test_pretrained_builtin_and_checkpoint_roundtrip(tmp_path, embedded_cache):
    m = create_model("small_cnn", 5, pretrained=True)
    x = torch.rand(4, 1, 16, 16)
    p = save_checkpoint(m, tmp_path / "m.safetensors")
    m2 = load_checkpoint(p)
    m.eval(), m2.eval()
    assert torch.equal(m(x), m2(x))
    assert weights_sha256(m) == weights_sha256(m2)
    via_registry = create_model(f"file:{p}", 5)
    via_registry.eval()
    assert torch.equal(via_registry(x), m(x))


def test_bad_model_names_and_corrupt_checkpoint(tmp_path):
    with pytest.raises(UnknownNameError, match="small_cnn"):
        create_model("small_cnm", 5)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(bad)
    html = tmp_path / "dl.pt"
    html.write_text("<!DOCTYPE html><html>quota exceeded</html>")
    with pytest.raises(CheckpointError, match="HTML page"):
        create_model("small_cnn", 5, weights=str(html))


# ---------------------------------------------------------------- timm
def test_timm_model_from_a_weights_file_gives_identical_logits(tmp_path):
    torch.manual_seed(0)
    src = _randomise_buffers(timm.create_model("test_resnet", pretrained=False, num_classes=7))
    state = src.state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, tmp_path / "ddp.pth")
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected = src((x - 0.5) / 0.5)  # test_resnet's pretrained data config: mean = std = 0.5
    for path in ("w.safetensors", "ddp.pth"):
        m = create_model("timm:test_resnet.r160_in1k", 7, weights=str(tmp_path / path)).eval()
        assert m.spec.input_size == (3, 160, 160) and m.spec.mean == (0.5, 0.5, 0.5) and m.spec.crop_pct == 0.95
        with torch.no_grad():
            assert torch.equal(m(x), expected), path
        assert m.net.pretrained_cfg["state_dict"] is None  # no second copy of the weights kept around
    # another class count: same backbone, a fresh head of the new size
    m3 = create_model("timm:test_resnet", 3, weights=str(tmp_path / "w.safetensors")).eval()
    with torch.no_grad():
        assert torch.equal(m3.net.forward_features((x - 0.5) / 0.5), src.forward_features((x - 0.5) / 0.5))
    assert m3(x).shape == (2, 3) and [p.shape for p in m3.head_parameters()] == [(3, src.num_features), (3,)]


def test_timm_weights_that_do_not_fit_fail_clearly(tmp_path):
    vit = timm.create_model("test_vit", pretrained=False, num_classes=5)
    torch.save(vit.state_dict(), tmp_path / "vit.pth")
    with pytest.raises(CheckpointError, match="does not match timm model test_resnet"):
        create_model("timm:test_resnet", 5, weights=str(tmp_path / "vit.pth"))
    partial = {k: v for k, v in timm.create_model("test_resnet", num_classes=5).state_dict().items()
               if not k.startswith("layer1.")}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match=r"missing \['layer1"):
        create_model("timm:test_resnet", 2, weights=str(tmp_path / "partial.pth"))


def test_timm_offline_without_cache_fails_fast_naming_the_option(offline_hub, monkeypatch):
    t0 = time.perf_counter()
    with pytest.raises(OfflineError) as err:
        create_model("timm:test_resnet.r160_in1k", 5, pretrained=True)
    msg = str(err.value)
    assert "huggingface.co cannot be reached" in msg and "model.weights" in msg and str(offline_hub / "hf") in msg
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import rftbench.hub as hub

    monkeypatch.setattr(hub, "can_reach", lambda *a, **k: pytest.fail("HF_HUB_OFFLINE must not probe the network"))
    with pytest.raises(OfflineError, match="offline mode is set"):
        create_model("timm:test_vit", 5, pretrained=True)
    assert time.perf_counter() - t0 < 5
    # without pretrained weights nothing needs the network
    assert create_model("timm:test_vit", 5, pretrained=False)(torch.rand(1, 3, 160, 160)).shape == (1, 5)


def test_timm_names_are_checked_offline_with_suggestions():
    with pytest.raises(ConfigError, match="(?s)no model 'resnet_18'.*resnet18"):
        create_model("timm:resnet_18", 5, pretrained=False)
    with pytest.raises(ConfigError, match="(?s)no pretrained tag 'in1k'.*a1_in1k.*tv_in1k"):
        check_model_name("timm:resnet18.in1k")
    for name in PAPER_BACKBONES.values():
        check_model_name(name)  # the paper grid's backbones exist with these tags in this timm


# ---------------------------------------------------------------- torchvision
def test_torchvision_weights_enum_spec_file_and_cache(tmp_path, offline_hub):
    import torchvision

    m = create_model("torchvision:resnet18", 5, pretrained=False)
    assert m.arch["name"] == "torchvision:resnet18.IMAGENET1K_V1"
    assert m.spec.input_size == (3, 224, 224) and m.spec.crop_pct == 224 / 256 and m.spec.interpolation == "bilinear"
    assert m(torch.rand(1, 3, 64, 64)).shape == (1, 5)
    torch.manual_seed(1)
    src = _randomise_buffers(torchvision.models.resnet18(num_classes=1000))
    torch.save(src.state_dict(), tmp_path / "r18.pth")
    x = torch.rand(2, 3, 64, 64)
    mean, std = torch.tensor(m.spec.mean).view(1, 3, 1, 1), torch.tensor(m.spec.std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = src((x - mean) / std)
        from_file = create_model("torchvision:resnet18", 1000, weights=str(tmp_path / "r18.pth")).eval()
        assert torch.equal(from_file(x), expected)
    # pretrained offline: torchvision's cache is empty -> fast error naming the file and folder
    with pytest.raises(OfflineError, match=r"(?s)resnet18-f37072fd\.pth.*download\.pytorch\.org cannot be reached"):
        create_model("torchvision:resnet18", 5, pretrained=True)
    # ... and once the file is in torchvision's cache, the pretrained path loads it (weights-only)
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    shutil.copy(tmp_path / "r18.pth", cache / "resnet18-f37072fd.pth")
    cached = create_model("torchvision:resnet18.IMAGENET1K_V1", 1000, pretrained=True).eval()
    with torch.no_grad():
        assert torch.equal(cached(x), expected)
    with pytest.raises(ConfigError, match="(?s)no weights 'V3'.*IMAGENET1K_V1"):
        create_model("torchvision:resnet18.V3", 5)
    with pytest.raises(ConfigError, match="(?s)no classification model 'resnet19'.*resnet18"):
        create_model("torchvision:resnet19", 5)


def test_torchvision_sequential_classifier_head_is_replaced(tmp_path):
    import torchvision

    src = torchvision.models.mobilenet_v3_small(num_classes=10).eval()
    torch.save(src.state_dict(), tmp_path / "mnv3.pth")
    m = create_model("torchvision:mobilenet_v3_small", 4, weights=str(tmp_path / "mnv3.pth")).eval()
    assert isinstance(m.net.classifier[-1], torch.nn.Linear) and m.net.classifier[-1].out_features == 4
    assert torch.equal(m.net.classifier[0].weight, src.classifier[0].weight)  # the rest of the head is kept
    assert m(torch.rand(2, 3, 32, 32)).shape == (2, 4)


# ---------------------------------------------------------------- RobustBench
def _aa_example_resnet():
    """pyautoattack's own CIFAR-10 ResNet-18 (an implementation independent of RobustBench's)."""
    spec = importlib.util.spec_from_file_location("aa_example_resnet", AA_EXAMPLES / "resnet.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    net = mod.ResNet18()
    net.load_state_dict(torch.load(AA_EXAMPLES / "model_test.pt", map_location="cpu", weights_only=True))
    return net.eval()


def test_robustbench_zoo_model_from_file_cache_and_offline(tmp_path, offline_hub, monkeypatch):
    monkeypatch.setenv("RFTBENCH_ROBUSTBENCH_DIR", str(tmp_path / "rb"))
    name = "robustbench:cifar10/Linf/Sehwag2021Proxy_R18"
    ref = _aa_example_resnet()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        expected = ref(x)
        m = create_model(name, 10, weights=str(AA_EXAMPLES / "model_test.pt")).eval()
        assert m.spec.input_size == (3, 32, 32) and m.spec.mean == (0.0, 0.0, 0.0)
        assert torch.allclose(m(x), expected, atol=1e-5)
    # not downloaded and no network: fast error that names the file RobustBench would read
    expected_path = tmp_path / "rb" / "cifar10" / "Linf" / "Sehwag2021Proxy_R18.pt"
    t0 = time.perf_counter()
    with pytest.raises(OfflineError, match="drive.google.com cannot be reached") as err:
        create_model(name, 10, pretrained=True)
    assert str(expected_path) in str(err.value) and time.perf_counter() - t0 < 5
    # a Google Drive quota page saved as the checkpoint is recognised
    expected_path.parent.mkdir(parents=True)
    expected_path.write_text("<!DOCTYPE html><html><title>Google Drive - Quota exceeded</title></html>")
    with pytest.raises(CheckpointError, match="HTML page"):
        create_model(name, 10, pretrained=True)
    # the real file in place: RobustBench's own loader reads it
    shutil.copy(AA_EXAMPLES / "model_test.pt", expected_path)
    with torch.no_grad():
        zoo = create_model(name, 10, pretrained=True).eval()
        assert torch.allclose(zoo(x), expected, atol=1e-5)
    # fine-tuning a zoo model on another task replaces its head
    five = create_model(name, 5, weights=str(AA_EXAMPLES / "model_test.pt"))
    assert five(x).shape == (3, 5) and five.head_parameters()[0].shape == (5, 512)


def test_robustbench_names_list_the_zoo():
    with pytest.raises(ConfigError, match="(?s)Did you mean Standard.*Known \\(\\d+\\)"):
        check_model_name("robustbench:cifar10/Linf/Standrd")
    with pytest.raises(ConfigError, match="cifar10, cifar100, imagenet"):
        check_model_name("robustbench:svhn/Linf/Standard")
    with pytest.raises(ConfigError, match="<dataset>/<threat>/<name>"):
        check_model_name("robustbench:Standard")


# ---------------------------------------------------------------- all families
def test_unknown_family_lists_the_known_ones():
    with pytest.raises(UnknownNameError, match="(?s)unknown model family 'tim'.*Did you mean 'timm'.*robustbench.*torchvision"):
        create_model("tim:resnet18", 5)


@pytest.mark.parametrize("name", ["small_resnet", "timm:test_resnet", "torchvision:mobilenet_v3_small",
                                  "robustbench:cifar10/Linf/Sehwag2021Proxy_R18"])
def test_linear_probe_and_head_groups_work_for_every_family(name, tmp_path):
    model = create_model(name, 6, pretrained=False)
    head = model.head_parameters()
    assert head and head[0].shape[0] == 6
    cfg = tiny_config(model__name=name, model__finetune="linear_probe", model__head_lr_scale=10.0,
                      model__head_weight_decay=0.0, train__weight_decay=1e-3)
    groups = param_groups(model, cfg)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in head}
    assert {g["name"] for g in groups} <= {"head", "head_nodecay"}
    assert all(g["lr_scale"] == 10.0 and g["weight_decay"] == 0.0 for g in groups)
    full = param_groups(create_model(name, 6, pretrained=False), tiny_config(model__head_weight_decay=0.05))
    wd = {g["name"]: g["weight_decay"] for g in full}
    assert wd["head"] == 0.05 and wd["backbone"] == 5e-4
    # the head is the layer that produces the logits; its bias too, since a randomly initialised
    # backbone (mobilenet_v3_small in eval mode) can give all-zero features, which no weight moves
    torch.manual_seed(0)
    x = torch.rand(2, *model.spec.input_size[:1], 32, 32)
    model.eval()
    before = model(x)
    with torch.no_grad():
        for p in head:
            p.add_(1.0)
    assert not torch.allclose(model(x), before)


def test_rftbench_checkpoints_of_hub_families_round_trip(tmp_path):
    m = create_model("timm:test_vit", 4, pretrained=False, kwargs={"img_size": 64}).eval()
    p = save_checkpoint(m, tmp_path / "vit.safetensors")
    back = create_model(f"file:{p}", 4).eval()
    x = torch.rand(2, 3, 64, 64)
    assert torch.equal(back(x), m(x)) and back.arch["kwargs"] == {"img_size": 64}
    # a weights-only torch file with the architecture spec beside it works too
    tv = create_model("torchvision:mobilenet_v3_small", 3, pretrained=False).eval()
    torch.save(tv.net.state_dict(), tmp_path / "mnv3.pt")
    (tmp_path / "mnv3.pt.json").write_text(json.dumps(tv.arch))
    assert torch.equal(load_checkpoint(tmp_path / "mnv3.pt").eval()(x), tv(x))


def test_models_list_cli(capsys):
    assert main(["models", "list", "--json", "--timm", "test_*"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert {f["name"] for f in info["families"]} == {"builtin", "file", "robustbench", "timm", "torchvision"}
    assert {b["name"] for b in info["builtins"]} == {"small_cnn", "small_resnet"}
    assert "test_resnet.r160_in1k" in info["timm"]["matches"] and info["timm"]["n_pretrained"] > 1000
    assert any(p["pattern"] == "*clip*" and p["n_pretrained"] > 0 for p in info["timm"]["patterns"])
    assert main(["models", "list"]) == 0 and "torchvision:<name>" in capsys.readouterr().out
