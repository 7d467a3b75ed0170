"""LoRA through peft on timm models: per-family default targets, only adapters and head move,
the merged export gives the LoRA model's logits and loads as a plain timm model, resume is
bit-identical mid-LoRA, and a model without matching modules is refused with its layer names."""
import pytest
import timm
import torch

from conftest import tiny_config
from resume_helpers import whole_and_resumed
from rftbench.errors import ConfigError
from rftbench.models import load_checkpoint
from rftbench.regimes import create_regime
from rftbench.regimes.lora import default_targets
from rftbench.task import build_model
from rftbench.training import TrainingState, train
from rftbench.training.callbacks import Callback
from rftbench.training.optim import make_optimizer

VIT = {"name": "timm:test_vit", "pretrained": False, "kwargs": {"img_size": 32}}


def lora_cfg(**kw):
    base = dict(model=VIT, data__val_fraction=0.5, attack__steps=1, train__epochs=1, train__val_samples=32,
                train__progress="off", eval__n_samples=32, train__val_every=0, train__optimizer="adamw",
                train__lr=1e-2, model__regime={"name": "lora", "params": {"rank": 2, "alpha": 4}},
                train__checkpoint_every_steps=1)
    base.update(kw)
    return tiny_config(**base)


def test_default_targets_per_family():
    vit = default_targets(timm.create_model("test_vit", pretrained=False))
    assert vit and all(n.rsplit(".", 1)[-1] in ("qkv", "proj", "fc1", "fc2") and n.startswith("blocks.") for n in vit)
    res = default_targets(timm.create_model("test_resnet", pretrained=False))
    assert "layer3.0.conv1" in res and "layer3.0.conv2" not in res and "fc" in res  # 1x1 and linear only
    cnx = default_targets(timm.create_model("test_convnext", pretrained=False))
    assert cnx and all(n.endswith(("fc1", "fc2", "head.fc")) for n in cnx)


def test_lora_moves_only_adapters_and_head_and_merges_to_a_plain_timm_model(workdir, tmp_path):
    class Start(Callback):
        def on_run_start(self, trainer):
            self.state = {k: v.clone() for k, v in trainer.model.net.state_dict().items()}

    cfg, start = lora_cfg(), Start()
    res = train(cfg, run_dir=tmp_path / "run", callbacks=[start])
    st = TrainingState.load(tmp_path / "run" / "state.pt").model  # the LoRA model, before the merge
    lora = {k for k in st if ".lora_" in k}
    assert lora and all(".qkv." in k or ".proj." in k or ".fc1." in k or ".fc2." in k for k in lora)
    for k, v in st.items():
        if k in lora:
            continue
        if k.startswith("head."):
            assert not torch.equal(v, start.state[k]), k
        else:
            assert torch.equal(v, start.state[k]), k  # frozen: bit for bit the starting weights
    assert any(not torch.equal(st[k], torch.zeros_like(st[k])) for k in lora if "lora_B" in k)  # B moved from 0
    # the LoRA model rebuilt from the state vs the merged model the run saved
    adapted = build_model(cfg, 5)
    create_regime(cfg.model.regime).prepare(adapted)
    adapted.net.load_state_dict(st)
    plain = load_checkpoint(tmp_path / "run" / "model.safetensors")
    assert isinstance(plain.net, timm.models.VisionTransformer)
    assert not any("lora" in k or "base_layer" in k for k in plain.net.state_dict())
    x = torch.rand(8, 3, 32, 32)
    with torch.no_grad():
        a, b, c = adapted.eval()(x), plain.eval()(x), res.model.eval()(x)
    # float32: W + B A (scaled) summed once vs the two branches of the LoRA forward
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5) and torch.equal(b, c)
    assert res.info["trainable_params"] == sum(v.numel() for k, v in st.items() if k in lora or k.startswith("head."))


def test_lora_params_get_their_own_group(workdir):
    cfg = lora_cfg(train__lora_lr_scale=5.0, train__lora_weight_decay=0.0, train__weight_decay=0.01)
    model = build_model(cfg, 5)
    create_regime(cfg.model.regime).prepare(model)
    groups = {g["name"]: g for g in make_optimizer(model, cfg).param_groups}
    assert set(groups) == {"lora", "head", "head_nodecay"}
    assert groups["lora"]["lr"] == pytest.approx(5e-2) and groups["lora"]["weight_decay"] == 0.0
    assert groups["head"]["weight_decay"] == 0.01 and groups["head_nodecay"]["weight_decay"] == 0.0


def test_no_matching_target_lists_the_layers(workdir):
    model = build_model(tiny_config(), 5)  # small_cnn: 3x3 convs and the head only
    with pytest.raises(ConfigError, match=r"no module of SmallCNN matches .*named: .*0, 1, .*head"):
        create_regime(tiny_config(model__regime={"name": "lora"}).model.regime).prepare(model)
    with pytest.raises(ConfigError, match="matches target_modules \\['nope'\\]"):
        create_regime(tiny_config(model__regime={"name": "lora", "options": {"target_modules": ["nope"]}}
                                  ).model.regime).prepare(build_model(lora_cfg(), 5))


def test_resume_mid_lora_is_bit_identical(workdir, tmp_path):
    cfg = lora_cfg(model__regime={"name": "lora", "params": {"rank": 2, "dropout": 0.1}})
    whole, again = whole_and_resumed(cfg, tmp_path, 2)
    assert again.info["resumed_from"] == {"epoch": 0, "batch": 2}
    for k, v in whole.model.net.state_dict().items():
        assert torch.equal(v, again.model.net.state_dict()[k]), k
