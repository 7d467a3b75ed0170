"""The training attack: torchattacks PGD / PGD-L2 / APGD / TPGD behind TrainAttack."""
import pytest
import torch
import torchattacks
from torch import nn

from rftbench.attacks import TrainAttack
from rftbench.errors import ConfigError
from rftbench.models import create_model
from rftbench.objectives import create_objective
from rftbench.training import TrainStep


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
    assert isinstance(atk.attack, torchattacks.PGDL2)


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


# The slices run in batches of 6 and 7 rows where one process runs 13: the kernel chosen per batch
# shape (BLAS blocking) may round a gradient differently (one float32 ulp in 5-6 of 13 rows seen on
# an AVX-512/AMX Xeon), and torchattacks' PGDL2 adds 1e-10 to the norm of the mean loss's gradient,
# which scales with 1 / batch size. So the slices equal the whole batch up to a few ulps per attack
# step on values in [0, 1]: 4 ulps x 3 steps. A sign-based (Linf) step can in principle flip on a
# gradient component within an ulp of zero; with 2,496 components that is a ~1e-4 event per run.
# A wrong start (each rank drawing its own) moves pixels by ~eps, far beyond this tolerance.
SLICE_ATOL = 4 * 3 * torch.finfo(torch.float32).eps
SLICE_CASES = [(name, norm, eps, channels_last) for name, norm, eps in
               [("pgd", "Linf", 0.1), ("pgd", "L2", 0.5), ("apgd", "Linf", 0.1), ("apgd", "L2", 0.5),
                ("trades_kl", "Linf", 0.1)] for channels_last in (False, True)]


@pytest.mark.parametrize("name,norm,eps,channels_last", SLICE_CASES)
def test_rank_slices_attack_from_the_one_process_start(name, norm, eps, channels_last):
    """DDP: each rank attacks its rows of the global batch (``rows=``) from the random start one
    process would draw for the whole batch, and leaves the RNG where that process leaves it; so
    the slices, put together, are torchattacks' own attack on the whole batch (reseeded here as
    every rank shares the training RNG's state)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    x, y = torch.rand(13, 3, 8, 8), torch.randint(0, 3, (13,))
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    atk = TrainAttack(model, name, norm, steps=3, step_ratio=0.4)
    atk.set_eps(eps)
    torch.manual_seed(5)
    whole, after = atk(x, y), torch.rand(3)
    parts = []
    for lo, hi in ((0, 6), (6, 13)):  # two ranks' slices (uneven, as for an odd global batch)
        torch.manual_seed(5)
        parts.append(atk(x[lo:hi], y[lo:hi], rows=(lo, 13)))
        assert torch.equal(torch.rand(3), after)
    assert whole.dtype == torch.float32 and not torch.equal(whole, x)  # the attack moved the batch
    assert torch.allclose(torch.cat(parts), whole, rtol=0, atol=SLICE_ATOL)
    torch.manual_seed(5)
    own = atk(x[6:], y[6:])
    assert (own - whole[6:]).abs().max() > 100 * SLICE_ATOL  # each rank drawing for itself would differ  # each rank drawing for itself would differ


def _small_cnn_rgb():
    """The embedded small_cnn with 3 input channels (a 1-channel batch is contiguous in both layouts)."""
    torch.manual_seed(0)
    return create_model("small_cnn", 5, pretrained=False, kwargs={"in_chans": 3})


@pytest.mark.parametrize("rows", [None, (0, 12)])
def test_pgd_l2_runs_channels_last_and_matches_the_contiguous_batch(rows):
    """torchattacks' PGDL2 calls .view on the input gradient, which a channels-last model returns
    channels-last: ``train.channels_last`` with L2 PGD failed. The channels-last attack (model and
    batch, one process or a DDP rank's ``rows``) now gives the contiguous batch's adversarial
    examples, and on contiguous tensors still torchattacks' own."""
    model = _small_cnn_rgb().train()
    g = torch.Generator().manual_seed(3)
    x, y = torch.rand(12, 3, 16, 16, generator=g), torch.randint(0, 5, (12,), generator=g)
    torch.manual_seed(7)
    ref = torchattacks.PGDL2(model, eps=0.5, alpha=0.2, steps=3)(x, y)
    atk = TrainAttack(model, "pgd", "L2", steps=3, step_ratio=0.4)
    atk.set_eps(0.5)
    torch.manual_seed(7)
    assert torch.equal(atk(x, y), ref)
    model.to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    torch.manual_seed(7)
    adv = atk(x_cl, y) if rows is None else atk(x_cl, y, rows=rows)
    # another memory format runs other conv kernels: equal up to a few ulps per step, as the slices
    assert torch.allclose(adv, ref, rtol=0, atol=SLICE_ATOL) and not torch.equal(adv, x)


def test_training_step_channels_last_with_l2_pgd():
    """A training step with ``train.channels_last`` and L2 PGD: the loss of the contiguous step."""
    losses = []
    for channels_last in (False, True):
        model = _small_cnn_rgb()
        if channels_last:
            model.to(memory_format=torch.channels_last)
        atk = TrainAttack(model, "pgd", "L2", steps=2, step_ratio=0.5)
        step = TrainStep(model, create_objective("pgd_at"), atk, torch.optim.SGD(model.parameters(), lr=0.1),
                         device=torch.device("cpu"), channels_last=channels_last)
        g = torch.Generator().manual_seed(3)
        torch.manual_seed(7)
        losses.append(step(torch.rand(8, 3, 16, 16, generator=g), torch.randint(0, 5, (8,), generator=g), 0.5))
    assert torch.isfinite(losses[1]) and torch.allclose(losses[1], losses[0], rtol=1e-5)
