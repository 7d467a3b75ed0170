"""Corrupt inputs of every kind: one clear CheckpointError/ConfigError naming the file and what is
wrong (never a traceback from deep inside torch, never a RecursionError); a checkpoint's arch
metadata is an allow-listed spec; non-finite weights are refused at load."""
import json

import pytest
import torch
from conftest import tiny_config

from rftbench.errors import CheckpointError, ConfigError


@pytest.fixture(scope="module")
def trainer_and_state(tmp_path_factory, embedded_cache):
    from rftbench.task import build_task
    from rftbench.training.trainer import Trainer

    cfg = tiny_config(train__epochs=1)
    task = build_task(cfg)
    run_dir = tmp_path_factory.mktemp("corrupt-run")
    trainer = Trainer(cfg, task, run_dir=run_dir)
    return cfg, trainer, trainer.capture_state(0, 0)


def _resume_with(trainer, state_dict, path):
    torch.save(state_dict, path)
    trainer.state_path = path
    trainer._resume_if_asked(True)


@pytest.mark.parametrize("case, expected", [
    ("no_model", r"lacks model"),
    ("no_rng", r"lacks rng"),
    ("rng_without_torch", r"cannot resume from .*entry 'torch' is missing"),
    ("wrong_shapes", r"cannot resume from .*size mismatch"),
    ("model_not_a_dict", r"cannot resume from .*state\.pt"),
    ("not_a_dict", r"is not an rftbench training state"),
])
def test_corrupt_training_state_is_one_clear_line(trainer_and_state, tmp_path, case, expected):
    from dataclasses import asdict

    cfg, trainer, state = trainer_and_state
    raw = asdict(state)
    if case == "no_model":
        del raw["model"]
    elif case == "no_rng":
        del raw["rng"]
    elif case == "rng_without_torch":
        raw["rng"] = {k: v for k, v in raw["rng"].items() if k != "torch"}
    elif case == "wrong_shapes":
        raw["model"] = {k: torch.zeros(3, *v.shape[1:]) if v.ndim else v for k, v in raw["model"].items()}
    elif case == "model_not_a_dict":
        raw["model"] = [1, 2, 3]
    elif case == "not_a_dict":
        raw = [1, 2]
    path = tmp_path / "state.pt"
    with pytest.raises(CheckpointError, match=expected) as info:
        _resume_with(trainer, raw, path)
    msg = str(info.value)
    assert str(path) in msg and "\n" not in msg and len(msg) < 900


def _checkpoint(tmp_path, arch=None, weights=None, meta_raw=None):
    from safetensors.torch import save_file

    from rftbench.models import create_model

    model = create_model("small_cnn", 5, pretrained=False)
    state = {k: v.contiguous() for k, v in model.net.state_dict().items()}
    if weights is not None:
        state = {k: torch.full_like(v, weights) if v.is_floating_point() else v for k, v in state.items()}
    meta = meta_raw if meta_raw is not None else json.dumps(arch if arch is not None else model.arch)
    path = tmp_path / "m.safetensors"
    save_file(state, str(path), metadata={"arch": meta})
    return path, model.arch


@pytest.mark.parametrize("change, expected", [
    (lambda a: "{not json", "not valid JSON"),
    (lambda a: {**a, "name": "file:m.safetensors"}, "file: is not allowed"),
    (lambda a: {**a, "kwargs": {**a["kwargs"], "checkpoint_path": "/etc/passwd"}}, "checkpoint_path"),
    (lambda a: {**a, "name": "timm:resnet18", "kwargs": {"pretrained_cfg_overlay": {"file": "/x"}}},
     "pretrained_cfg_overlay"),
    (lambda a: {**a, "evil": 1}, "unexpected keys"),
    (lambda a: {**a, "num_classes": 10**12}, "num_classes"),
    (lambda a: {**a, "num_classes": "5"}, "num_classes"),
    (lambda a: {**a, "name": "nosuchfamily:x"}, "not a registered architecture"),
    (lambda a: {**a, "kwargs": {"width": {"nested": [1]}}}, "must be a number"),
    (lambda a: [1, 2], "needs 'name'"),
])
def test_bad_arch_metadata_is_refused_before_building(tmp_path, change, expected):
    from rftbench.models import create_model

    path, arch = _checkpoint(tmp_path)
    new = change(arch)
    path, _ = _checkpoint(tmp_path, meta_raw=new if isinstance(new, str) else json.dumps(new))
    with pytest.raises(CheckpointError, match=expected) as info:
        create_model(f"file:{path}", 5)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_at_load(tmp_path, value):
    from rftbench.models import create_model

    path, _ = _checkpoint(tmp_path, weights=value)
    with pytest.raises(CheckpointError, match="non-finite weights"):
        create_model(f"file:{path}", 5)


def test_good_checkpoint_still_loads(tmp_path):
    from rftbench.models import create_model

    path, _ = _checkpoint(tmp_path)
    model = create_model(f"file:{path}", 5)
    assert model.num_classes == 5 and model.fresh_head is False


def test_unknown_model_kwargs_are_refused_with_the_allowed_names():
    from rftbench.models import create_model
    from rftbench.models.core import data_spec

    with pytest.raises(ConfigError, match=r"\['depth'\] are not accepted for builtin models \(allowed: in_chans, width\)"):
        create_model("small_cnn", 5, pretrained=False, kwargs={"depth": 3})
    with pytest.raises(ConfigError, match="checkpoint_path.*allowed: .*drop_path_rate"):
        data_spec("timm:resnet18", pretrained=False, kwargs={"checkpoint_path": "/etc/passwd"})
    assert create_model("small_cnn", 5, pretrained=False, kwargs={"width": 8}).num_classes == 5


class _RunsCode:
    """Unpickling this runs ``touch <marker>``: the checkpoint a weights-only load must refuse."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def _code_pickle(path, marker):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"conv1.weight": torch.zeros(1), "evil": _RunsCode(marker)}, path)
    return path


def test_a_cached_timm_pickle_that_runs_code_is_refused_naming_the_file(tmp_path, monkeypatch):
    import huggingface_hub.constants

    from rftbench.models import create_model

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    base = tmp_path / "hf" / "models--timm--test_resnet.r160_in1k"
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text("0" * 40)
    marker = tmp_path / "code-ran"
    path = _code_pickle(base / "snapshots" / ("0" * 40) / "pytorch_model.bin", marker)
    with pytest.raises(CheckpointError) as info:
        create_model("timm:test_resnet.r160_in1k", 3)
    msg = str(info.value)
    assert not marker.exists()
    assert str(path) in msg and "could not be loaded safely" in msg and "would run code" in msg
    assert "posix.system" in msg and f"Delete {path}" in msg and "model.safetensors" in msg
    assert "\n" not in msg and info.value.__cause__ is None and info.value.__suppress_context__


def test_a_local_weights_pickle_that_runs_code_is_refused_naming_the_file(tmp_path):
    from rftbench.models import create_model

    marker = tmp_path / "code-ran"
    path = _code_pickle(tmp_path / "w.pth", marker)
    for name in ("timm:test_resnet", "torchvision:resnet18"):
        with pytest.raises(CheckpointError, match=r"checkpoint .*w\.pth could not be loaded safely: .*would run "
                                                  r"code .*posix\.system.*safetensors"):
            create_model(name, 3, weights=str(path))
    assert not marker.exists()
