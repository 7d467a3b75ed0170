"""Evaluation attacks: torchattacks PGD with per-sample seeded random starts, and AutoAttack
(pyautoattack, the reference; torchattacks' as a second opinion) run in fixed chunks with a
per-attack breakdown.

Every eps is in [0,1] pixel units (the L2 radius in the same units for L2). Images are
(N, C, H, W) floats in [0,1]; labels are int64 (N,).

Why per-sample seeds: a random start drawn for a whole batch depends on which samples share
the batch, so the pruned sweep (which attacks only survivors) would see other starts than a
naive sweep. Seeding each sample's start from (seed, sample index, eps, restart) makes a
sample's result depend on nothing but itself.
"""
from __future__ import annotations

import hashlib
import logging
import struct
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import numpy as np
import torch
import torchattacks
from torch import nn

from .attacks import autoattack as build_pyautoattack
from .errors import ConfigError

Norm = Literal["Linf", "L2"]


# ---------------------------------------------------------------- PGD with a given start
class _StartableMixin:
    """The PGD loop of torchattacks (``PGD.forward`` / ``PGDL2.forward``) with an optional start
    ``init_delta`` (N,C,H,W) or a caller-given first gradient ``first_grad`` (the gradient of the
    mean cross-entropy at the clean images, which is the same for every eps, so a sweep computes
    it once per sample instead of once per eps). Subclasses supply one norm's ``_step``.

    Without either it is torchattacks' attack unchanged (``random_start=False``).
    """

    def forward(self, images, labels, init_delta: torch.Tensor | None = None,
                first_grad: torch.Tensor | None = None):
        if init_delta is None and first_grad is None:
            return super().forward(images, labels)
        images = images.clone().detach().to(self.device)
        labels = labels.clone().detach().to(self.device)
        start = images if init_delta is None else images + init_delta.to(self.device)
        adv = torch.clamp(start, 0, 1).detach()
        loss = nn.CrossEntropyLoss()
        for step in range(self.steps):
            if step == 0 and first_grad is not None and init_delta is None:
                grad = first_grad.to(self.device)
            else:
                adv.requires_grad = True
                grad = torch.autograd.grad(loss(self.get_logits(adv), labels), adv)[0]
            adv = self._step(adv.detach(), grad, images)
        return adv


class StartablePGD(_StartableMixin, torchattacks.PGD):
    """torchattacks' Linf PGD with ``init_delta`` and ``first_grad`` (see :class:`_StartableMixin`)."""

    def _step(self, adv: torch.Tensor, grad: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        adv = adv + self.alpha * grad.sign()
        delta = torch.clamp(adv - images, min=-self.eps, max=self.eps)
        return torch.clamp(images + delta, min=0, max=1).detach()


class StartablePGDL2(_StartableMixin, torchattacks.PGDL2):
    """torchattacks' L2 PGD with ``init_delta`` and ``first_grad`` (see :class:`_StartableMixin`)."""

    def _step(self, adv: torch.Tensor, grad: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        n = len(images)
        grad = grad / (grad.view(n, -1).norm(p=2, dim=1) + self.eps_for_division).view(n, 1, 1, 1)
        adv = adv + self.alpha * grad
        delta = adv - images
        factor = torch.clamp(self.eps / delta.view(n, -1).norm(p=2, dim=1), max=1.0)
        return torch.clamp(images + delta * factor.view(-1, 1, 1, 1), min=0, max=1).detach()


def make_pgd(model: nn.Module, norm: Norm, eps: float, steps: int, step_ratio: float) -> torchattacks.Attack:
    """PGD at ``eps`` with step size ``step_ratio * eps`` and no built-in random start."""
    cls = StartablePGD if norm == "Linf" else StartablePGDL2
    return cls(model, eps=eps, alpha=step_ratio * eps, steps=steps, random_start=False)


def start_seed(seed: int, index: int, eps: float, restart: int) -> int:
    """A 63-bit seed that depends only on (seed, sample index, eps, restart)."""
    digest = hashlib.blake2b(struct.pack("<qqdq", int(seed), int(index), float(eps), int(restart)),
                             digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def per_sample_starts(indices: Sequence[int], shape: Sequence[int], *, norm: Norm, eps: float, restart: int,
                      seed: int) -> torch.Tensor:
    """Random starting perturbations (len(indices), *shape), one private generator per sample.

    Linf: uniform in [-eps, eps] per pixel (as torchattacks' PGD); L2: a uniform direction
    scaled to a radius uniform in [0, eps] (as torchattacks' PGDL2).
    """
    out = torch.empty(len(indices), *shape)
    g = torch.Generator()
    for k, i in enumerate(indices):
        g.manual_seed(start_seed(seed, int(i), eps, restart))
        if norm == "Linf":
            out[k] = (torch.rand(shape, generator=g) * 2 - 1) * eps
        else:
            d = torch.randn(shape, generator=g)
            r = torch.rand((), generator=g)
            out[k] = d / d.norm(p=2).clamp_min(1e-12) * r * eps
    return out


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Predicted classes (N,) of ``x`` (N,C,H,W)."""
    return model(x).argmax(1)


@dataclass(frozen=True)
class PGDSettings:
    """One PGD evaluation attack: ``restarts`` runs per eps, step size ``step_ratio * eps``.

    Restart 0 starts at the clean image unless ``random_start``; every further restart starts
    at a per-sample seeded random point (:func:`per_sample_starts`). A sample counts as broken
    at an eps when any restart misclassifies it.
    """

    norm: Norm = "Linf"
    steps: int = 10
    step_ratio: float = 0.25
    restarts: int = 1
    random_start: bool = False
    seed: int = 0

    def describe(self) -> str:
        return describe_pgd(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return {"norm": self.norm, "steps": self.steps, "step_size_ratio": self.step_ratio,
                "restarts": self.restarts, "random_start": self.random_start, "seed": self.seed,
                "library": "torchattacks", "class": "PGD" if self.norm == "Linf" else "PGDL2",
                "start_seeds": "per sample from (seed, dataset index, eps, restart)"}


def clean_logits_and_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits at the clean images and the gradient of their mean cross-entropy there (the first
    PGD step's gradient at every eps, when PGD starts at the clean image)."""
    with torch.enable_grad():
        xg = x.clone().detach().requires_grad_(True)
        logits = model(xg)
        grad = torch.autograd.grad(nn.functional.cross_entropy(logits, y), xg)[0]
    return logits.detach(), grad


def describe_pgd(settings: dict[str, Any]) -> str:
    """Short name of a PGD (``PGDSettings.to_dict()``) for the ER name: ``PGD-10``, ``L2-PGD-20+rs``
    (random start) or ``PGD-10x3`` (3 restarts)."""
    name = f"{'L2-' if settings['norm'] == 'L2' else ''}PGD-{settings['steps']}"
    if settings.get("random_start"):
        name += "+rs"
    if settings.get("restarts", 1) > 1:
        name += f"x{settings['restarts']}"
    return name


def robust_under_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, indices: Sequence[int], eps: float,
                     s: PGDSettings, first_grad: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample robustness (bool, N) under PGD at ``eps``; ``indices`` are the samples' dataset
    indices (they seed the random starts). Only samples that survive a restart face the next.
    ``first_grad`` (N,C,H,W): see :func:`clean_logits_and_grad` (used by a start at the clean image)."""
    alive = torch.ones(len(y), dtype=torch.bool, device=y.device)
    if eps <= 0:
        return predict(model, x) == y
    atk = make_pgd(model, s.norm, eps, s.steps, s.step_ratio)
    idx_np = np.asarray(indices)
    for r in range(s.restarts):
        pos = alive.nonzero().flatten()
        if len(pos) == 0:
            break
        if r > 0 or s.random_start:
            init = per_sample_starts(idx_np[pos.cpu().numpy()], x.shape[1:], norm=s.norm, eps=eps, restart=r,
                                     seed=s.seed)
            adv = atk(x[pos], y[pos], init_delta=init)
        elif first_grad is not None:
            adv = atk(x[pos], y[pos], first_grad=first_grad[pos])
        else:
            adv = atk(x[pos], y[pos])
        alive[pos] = predict(model, adv) == y[pos]
    return alive


# ---------------------------------------------------------------- AutoAttack
CLEAN_WRONG = 1  # code in ``broken_by``: misclassified without attack; 0 = robust; 2 + k = attack k


class _CaptureLog(logging.Handler):
    """Collects pyautoattack's own warnings (randomized / dynamic defence, probabilities as output...)."""

    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if msg not in self.messages:
            self.messages.append(msg)


@dataclass
class AutoAttackResult:
    """Per-sample outcome of AutoAttack: ``broken_by`` (uint8, N): 0 robust, 1 misclassified
    clean, 2 + k broken by ``attacks[k]`` (the first attack in order that broke it)."""

    attacks: list[str]
    broken_by: np.ndarray
    n_target_classes: int
    library_warnings: list[str] = field(default_factory=list)


def run_pyautoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: Norm, version: str,
                     num_classes: int, seed: int, batch_size: int, attacks: list[str] | None = None,
                     device: torch.device | str = "cpu") -> AutoAttackResult:
    """pyautoattack on one chunk (N <= ``batch_size`` samples), one attack at a time.

    Each attack of the version's list runs through ``run_standard_evaluation`` on the survivors
    of the previous ones, with the settings the version sets: with N <= batch_size this is
    exactly what one ``run_standard_evaluation`` call on the chunk computes (the same batches,
    the same seeds), plus which attack broke each sample.
    """
    if len(x) > batch_size:
        raise ValueError(f"a chunk holds at most batch_size={batch_size} samples, got {len(x)}.")
    aa = build_pyautoattack(model, eps=eps, norm=norm, version=version, num_classes=num_classes, device=device,
                            seed=seed, attacks=attacks)
    order = list(aa.attacks_to_run)
    broken_by = np.zeros(len(y), dtype=np.uint8)
    alive = predict(model, x) == y
    broken_by[~alive.cpu().numpy()] = CLEAN_WRONG
    log = logging.getLogger("auto-attack")
    capture = _CaptureLog()
    log.addHandler(capture)
    try:
        for k, name in enumerate(order):
            pos = alive.nonzero().flatten()
            if len(pos) == 0:
                break
            aa.attacks_to_run = [name]
            _, y_adv = aa.run_standard_evaluation(x[pos], y[pos], batch_size=batch_size)
            broke = (y_adv.to(y.device) != y[pos])
            alive[pos[broke]] = False
            broken_by[pos[broke].cpu().numpy()] = 2 + k
    finally:
        log.removeHandler(capture)
        aa.attacks_to_run = order
    return AutoAttackResult(order, broken_by, int(aa.apgd_targeted.n_target_classes), capture.messages)


def run_torchattacks_autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: Norm,
                                version: str, num_classes: int, seed: int) -> np.ndarray:
    """torchattacks' AutoAttack (a second opinion beside pyautoattack): robust flags (bool, N)."""
    if version not in ("standard", "plus", "rand"):
        raise ConfigError(f"torchattacks' AutoAttack has no version {version!r}; the second opinion needs "
                          f"autoattack.version standard, plus or rand.")
    atk = torchattacks.AutoAttack(model, norm=norm, eps=eps, version=version, n_classes=num_classes, seed=seed)
    adv = atk(x, y)
    return (predict(model, adv) == y).cpu().numpy()
