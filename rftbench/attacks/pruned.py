"""Eps sweeps over a grid, for any sweep attack: the pruned sweep (what the evaluator runs) and
the naive sweep (its reference, also used by the sanity checks).

Eps-balls nest: a sample broken at a smaller eps counts as broken at every larger one. The
pruned sweep therefore attacks, at each larger eps, only the survivors of the previous one.
Its per-sample flags equal those of the naive sweep (every eps attacks every sample) after the
nesting rule (:func:`apply_nesting`), because a sample's attack depends on nothing but the
sample (no random start, or starts seeded per sample: :mod:`rftbench.attacks.sweep`).

Flags are (n_samples, len(eps_grid)) booleans; column 0 (eps = 0) is clean correctness.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable, Optional, Sequence

import numpy as np
import torch
from torch import nn

from .startable import clean_logits_and_grad, predict
from .sweep import SweepSettings

# one batch: images (N,C,H,W) in [0,1], labels (N,), dataset indices (N,) that seed random starts
Batch = tuple[torch.Tensor, torch.Tensor, Sequence[int]]
# progress hook of the pruned sweep: (batch, grid point j, eps, samples robust there, samples in the batch)
EpsHook = Callable[[int, int, float, int, int], None]


def _check_grid(eps_grid: Sequence[float]) -> None:
    if len(eps_grid) < 1 or eps_grid[0] != 0 or any(b <= a for a, b in zip(eps_grid, eps_grid[1:])):
        raise ValueError(f"the eps grid must start at 0 and increase strictly, got {list(eps_grid)}")


def _pruned_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: np.ndarray, eps_grid: Sequence[float],
                  settings: SweepSettings, on_eps: Optional[Callable[[int, float, int], None]] = None,
                  ) -> torch.Tensor:
    """Flags (N, len(eps_grid)) of one batch: each eps attacks the survivors of the previous one;
    ``on_eps(j, eps, n_robust)`` after each grid point (also those skipped once none survives)."""
    attack = settings.implementation
    flags = torch.zeros(len(y), len(eps_grid), dtype=torch.bool)
    # with restart 0 at the clean image (PGD without random start), its first step has the same
    # gradient at every eps: one forward-backward at the clean images gives it and the clean predictions
    if attack.shares_first_step() and len(eps_grid) > 1:
        logits, first_grad = clean_logits_and_grad(model, x, y)
        alive = logits.argmax(1) == y
    else:
        first_grad, alive = None, predict(model, x) == y
    flags[:, 0] = alive.cpu()
    report = on_eps or (lambda j, eps, n: None)
    report(0, float(eps_grid[0]), int(flags[:, 0].sum()))
    for j, eps in enumerate(eps_grid[1:], start=1):
        pos = alive.nonzero().flatten()
        if len(pos) > 0:
            alive[pos] = attack.robust(model, x[pos], y[pos], idx[pos.cpu().numpy()], eps,
                                       first_grad=None if first_grad is None else first_grad[pos])
            flags[:, j] = alive.cpu()
        report(j, float(eps), int(flags[:, j].sum()))
    return flags


def pruned_sweep(model: nn.Module, batches: Iterable[Batch], eps_grid: Sequence[float], settings: SweepSettings,
                 device: torch.device | str = "cpu", on_eps: Optional[EpsHook] = None) -> np.ndarray:
    """Per-sample flags (n, len(eps_grid)) of the pruned sweep. Streams ``batches``: memory holds
    one batch at a time. ``on_eps(b, j, eps, n_robust, n)``: after grid point j of batch b, its
    ``n_robust`` of ``n`` samples robust (progress display; the flags do not depend on it)."""
    _check_grid(eps_grid)
    model.eval()
    out = []
    with input_gradients_only(model):
        for b, (x, y, idx) in enumerate(batches):
            hook = None if on_eps is None else (lambda j, eps, r, b=b, n=len(y): on_eps(b, j, eps, r, n))
            out.append(_pruned_batch(model, x.to(device), y.to(device), np.asarray(idx), eps_grid, settings, hook))
    return torch.cat(out).numpy() if out else np.zeros((0, len(eps_grid)), dtype=bool)


@contextmanager
def input_gradients_only(model: nn.Module):
    """Attacks need gradients with respect to the input only: switch the parameters' off (autograd
    then keeps nothing for them) and restore them afterwards."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p in params:
            p.requires_grad_(True)


def naive_sweep(model: nn.Module, batches: Iterable[Batch], eps_grid: Sequence[float], settings: SweepSettings,
                device: torch.device | str = "cpu") -> np.ndarray:
    """Raw per-sample flags (n, len(eps_grid)): every eps attacks every sample, no nesting rule.

    A sample counts as robust at eps only when it is also classified correctly clean (the centre
    of the ball). ``apply_nesting`` of this equals :func:`pruned_sweep`; the raw flags themselves
    show where an attack fails at a larger eps on a sample it broke at a smaller one.
    """
    _check_grid(eps_grid)
    model.eval()
    attack = settings.implementation
    out = []
    with input_gradients_only(model):
        for x, y, idx in batches:
            x, y = x.to(device), y.to(device)
            clean = (predict(model, x) == y).cpu()
            cols = [clean] + [attack.robust(model, x, y, idx, eps).cpu() & clean for eps in eps_grid[1:]]
            out.append(torch.stack(cols, 1))
    return torch.cat(out).numpy() if out else np.zeros((0, len(eps_grid)), dtype=bool)


def robust_at(model: nn.Module, batches: Iterable[Batch], eps: float, settings: SweepSettings,
              device: torch.device | str = "cpu") -> np.ndarray:
    """Per-sample robustness (bool, n) under the sweep attack at one ``eps``, batch by batch."""
    attack = settings.implementation
    parts = [attack.robust(model, x.to(device), y.to(device), idx, eps).cpu().numpy() for x, y, idx in batches]
    return np.concatenate(parts) if parts else np.zeros(0, bool)


def apply_nesting(raw_flags: np.ndarray) -> np.ndarray:
    """A sample broken at some eps is broken at every larger eps: cumulative AND along the grid."""
    return np.logical_and.accumulate(np.asarray(raw_flags, dtype=bool), axis=1)
