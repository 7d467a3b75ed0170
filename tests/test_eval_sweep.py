"""The pruned PGD sweep: exactly the per-sample flags of the naive sweep + nesting rule, cheaper."""
import numpy as np
import pytest
import torch
import torchattacks

from eval_helpers import source_setup
from rftbench.eval_attacks import PGDSettings, make_pgd, per_sample_starts, robust_under_pgd
from rftbench.pgd_sweep import apply_nesting, naive_sweep, pruned_sweep


@pytest.fixture(scope="module")
def source(embedded_cache):
    cfg, model, test = source_setup()
    idx = np.arange(48)
    return model, test.images[idx], test.labels[idx], idx


def batches(x, y, idx, size):
    for i in range(0, len(y), size):
        yield x[i:i + size], y[i:i + size], idx[i:i + size]


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


def test_random_starts_depend_only_on_the_sample():
    a = per_sample_starts([3, 7, 9], (1, 4, 4), norm="Linf", eps=0.1, restart=1, seed=5)
    b = per_sample_starts([9, 3], (1, 4, 4), norm="Linf", eps=0.1, restart=1, seed=5)
    assert torch.equal(a[0], b[1]) and torch.equal(a[2], b[0])
    assert a.abs().max() <= 0.1 and a.abs().max() > 0.05
    assert not torch.equal(a, per_sample_starts([3, 7, 9], (1, 4, 4), norm="Linf", eps=0.1, restart=2, seed=5))
    assert not torch.equal(a, per_sample_starts([3, 7, 9], (1, 4, 4), norm="Linf", eps=0.1, restart=1, seed=6))
    l2 = per_sample_starts(range(20), (1, 4, 4), norm="L2", eps=0.5, restart=1, seed=0)
    assert (l2.flatten(1).norm(dim=1) <= 0.5 + 1e-6).all()


@pytest.mark.parametrize("settings,grid", [
    (PGDSettings("Linf", steps=4, step_ratio=0.5, restarts=2, random_start=True, seed=3), [0, 0.02, 0.04, 0.07, 0.1]),
    (PGDSettings("L2", steps=4, step_ratio=0.5, restarts=2, random_start=False, seed=1), [0, 0.4, 0.8, 1.2, 2.0]),
])
def test_pruned_flags_equal_naive_flags_with_nesting(source, settings, grid):
    model, x, y, idx = source
    pruned = pruned_sweep(model, batches(x, y, idx, 16), grid, settings)
    raw = naive_sweep(model, batches(x, y, idx, 13), grid, settings)  # other batches: flags must not care
    assert pruned.shape == (48, len(grid))
    np.testing.assert_array_equal(pruned, apply_nesting(raw))
    acc = pruned.mean(0)
    assert acc[0] > 0.9 and 0 < acc[2] < acc[0]  # a curve with survivors, not a trivial one
    assert np.all(np.diff(acc) <= 0)


def test_pruned_sweep_equals_plain_torchattacks_loop_and_costs_less(source):
    """The reference is torchattacks alone: PGD at each eps on every sample, nesting applied after."""
    model, x, y, idx = source
    grid = [0, 0.03, 0.06, 0.09, 0.12, 0.15]
    settings = PGDSettings("Linf", steps=5, step_ratio=0.5)
    calls = {"n": 0}

    def count(_module, args):
        if torch.is_grad_enabled():
            calls["n"] += len(args[0])

    handle = model.register_forward_pre_hook(count)
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


def test_more_restarts_only_break_more(source):
    model, x, y, idx = source
    one = robust_under_pgd(model, x, y, idx, 0.04, PGDSettings("Linf", steps=3, step_ratio=0.5, restarts=1))
    three = robust_under_pgd(model, x, y, idx, 0.04, PGDSettings("Linf", steps=3, step_ratio=0.5, restarts=3))
    assert not (three & ~one).any()


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
        flags = pruned_sweep(model, lazy(), [0, 0.03, 0.06], PGDSettings("Linf", steps=2, step_ratio=0.5))
    finally:
        handle.remove()
    assert flags.shape == (48, 3) and pulled[0] == 6
    assert max(n for _, n in seen) <= 8
    # the model saw batch k before batch k+1 was read (calls are ordered by batches pulled)
    assert [p for p, _ in seen] == sorted(p for p, _ in seen) and seen[0][0] == 1
