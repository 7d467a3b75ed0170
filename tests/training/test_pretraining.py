"""The embedded pretraining runs on the trainer's plain path: cross-entropy, no attack, no
tracking or checkpoints; deterministic, and invisible to the caller's random state."""
import random

import numpy as np
import torch

from rftbench import embedded
from rftbench.training import Trainer


def test_pretraining_uses_the_trainer_deterministically_and_keeps_the_callers_rng(tmp_path, monkeypatch):
    monkeypatch.setenv("RFTBENCH_CACHE", str(tmp_path))
    runs = []
    original = Trainer.run

    def spy(trainer, resume=False):
        runs.append(trainer)
        return original(trainer, resume)

    monkeypatch.setattr(Trainer, "run", spy)
    torch.manual_seed(123)
    before = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    path = embedded.pretrained_checkpoint("small_cnn", epochs=1, seed=0)
    assert torch.equal(torch.get_rng_state(), before[0]) and random.getstate() == before[1]
    assert np.array_equal(np.random.get_state()[1], before[2])
    (trainer,) = runs
    assert trainer.step.attack is None and trainer.callbacks == [] and trainer.state_path is None
    assert type(trainer.objective).__name__ == "CrossEntropy" and not trainer.validate
    assert trainer.history[0]["train/acc_clean"] > 0.5  # it learns the source digits

    again = embedded._pretrain("small_cnn", epochs=1, seed=0)
    from safetensors.torch import load_file

    saved = load_file(str(path))
    assert saved.keys() == again.net.state_dict().keys()
    for k, v in again.net.state_dict().items():
        assert torch.equal(saved[k], v), k
    assert not again.training
