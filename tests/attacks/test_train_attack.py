"""The training attack: torchattacks PGD / PGD-L2 / APGD / TPGD behind TrainAttack."""
import pytest
import torch
from torch import nn

from rftbench.attacks import TrainAttack
from rftbench.errors import ConfigError


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 8 * 8, 3))


def _batch(n=16):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_pgd_linf_stays_in_the_ball_and_the_step_follows_eps():
    model = _model().train()
    x, y = _batch()
    atk = TrainAttack(model, "pgd", "Linf", steps=3, step_ratio=0.25)
    for eps in (0.1, 0.03):
        atk.set_eps(eps)
        assert atk.attack.eps == eps and atk.attack.alpha == pytest.approx(0.25 * eps)
        adv = atk(x, y)
        assert (adv - x).abs().max() <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
        assert (adv - x).abs().max() > eps / 2  # it moved
    assert model.training


def test_pgd_l2_uses_the_l2_ball():
    model = _model()
    x, y = _batch()
    atk = TrainAttack(model, "pgd", "L2", steps=3, step_ratio=0.5)
    atk.set_eps(0.5)
    adv = atk(x, y)
    norms = (adv - x).flatten(1).norm(dim=1)
    assert norms.max() <= 0.5 + 1e-4 and norms.max() > 0.1
    assert type(atk.attack).__name__ == "PGDL2"


def test_trades_attack_is_linf_only():
    with pytest.raises(ConfigError, match="norm: Linf"):
        TrainAttack(_model(), "trades_kl", "L2", steps=2, step_ratio=0.5)


def test_attack_refuses_eps_zero():
    with pytest.raises(ValueError, match="eps = 0"):
        TrainAttack(_model(), "pgd", "Linf", steps=2, step_ratio=0.5)(*_batch())


def test_apgd_for_training_perturbs_every_sample_and_does_not_reseed_the_global_rng():
    model = _model()
    x, y = _batch()
    atk = TrainAttack(model, "apgd", "Linf", steps=4, step_ratio=0.25)
    atk.set_eps(0.05)
    advs, states = [], []
    for seed in (1, 2):
        torch.manual_seed(seed)
        advs.append(atk(x, y))
        states.append(torch.get_rng_state())
    # torchattacks' APGD.forward re-seeds with its fixed seed: both calls would then give the
    # same random start and leave the global RNG in the same state
    assert not torch.equal(states[0], states[1])
    for adv in advs:
        delta = (adv - x).abs().flatten(1).amax(1)
        assert delta.max() <= 0.05 + 1e-6 and (delta > 0).all()  # every sample moved (max-loss point)
    assert not torch.equal(advs[0], advs[1])  # random starts come from the training RNG


def test_bn_mode_eval_keeps_running_stats_and_train_updates_them():
    x, y = _batch()
    for mode, changes in (("eval", False), ("train", True)):
        model = _model().train()
        bn = model[1]
        before = bn.running_mean.clone()
        atk = TrainAttack(model, "pgd", "Linf", steps=2, step_ratio=0.5, bn_mode=mode)
        atk.set_eps(0.1)
        atk(x, y)
        assert (not torch.equal(before, bn.running_mean)) == changes, mode
        assert model.training and bn.training


def test_per_module_modes_are_restored_after_crafting():
    model = _model().eval()
    model[4].train()  # e.g. a linear probe: frozen backbone in eval mode, head training
    atk = TrainAttack(model, "pgd", "Linf", steps=1, step_ratio=1.0, bn_mode="train")
    atk.set_eps(0.1)
    atk(*_batch())
    assert [m.training for m in model] == [False, False, False, False, True] and not model.training
