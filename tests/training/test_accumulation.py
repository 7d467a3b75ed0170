"""Gradient accumulation: 4 micro-batches (each attacked on its own) give the update of one
batch 4x the size, on a BatchNorm-free model; train.effective_batch_size sets the count."""
import pytest
import torch
from torch import nn

from conftest import tiny_config
from rftbench.attacks import TrainAttack
from rftbench.errors import ConfigError
from rftbench.objectives import create_objective
from rftbench.training import Trainer, TrainStep
from rftbench.task import build_task


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 5))


def _step(model, attack: bool):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    atk = TrainAttack(model, "pgd", "Linf", 3, 0.5, False, "eval") if attack else None
    return TrainStep(model, create_objective("pgd_at"), atk, opt, device=torch.device("cpu"))


@pytest.mark.parametrize("attack", [False, True])
def test_four_micro_batches_equal_one_4x_batch(attack):
    small, big = _model(), _model()
    micro, whole = _step(small, attack), _step(big, attack)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):  # three optimizer steps, momentum carried between them
        x, y = torch.rand(64, 1, 8, 8, generator=gen), torch.randint(0, 5, (64,), generator=gen)
        for i in range(4):
            micro(x[16 * i:16 * (i + 1)], y[16 * i:16 * (i + 1)], 0.1, loss_weight=0.25, optimizer_step=i == 3)
        whole(x, y, 0.1)
    assert micro.opt_steps == whole.opt_steps == 3 and micro.attack_calls == (12 if attack else 0)
    moved = max((a - b).abs().max().item() for a, b in zip(small.parameters(), _model().parameters()))
    for a, b in zip(small.parameters(), big.parameters()):
        # float32: micro-batch matmuls and the sum of 4 weighted gradients round differently from
        # one big batch (measured 1.5e-8, a few ulps; a wrong weight of 0.3 gives 6e-3)
        assert torch.allclose(a, b, rtol=0, atol=1e-6), (a - b).abs().max()
    assert moved > 1e-2


def test_effective_batch_size_sets_the_accumulation(workdir):
    cfg = tiny_config(data__batch_size=16, train__effective_batch_size=64, train__epochs=1, train__progress="off")
    assert cfg.accum_steps() == 4
    trainer = Trainer(cfg, build_task(cfg))
    assert trainer.plan.accum == 4 and trainer.plan.opt_steps_per_epoch == -(-trainer.plan.steps_per_epoch // 4)
    with pytest.raises(ConfigError, match="effective_batch_size 100 is not a multiple of data.batch_size 64"):
        tiny_config(train__effective_batch_size=100)
    with pytest.raises(ConfigError, match="disagree"):
        tiny_config(data__batch_size=16, train__effective_batch_size=64, train__accum_steps=2)
