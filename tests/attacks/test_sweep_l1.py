"""The L1 sweep attack (pyautoattack's own L1 APGD from per-sample seeded starts) keeps the sweep's
exactness contract: the pruned sweep equals the naive per-eps sweep with the nesting rule, per
sample, and a sample's verdict does not depend on its batch or on the global RNG."""
import copy

import numpy as np
import pytest
import torch

from eval_helpers import source_setup
from rftbench.attacks import SweepSettings
from rftbench.attacks.l1 import PyAutoAttackAPGDL1, l1_starts
from rftbench.attacks.pruned import apply_nesting, naive_sweep, pruned_sweep
from rftbench.errors import ConfigError

GRID = [0, 2.0, 4.0, 6.0]


@pytest.fixture(scope="module")
def source64(embedded_cache):
    """Float64 (as in test_sweep_exactness: the pruned sweep computes a sample in batches of other
    shapes, where float32 kernels may move a logit by an ulp)."""
    _, model, test = source_setup()
    idx = np.arange(32)
    return copy.deepcopy(model).double(), test.images[idx].double(), test.labels[idx], idx


def batches(x, y, idx, size):
    for i in range(0, len(y), size):
        yield x[i:i + size], y[i:i + size], idx[i:i + size]


@pytest.mark.parametrize("attack,restarts", [("apgd-ce", 2), ("apgd-dlr", 1)])
def test_l1_pruned_flags_equal_naive_flags_with_nesting(source64, attack, restarts):
    model, x, y, idx = source64
    settings = SweepSettings(attack, "L1", steps=5, restarts=restarts, seed=3)
    pruned = pruned_sweep(model, batches(x, y, idx, 16), GRID, settings)
    raw = naive_sweep(model, batches(x, y, idx, 11), GRID, settings)
    np.testing.assert_array_equal(pruned, apply_nesting(raw))
    acc = pruned.mean(0)
    assert acc[0] > 0.9 and 0 < acc[2] < acc[0]  # survivors and broken samples: a non-trivial comparison


def test_l1_sample_verdict_depends_only_on_the_sample(source64):
    model, x, y, idx = source64
    settings = SweepSettings("apgd-ce", "L1", steps=5, seed=1)
    torch.manual_seed(0)
    whole = settings.robust(model, x, y, idx, 3.0)
    perm = torch.randperm(32, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(999)
    state = torch.get_rng_state()
    shuffled = torch.cat([settings.robust(model, x[p], y[p], idx[p.numpy()], 3.0) for p in perm.split(7)])
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is neither used nor changed
    assert torch.equal(shuffled, whole[perm]) and 0 < whole.double().mean() < 1


def test_l1_run_is_pyautoattacks_attack_single_run_from_the_same_start(embedded_cache):
    """Our adapter adds nothing to pyautoattack: its attack_single_run from the same x_init
    gives the same flags (float32, same batch: bitwise)."""
    from pyautoattack.autopgd_base import APGDAttack, L1_projection

    _, model, test = source_setup()
    x, y = test.images[:16], test.labels[:16]
    t = l1_starts(range(16), x.shape[1:], eps=3.0, restart=0, seed=0)
    ours = PyAutoAttackAPGDL1(model, 3.0, 5).run_from(x, y, t)
    ref = APGDAttack(model, n_iter=5, norm="L1", eps=3.0, loss="ce", device="cpu")
    ref.init_hyperparam(x)
    _, acc, _, _ = ref.attack_single_run(x, y, x_init=x + t + L1_projection(x, t, 3.0))
    assert torch.equal(ours, acc.bool()) and 0 < acc.float().mean() < 1


def test_l1_starts_are_per_sample_and_settings_describe_the_library():
    a = l1_starts([3, 7], (1, 4, 4), eps=2.0, restart=0, seed=5)
    b = l1_starts([7], (1, 4, 4), eps=2.0, restart=0, seed=5)
    assert torch.equal(a[1], b[0]) and not torch.equal(a[0], a[1])
    s = SweepSettings("apgd-ce", "L1", steps=10)
    assert s.describe() == "L1-APGD-CE-10" and s.to_dict()["library"] == "pyautoattack"
    assert SweepSettings.from_dict(s.to_dict()) == s
    with pytest.raises(ConfigError, match="no L1 PGD"):
        SweepSettings("pgd", "L1")
