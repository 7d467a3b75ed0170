"""L1 APGD for the eps sweep: pyautoattack's own ``APGDAttack`` in ``norm="L1"`` (Croce & Hein,
2021: sparse steps on the top-k gradient coordinates, projection onto the L1 ball intersected
with the image box), run from a per-sample seeded start.

torchattacks has no L1 attack, so the sweep calls pyautoattack's ``attack_single_run`` with a
start ``x_init`` (its documented custom-start path, the one its own L1 AutoAttack uses between
eps steps) instead of letting it draw one start for the whole batch from the global RNG. The
start is drawn as pyautoattack draws it (``t`` standard normal, then ``x + t +
L1_projection(x, t, eps)``), with ``t`` from a generator seeded per sample
(:func:`l1_starts`). With a custom start pyautoattack sets its initial sparsity from the
start's L0 norm (a dense start: 1/1.5 of the coordinates) rather than 0.2; every other step is
its own and per sample, so a sample's verdict depends on the sample and its start only.

eps is in [0,1] pixel units: the bound on sum(|delta|) over all C*H*W values. Images are
(N,C,H,W) in [0,1], labels int64 (N,).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .startable import _per_sample


def l1_starts(indices: Sequence[int], shape: Sequence[int], *, eps: float, restart: int, seed: int) -> torch.Tensor:
    """The standard-normal draws ``t`` (len(indices), *shape) of pyautoattack's L1 random start,
    one private generator per sample (seeded from (seed, index, eps, restart))."""
    return _per_sample(indices, shape, eps, restart, seed, lambda g: torch.randn(shape, generator=g))


class PyAutoAttackAPGDL1:
    """pyautoattack's APGD (loss ``ce`` or ``dlr``) in L1 at ``eps`` with ``steps`` iterations."""

    def __init__(self, model: nn.Module, eps: float, steps: int, loss: str = "ce"):
        from pyautoattack.autopgd_base import APGDAttack

        if loss not in ("ce", "dlr"):
            raise ValueError(f"APGD's loss is ce or dlr, got {loss!r}")
        self.eps = eps
        self.apgd = APGDAttack(model, n_iter=steps, norm="L1", n_restarts=1, eps=eps, seed=0, loss=loss,
                               eot_iter=1, rho=0.75, device=None)

    def start_point(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """pyautoattack's L1 start from the draws ``t``: ``x + t + L1_projection(x, t, eps)``."""
        from pyautoattack.autopgd_base import L1_projection

        t = t.to(device=x.device, dtype=x.dtype)
        return x + t + L1_projection(x, t, self.eps)

    def run_from(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Robust flags (bool, N): no iterate of one APGD run from the start of ``t`` misclassified
        the sample (pyautoattack's ``acc``)."""
        self.apgd.device = x.device
        self.apgd.init_hyperparam(x)
        # pyautoattack draws (and then ignores) its own start from the global CPU RNG: keep that state
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            _, acc, _, _ = self.apgd.attack_single_run(x, y, x_init=self.start_point(x, t))
        return acc.bool()
