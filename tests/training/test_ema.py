"""EMA of the weights (train.ema): equals a hand computation over 10 optimizer steps, resumes
exactly, and the run says which weights it scored."""
import pytest
import torch

from conftest import tiny_config
from resume_helpers import whole_and_resumed
from rftbench.errors import ConfigError
from rftbench.training import train
from rftbench.training.callbacks import Callback


def small(**kw):
    base = dict(data__val_fraction=0.5, attack__steps=1, train__epochs=2, train__val_samples=32,
                train__progress="off", eval__n_samples=32, train__val_every=0)
    base.update(kw)
    return tiny_config(**base)


class Snapshots(Callback):
    """model.net's float state after every optimizer step, in float64."""

    def __init__(self):
        self.states = []

    def on_batch_end(self, trainer, done):
        if done.optimizer_step:
            self.states.append({k: v.double().clone() for k, v in trainer.model.net.state_dict().items()
                                if v.is_floating_point()})


@pytest.mark.parametrize("warmup", [False, True])
def test_ema_equals_a_hand_computation_over_10_steps(workdir, tmp_path, warmup):
    snaps = Snapshots()
    cfg = small(train__ema={"decay": 0.8, "warmup": warmup})
    res = train(cfg, run_dir=tmp_path / "run", callbacks=[snaps])
    assert len(snaps.states) == 10 and res.info["weights"] == "ema"
    ema = None
    for t, w in enumerate(snaps.states, start=1):
        s = t - 1  # timm: the first update copies; with warm-up 1 - (1 + s)^(-2/3), at most decay
        d = 0.0 if s == 0 else (min(0.8, 1 - (1 + s) ** (-2 / 3)) if warmup else 0.8)
        ema = {k: v.clone() for k, v in w.items()} if ema is None else {k: d * ema[k] + (1 - d) * w[k] for k in w}
    scored = res.model.net.state_dict()
    for k, v in ema.items():
        # float32 lerp over 10 steps against a float64 hand computation: a few ulps of values ~1
        assert torch.allclose(scored[k].double(), v, rtol=1e-6, atol=1e-6), k
    raw = snaps.states[-1]
    assert any(not torch.allclose(scored[k].double(), raw[k], atol=1e-4) for k in raw)  # it is not the raw model
    assert (tmp_path / "run" / "model_raw.safetensors").is_file()


def test_ema_decay_outside_0_1_is_refused():
    for decay in (0, 1, 1.5, -0.1):
        with pytest.raises(ConfigError, match="train.ema.decay"):
            small(train__ema={"decay": decay})


def test_ema_resumes_bit_identical_and_raw_can_be_scored(workdir, tmp_path):
    cfg = small(train__ema={"decay": 0.9, "evaluate": "raw"}, train__checkpoint_every_steps=1)
    whole, again = whole_and_resumed(cfg, tmp_path, 4)
    assert again.info["resumed_from"] == {"epoch": 0, "batch": 4} and again.info["weights"] == "raw"
    from safetensors.torch import load_file

    a, b = (load_file(str(tmp_path / d / "model_ema.safetensors")) for d in ("whole", "cut"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for k, v in whole.model.net.state_dict().items():
        assert torch.equal(v, again.model.net.state_dict()[k]), k
