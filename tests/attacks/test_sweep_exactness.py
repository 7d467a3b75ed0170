"""The pruned eps sweep, for every sweep attack (PGD, APGD-CE, APGD-DLR): exactly the per-sample flags
of the naive per-eps sweep with the nesting rule applied afterwards, and cheaper; a sample's
result depends on nothing but the sample (not on its batch, not on the global RNG)."""
import copy

import numpy as np
import pytest
import torch
import torchattacks

from eval_helpers import source_setup
from rftbench.attacks import SweepSettings
from rftbench.attacks.pruned import apply_nesting, naive_sweep, pruned_sweep
from rftbench.attacks.startable import StartableAPGD, apgd_starts, make_pgd, per_sample_starts


@pytest.fixture(scope="module")
def source(embedded_cache):
    cfg, model, test = source_setup()
    idx = np.arange(48)
    return model, test.images[idx], test.labels[idx], idx


# The pruned sweep attacks each eps's survivors, so the same sample is computed in batches of other
# shapes; in float32 the kernel chosen per shape may move a logit by an ulp (seen: one ulp in 5 of 13
# rows on an AVX-512/AMX Xeon) and flip a sample that sits on its decision boundary. The design's
# exactness (a sample's flags depend on nothing but the sample) is a statement about the algorithm,
# so the comparisons across batch shapes run in float64, where such a flip needs a margin below
# ~1e-13; same-shape comparisons (ours against torchattacks on one batch) stay float32 and bitwise.
@pytest.fixture(scope="module")
def source64(source):
    model, x, y, idx = source
    model64 = copy.deepcopy(model).double()
    return model64, x.double(), y, idx


def batches(x, y, idx, size):
    for i in range(0, len(y), size):
        yield x[i:i + size], y[i:i + size], idx[i:i + size]


def grad_forwards(model):
    """A counter of the samples the model saw with gradients on (attack steps, not predictions)."""
    calls = {"n": 0}

    def count(_module, args):
        if torch.is_grad_enabled():
            calls["n"] += len(args[0])

    return calls, model.register_forward_pre_hook(count)


@pytest.mark.parametrize("norm,eps", [("Linf", 0.05), ("L2", 1.0)])
def test_startable_pgd_is_torchattacks_pgd(source, norm, eps):
    model, x, y, _ = source
    ours = make_pgd(model, norm, eps, steps=5, step_ratio=0.3)
    cls = torchattacks.PGD if norm == "Linf" else torchattacks.PGDL2
    theirs = cls(model, eps=eps, alpha=0.3 * eps, steps=5, random_start=False)
    ref = theirs(x[:16], y[:16])
    assert torch.equal(ours(x[:16], y[:16]), ref)
    # our loop from a given start (zero here) is torchattacks' loop
    assert torch.allclose(ours(x[:16], y[:16], init_delta=torch.zeros_like(x[:16])), ref, atol=1e-6)


def _torchattacks_apgd_start(x, norm, eps, seed):
    """The start torchattacks' APGD draws from the global RNG seeded with ``seed``."""
    torch.manual_seed(seed)
    n = len(x)
    if norm == "Linf":
        t = 2 * torch.rand(x.shape) - 1
        return eps * torch.ones([n, 1, 1, 1]) * t / t.reshape([n, -1]).abs().max(dim=1, keepdim=True)[0].reshape(
            [-1, 1, 1, 1])
    t = torch.randn(x.shape)
    return eps * torch.ones([n, 1, 1, 1]) * t / ((t ** 2).sum(dim=(1, 2, 3), keepdim=True).sqrt() + 1e-12)


@pytest.mark.parametrize("norm,eps,steps,loss", [("Linf", 0.04, 10, "ce"), ("Linf", 0.03, 25, "ce"),
                                                  ("L2", 0.8, 10, "ce"), ("Linf", 0.04, 10, "dlr")])
def test_startable_apgd_is_torchattacks_apgd(source, norm, eps, steps, loss):
    """From the start torchattacks would draw, our APGD is torchattacks' APGD, bit for bit:
    the same per-sample success flags and the same adversarial examples."""
    model, x, y, _ = source
    x, y = x[:24], y[:24]
    theirs = torchattacks.APGD(model, norm=norm, eps=eps, steps=steps, n_restarts=1, loss=loss)
    torch.manual_seed(7)
    _, acc, _, adv = theirs.attack_single_run(x, y)
    ours = StartableAPGD(model, norm=norm, eps=eps, steps=steps, loss=loss)
    start = _torchattacks_apgd_start(x, norm, eps, 7)
    acc2, adv2 = ours.run_from(x, y, start)
    assert torch.equal(acc, acc2) and torch.equal(adv, adv2)
    assert 0 < acc.float().mean() < 1  # some samples broken, some not: a non-trivial comparison


@pytest.mark.parametrize("norm,eps,loss", [("Linf", 0.04, "ce"), ("L2", 0.8, "ce"), ("Linf", 0.04, "dlr")])
def test_dropping_fooled_samples_changes_no_verdict(source64, norm, eps, loss):
    """Dropping each sample from the run once fooled changes no sample's verdict (the batch
    shrinks, so float64: see ``source64``)."""
    model, x, y, idx = source64
    x, y = x[:24], y[:24]
    ours = StartableAPGD(model, norm=norm, eps=eps, steps=10, loss=loss)
    start = apgd_starts(idx[:24], x.shape[1:], norm=norm, eps=eps, restart=0, seed=7).double()
    acc, _ = ours.run_from(x, y, start)
    acc3, adv3 = ours.run_from(x, y, start, stop_when_fooled=True)
    assert adv3.dtype == torch.float64 and 0 < acc.float().mean() < 1
    assert torch.equal(acc3, acc)
    with torch.no_grad():
        assert (model(adv3).argmax(1) != y)[~acc3].all()


def test_random_starts_depend_only_on_the_sample():
    for starts in (per_sample_starts, apgd_starts):
        a = starts([3, 7, 9], (1, 4, 4), norm="Linf", eps=0.1, restart=1, seed=5)
        b = starts([9, 3], (1, 4, 4), norm="Linf", eps=0.1, restart=1, seed=5)
        assert torch.equal(a[0], b[1]) and torch.equal(a[2], b[0])
        assert a.abs().max() <= 0.1 + 1e-7 and a.abs().max() > 0.05
        assert not torch.equal(a, starts([3, 7, 9], (1, 4, 4), norm="Linf", eps=0.1, restart=2, seed=5))
        assert not torch.equal(a, starts([3, 7, 9], (1, 4, 4), norm="Linf", eps=0.1, restart=1, seed=6))
        assert not torch.equal(a, starts([3, 7, 9], (1, 4, 4), norm="Linf", eps=0.2, restart=1, seed=5) / 2)
    l2 = per_sample_starts(range(20), (1, 4, 4), norm="L2", eps=0.5, restart=1, seed=0)
    assert (l2.flatten(1).norm(dim=1) <= 0.5 + 1e-6).all()
    # APGD starts on the surface of the ball, as torchattacks' APGD does
    surf = apgd_starts(range(20), (1, 4, 4), norm="Linf", eps=0.1, restart=0, seed=0)
    assert torch.allclose(surf.flatten(1).abs().amax(1), torch.full((20,), 0.1))
    sphere = apgd_starts(range(20), (1, 4, 4), norm="L2", eps=0.5, restart=0, seed=0)
    assert torch.allclose(sphere.flatten(1).norm(dim=1), torch.full((20,), 0.5), atol=1e-5)


SETTINGS = {
    "pgd-linf-rs": (SweepSettings("pgd", "Linf", steps=4, step_ratio=0.5, restarts=2, random_start=True, seed=3),
                    [0, 0.02, 0.04, 0.07, 0.1]),
    "pgd-l2": (SweepSettings("pgd", "L2", steps=4, step_ratio=0.5, restarts=2, random_start=False, seed=1),
               [0, 0.4, 0.8, 1.2, 2.0]),
    "apgd-ce-linf": (SweepSettings("apgd-ce", "Linf", steps=10, restarts=2, seed=3), [0, 0.02, 0.04, 0.07, 0.1]),
    "apgd-ce-l2": (SweepSettings("apgd-ce", "L2", steps=6, restarts=1, seed=1), [0, 0.4, 0.8, 1.2, 2.0]),
    "apgd-dlr-linf": (SweepSettings("apgd-dlr", "Linf", steps=8, restarts=2, seed=2), [0, 0.02, 0.04, 0.07, 0.1]),
    "worst-pgd-apgd-dlr": (SweepSettings(("pgd", "apgd-dlr"), "Linf", steps=4, restarts=2, random_start=True, seed=3),
                           [0, 0.02, 0.04, 0.07, 0.1]),
}


def test_worst_case_is_the_and_of_its_attacks(source):
    """A sample is robust under [a, b] exactly when a and b alone both leave it robust."""
    model, x, y, idx = source
    both = SweepSettings(("apgd-ce", "apgd-dlr"), "Linf", steps=6, seed=1)
    ce, dlr = SweepSettings("apgd-ce", "Linf", steps=6, seed=1), SweepSettings("apgd-dlr", "Linf", steps=6, seed=1)
    w = both.robust(model, x, y, idx, 0.04)
    assert torch.equal(w, ce.robust(model, x, y, idx, 0.04) & dlr.robust(model, x, y, idx, 0.04))
    assert both.describe() == "worst(APGD-CE-6|APGD-DLR-6)" and both.to_dict()["attack"] == ["apgd-ce", "apgd-dlr"]
    assert SweepSettings.from_dict(both.to_dict()) == both
    mixed = SweepSettings(("pgd", "apgd-ce"), steps=10)
    assert mixed.step_ratio == 0.25 and mixed.implementation.parts[1].settings.step_ratio is None


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_pruned_flags_equal_naive_flags_with_nesting(source64, name):
    settings, grid = SETTINGS[name]
    model, x, y, idx = source64
    pruned = pruned_sweep(model, batches(x, y, idx, 16), grid, settings)
    raw = naive_sweep(model, batches(x, y, idx, 13), grid, settings)  # other batches: flags must not care
    assert pruned.shape == (48, len(grid))
    np.testing.assert_array_equal(pruned, apply_nesting(raw))
    acc = pruned.mean(0)
    assert acc[0] > 0.9 and 0 < acc[2] < acc[0]  # a curve with survivors, not a trivial one
    assert np.all(np.diff(acc) <= 0)


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_a_sample_result_does_not_depend_on_its_batch(source64, name):
    """The same samples in another order, split into other batches, alone, and after other draws
    from the global RNG: every sample keeps its result."""
    settings, grid = SETTINGS[name]
    model, x, y, idx = source64
    eps = grid[2]
    torch.manual_seed(0)
    whole = settings.robust(model, x, y, idx, eps)
    perm = torch.randperm(48, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(12345)
    torch.rand(1000)
    shuffled = torch.cat([settings.robust(model, x[p], y[p], idx[p.numpy()], eps) for p in perm.split(11)])
    assert torch.equal(shuffled, whole[perm])
    alone = torch.cat([settings.robust(model, x[i:i + 1], y[i:i + 1], idx[i:i + 1], eps) for i in range(0, 48, 5)])
    assert torch.equal(alone, whole[::5])
    assert 0 < whole.float().mean() < 1


@pytest.mark.parametrize("attack", ["pgd", "apgd-ce", "apgd-dlr"])
def test_the_global_rng_is_neither_used_nor_changed(source, attack):
    model, x, y, idx = source
    settings = SweepSettings(attack, "Linf", steps=3, restarts=2, random_start=True)
    torch.manual_seed(4)
    state = torch.get_rng_state()
    settings.robust(model, x[:8], y[:8], idx[:8], 0.05)
    assert torch.equal(torch.get_rng_state(), state)


def test_pruned_pgd_sweep_equals_plain_torchattacks_loop_and_costs_less(source64):
    """The reference is torchattacks alone: PGD at each eps on every sample, nesting applied after."""
    model, x, y, idx = source64
    grid = [0, 0.03, 0.06, 0.09, 0.12, 0.15]
    settings = SweepSettings("pgd", "Linf", steps=5, step_ratio=0.5)
    calls, handle = grad_forwards(model)
    try:
        pruned = pruned_sweep(model, batches(x, y, idx, 16), grid, settings)
        pruned_cost, calls["n"] = calls["n"], 0
        with torch.no_grad():
            cols = [model(x).argmax(1) == y]
        for eps in grid[1:]:
            adv = torchattacks.PGD(model, eps=eps, alpha=0.5 * eps, steps=5, random_start=False)(x, y)
            with torch.no_grad():
                cols.append(model(adv).argmax(1) == y)
        naive_cost = calls["n"]
    finally:
        handle.remove()
    np.testing.assert_array_equal(pruned, apply_nesting(torch.stack(cols, 1).numpy()))
    # one gradient at the clean images (shared first step), then each eps attacks exactly the
    # survivors of the previous one with the 4 remaining steps
    assert pruned_cost == 48 + 4 * int(pruned[:, :-1].sum())
    assert naive_cost == 5 * 48 * (len(grid) - 1)
    assert pruned_cost < 0.5 * naive_cost


def test_pruned_apgd_sweep_equals_plain_apgd_loop_and_costs_less(source64):
    """APGD-CE: the reference is torchattacks' APGD loop run in full at each eps on every sample
    (from the same per-sample starts), nesting applied after. The pruned sweep attacks only the
    survivors of the previous eps, and drops a sample from a run once it is fooled."""
    model, x, y, idx = source64
    grid = [0, 0.03, 0.06, 0.09, 0.12, 0.15]
    settings = SweepSettings("apgd-ce", "Linf", steps=10)
    calls, handle = grad_forwards(model)
    try:
        pruned = pruned_sweep(model, batches(x, y, idx, 16), grid, settings)
        pruned_cost, calls["n"] = calls["n"], 0
        with torch.no_grad():
            cols = [model(x).argmax(1) == y]
        for eps in grid[1:]:
            start = apgd_starts(idx, x.shape[1:], norm="Linf", eps=eps, restart=0, seed=0)
            cols.append(StartableAPGD(model, "Linf", eps, steps=10).run_from(x, y, start)[0])
        naive_cost = calls["n"]
    finally:
        handle.remove()
    np.testing.assert_array_equal(pruned, apply_nesting(torch.stack(cols, 1).numpy()))
    assert naive_cost == 11 * 48 * (len(grid) - 1)  # 1 + steps gradient passes per sample and eps
    attacked = int(pruned[:, :-1].sum())  # (sample, eps) pairs the pruned sweep attacks
    assert pruned_cost < 11 * attacked  # broken samples left their runs early
    assert pruned_cost < 0.5 * naive_cost


@pytest.mark.parametrize("attack", ["pgd", "apgd-ce", "apgd-dlr"])
def test_more_restarts_only_break_more(source, attack):
    model, x, y, idx = source
    one = SweepSettings(attack, "Linf", steps=3, restarts=1).robust(model, x, y, idx, 0.04)
    three = SweepSettings(attack, "Linf", steps=3, restarts=3).robust(model, x, y, idx, 0.04)
    assert not (three & ~one).any()


def test_apgd_ce_is_at_least_as_strong_as_pgd_here(source):
    """A plausibility check of the adapter: APGD-CE-10 breaks at least what PGD-10 breaks on this
    non-robust model, within two samples."""
    model, x, y, idx = source
    pgd = SweepSettings("pgd", "Linf", steps=10).robust(model, x, y, idx, 0.04)
    apgd = SweepSettings("apgd-ce", "Linf", steps=10).robust(model, x, y, idx, 0.04)
    assert int(apgd.sum()) <= int(pgd.sum()) + 2


def test_sweep_streams_one_batch_at_a_time(source):
    model, x, y, idx = source
    pulled, seen = [0], []

    def lazy():
        for b in batches(x, y, idx, 8):
            pulled[0] += 1
            yield b

    def note(_module, args):
        seen.append((pulled[0], len(args[0])))

    handle = model.register_forward_pre_hook(note)
    try:
        flags = pruned_sweep(model, lazy(), [0, 0.03, 0.06], SweepSettings("pgd", "Linf", steps=2, step_ratio=0.5))
    finally:
        handle.remove()
    assert flags.shape == (48, 3) and pulled[0] == 6
    assert max(n for _, n in seen) <= 8
    # the model saw batch k before batch k+1 was read (calls are ordered by batches pulled)
    assert [p for p, _ in seen] == sorted(p for p, _ in seen) and seen[0][0] == 1
