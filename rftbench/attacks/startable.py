"""torchattacks' PGD, TPGD and APGD loops started from a caller-given point, and per-sample seeded
random starts for them.

Why: a random start drawn for a whole batch depends on which samples share the batch, so the
pruned sweep (which attacks only survivors) would see other starts than a naive sweep.
Seeding each sample's start from (seed, sample index, eps, restart) makes a sample's result
depend on nothing but itself. torchattacks' APGD also re-seeds the global RNG and draws its
start for the whole batch: :class:`StartableAPGD` runs the same loop from a given start.
Training under DDP uses the same loops the other way round: ``draw_start`` draws the start
torchattacks would draw for the whole global batch (from the global RNG) and each rank runs
its rows of it (:class:`rftbench.attacks.TrainAttack`).

Every eps is in [0,1] pixel units (the L2 radius in the same units for L2). Images are
(N, C, H, W) floats in [0,1]; labels are int64 (N,); a start ``init_delta`` is (N, C, H, W).
"""
from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torchattacks
from torch import nn
from torch.nn import functional as F

from .norms import Norm


# ---------------------------------------------------------------- seeded per-sample starts
def start_seed(seed: int, index: int, eps: float, restart: int) -> int:
    """A 63-bit seed that depends only on (seed, sample index, eps, restart)."""
    digest = hashlib.blake2b(struct.pack("<qqdq", int(seed), int(index), float(eps), int(restart)),
                             digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _per_sample(indices: Sequence[int], shape: Sequence[int], eps: float, restart: int, seed: int,
                draw: Callable[[torch.Generator], torch.Tensor]) -> torch.Tensor:
    """(len(indices), *shape): ``draw(g)`` for each sample, ``g`` seeded by :func:`start_seed`."""
    out = torch.empty(len(indices), *shape)
    g = torch.Generator()
    for k, i in enumerate(indices):
        g.manual_seed(start_seed(seed, int(i), eps, restart))
        out[k] = draw(g)
    return out


def per_sample_starts(indices: Sequence[int], shape: Sequence[int], *, norm: Norm, eps: float, restart: int,
                      seed: int) -> torch.Tensor:
    """PGD's random starting perturbations (len(indices), *shape), one private generator per sample.

    Linf: uniform in [-eps, eps] per pixel (as torchattacks' PGD); L2: a uniform direction
    scaled to a radius uniform in [0, eps] (as torchattacks' PGDL2).
    """
    def draw(g: torch.Generator) -> torch.Tensor:
        if norm == "Linf":
            return (torch.rand(shape, generator=g) * 2 - 1) * eps
        d = torch.randn(shape, generator=g)
        r = torch.rand((), generator=g)
        return d / d.norm(p=2).clamp_min(1e-12) * r * eps

    return _per_sample(indices, shape, eps, restart, seed, draw)


def apgd_starts(indices: Sequence[int], shape: Sequence[int], *, norm: Norm, eps: float, restart: int,
                seed: int) -> torch.Tensor:
    """APGD's random starting perturbations (len(indices), *shape) on the surface of the eps-ball,
    drawn as torchattacks' APGD draws them but with one private generator per sample.

    Linf: ``eps * t / max|t|`` with t uniform in [-1, 1] per pixel; L2: ``eps * t / ||t||`` with
    t standard normal.
    """
    def draw(g: torch.Generator) -> torch.Tensor:
        if norm == "Linf":
            t = 2 * torch.rand(shape, generator=g) - 1
            return eps * t / t.abs().max()
        t = torch.randn(shape, generator=g)
        return eps * t / ((t ** 2).sum().sqrt() + 1e-12)

    return _per_sample(indices, shape, eps, restart, seed, draw)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Predicted classes (N,) of ``x`` (N,C,H,W)."""
    return model(x).argmax(1)


def clean_logits_and_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits at the clean images and the gradient of their mean cross-entropy there (the first
    PGD step's gradient at every eps, when PGD starts at the clean image)."""
    with torch.enable_grad():
        xg = x.clone().detach().requires_grad_(True)
        logits = model(xg)
        grad = torch.autograd.grad(nn.functional.cross_entropy(logits, y), xg)[0]
    return logits.detach(), grad


# ---------------------------------------------------------------- PGD with a given start
class _StartableMixin:
    """The PGD loop of torchattacks (``PGD.forward`` / ``PGDL2.forward``) with an optional start
    ``init_delta`` (N,C,H,W) or a caller-given first gradient ``first_grad`` (the gradient of the
    mean cross-entropy at the clean images, which is the same for every eps, so a sweep computes
    it once per sample instead of once per eps). Subclasses supply one norm's ``_step`` (and
    ``_cost``, what is ascended, where it is not the cross-entropy).

    Without either it is torchattacks' attack unchanged (with its own random start where it has one).
    """

    def forward(self, images, labels, init_delta: torch.Tensor | None = None,
                first_grad: torch.Tensor | None = None):
        if init_delta is None and first_grad is None:
            return super().forward(images, labels)
        return self._run(images, labels, init_delta, first_grad)

    def _run(self, images, labels, init_delta: torch.Tensor | None, first_grad: torch.Tensor | None):
        """The loop: from ``images + init_delta`` (the images where None), ``self.steps`` steps."""
        images = images.clone().detach().to(self.device)
        labels = labels if labels is None else labels.clone().detach().to(self.device)
        cost = self._cost(images, labels)
        start = images if init_delta is None else images + init_delta.to(self.device)
        adv = torch.clamp(start, 0, 1).detach()
        for step in range(self.steps):
            if step == 0 and first_grad is not None and init_delta is None:
                grad = first_grad.to(self.device)
            else:
                adv.requires_grad = True
                grad = torch.autograd.grad(cost(self.get_logits(adv)), adv)[0]
            adv = self._step(adv.detach(), grad, images)
        return adv

    def _cost(self, images: torch.Tensor, labels: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """What the attack ascends, as a function of the logits: the mean cross-entropy."""
        loss = nn.CrossEntropyLoss()
        return lambda logits: loss(logits, labels)


def _linf_step(adv: torch.Tensor, grad: torch.Tensor, images: torch.Tensor, alpha: float,
               eps: float) -> torch.Tensor:
    """torchattacks' Linf PGD step: ``alpha`` along the gradient's sign, back into the eps-ball and [0,1]."""
    adv = adv + alpha * grad.sign()
    delta = torch.clamp(adv - images, min=-eps, max=eps)
    return torch.clamp(images + delta, min=0, max=1).detach()


class StartablePGD(_StartableMixin, torchattacks.PGD):
    """torchattacks' Linf PGD with ``init_delta`` and ``first_grad`` (see :class:`_StartableMixin`)."""

    def _step(self, adv: torch.Tensor, grad: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        return _linf_step(adv, grad, images, self.alpha, self.eps)

    def draw_start(self, like: torch.Tensor) -> torch.Tensor | None:
        """The random start ``PGD.forward`` draws (from the global RNG) for a batch shaped and laid
        out like ``like`` (overwritten): uniform in [-eps, eps]; None without ``random_start``."""
        return like.uniform_(-self.eps, self.eps) if self.random_start else None


class StartablePGDL2(_StartableMixin, torchattacks.PGDL2):
    """torchattacks' L2 PGD with ``init_delta`` and ``first_grad`` (see :class:`_StartableMixin`),
    which also runs on channels-last batches and models.

    ``PGDL2.forward`` flattens the gradient with ``.view``, which fails on the channels-last
    gradient a channels-last model returns (whatever the batch's layout). Untargeted, this class
    runs the same loop with ``reshape`` instead (the same numbers on contiguous tensors) and
    draws its random start as ``PGDL2.forward`` draws it for a contiguous batch, so a channels-last
    batch starts where the same contiguous batch starts.
    """

    def forward(self, images, labels, init_delta: torch.Tensor | None = None,
                first_grad: torch.Tensor | None = None):
        if self.targeted:  # torchattacks' loop (contiguous only); rftbench never sets a target
            return super().forward(images, labels, init_delta, first_grad)
        if init_delta is None and first_grad is None:
            init_delta = self.draw_start(torch.empty(images.shape, dtype=images.dtype, device=self.device))
        return self._run(images, labels, init_delta, first_grad)

    def _step(self, adv: torch.Tensor, grad: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        n = len(images)
        grad = grad / (grad.reshape(n, -1).norm(p=2, dim=1) + self.eps_for_division).view(n, 1, 1, 1)
        adv = adv + self.alpha * grad
        delta = adv - images
        factor = torch.clamp(self.eps / delta.reshape(n, -1).norm(p=2, dim=1), max=1.0)
        return torch.clamp(images + delta * factor.view(-1, 1, 1, 1), min=0, max=1).detach()

    def draw_start(self, like: torch.Tensor) -> torch.Tensor | None:
        """The random start ``PGDL2.forward`` draws for a contiguous batch shaped like ``like``: a
        normal direction scaled to a radius uniform in [0, eps]; None without ``random_start``.
        Drawn into a new contiguous tensor: a channels-last ``like`` gets the same start."""
        if not self.random_start:
            return None
        delta = torch.empty(like.shape, dtype=like.dtype, device=like.device).normal_()
        n = delta.view(len(delta), -1).norm(p=2, dim=1).view(len(delta), 1, 1, 1)
        r = torch.zeros_like(n).uniform_(0, 1)
        delta *= r / n * self.eps
        return delta


class StartableTPGD(_StartableMixin, torchattacks.TPGD):
    """torchattacks' TPGD (the TRADES attack: Linf PGD on the KL divergence from the clean
    prediction) with ``init_delta`` (see :class:`_StartableMixin`)."""

    def _cost(self, images: torch.Tensor, labels: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        p_clean = F.softmax(self.get_logits(images).detach(), dim=1)
        kl = nn.KLDivLoss(reduction="sum")
        return lambda logits: kl(F.log_softmax(logits, dim=1), p_clean)

    def _step(self, adv: torch.Tensor, grad: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        return _linf_step(adv, grad, images, self.alpha, self.eps)

    def draw_start(self, like: torch.Tensor) -> torch.Tensor:
        """The start ``TPGD.forward`` draws for a batch like ``like`` (overwritten): 0.001 * N(0, 1)."""
        return 0.001 * like.normal_()


def make_pgd(model: nn.Module, norm: Norm, eps: float, steps: int, step_ratio: float) -> torchattacks.Attack:
    """PGD at ``eps`` with step size ``step_ratio * eps`` and no built-in random start."""
    cls = StartablePGD if norm == "Linf" else StartablePGDL2
    return cls(model, eps=eps, alpha=step_ratio * eps, steps=steps, random_start=False)


# ---------------------------------------------------------------- APGD with a given start
@dataclass
class _APGDState:
    """The per-sample state of one APGD run (torchattacks' ``attack_single_run`` variables)."""

    x_adv: torch.Tensor          # current iterate (N,C,H,W)
    x_old: torch.Tensor          # previous iterate (momentum)
    grad: torch.Tensor           # loss gradient at x_adv
    x_best: torch.Tensor         # highest-loss iterate
    grad_best: torch.Tensor
    loss_best: torch.Tensor      # (N,)
    x_best_adv: torch.Tensor     # last misclassified iterate (the start where none)
    acc: torch.Tensor            # bool (N,): no iterate misclassified so far
    step_size: torch.Tensor      # (N,1,1,1)
    loss_steps: torch.Tensor     # (steps, N) on the CPU
    loss_best_last_check: torch.Tensor
    reduced_last_check: np.ndarray
    k: int                       # iterations between step-size checks
    counter: int = 0

    @torch.no_grad()
    def subset(self, keep: torch.Tensor) -> "_APGDState":
        """The state of the samples where ``keep`` (bool, N) holds (every field is per sample,
        except the step-size check schedule ``k`` / ``counter``, which is shared and kept)."""
        cpu = keep.cpu()

        def take(t: torch.Tensor) -> torch.Tensor:
            return t.detach()[keep]

        return _APGDState(x_adv=take(self.x_adv), x_old=take(self.x_old), grad=take(self.grad),
                          x_best=take(self.x_best), grad_best=take(self.grad_best), loss_best=take(self.loss_best),
                          x_best_adv=take(self.x_best_adv), acc=take(self.acc), step_size=take(self.step_size),
                          loss_steps=self.loss_steps[:, cpu], loss_best_last_check=take(self.loss_best_last_check),
                          reduced_last_check=self.reduced_last_check[cpu.numpy()], k=self.k, counter=self.counter)


class StartableAPGD(torchattacks.APGD):
    """torchattacks' APGD (loss ``ce`` or ``dlr``, ``eot_iter`` 1) run from a caller-given start.

    :meth:`run_from` is ``APGD.attack_single_run`` with the random start ``init_delta``
    (N,C,H,W) supplied (:func:`apgd_starts`) instead of drawn from the global RNG for the whole
    batch; every other computation is torchattacks' own, per sample (step sizes, oscillation
    checks), so a sample's result depends only on the sample and its start. It returns
    ``(acc, x_best_adv)``: acc (bool, N) says that no iterate misclassified the sample, and
    x_best_adv holds the misclassified iterate where one did.
    """

    def __init__(self, model: nn.Module, norm: Norm = "Linf", eps: float = 8 / 255, steps: int = 10,
                 loss: str = "ce", rho: float = 0.75):
        if loss not in ("ce", "dlr"):
            raise ValueError(f"APGD's loss is ce or dlr, got {loss!r}")
        super().__init__(model, norm=norm, eps=eps, steps=steps, n_restarts=1, loss=loss, eot_iter=1, rho=rho)

    def forward(self, images: torch.Tensor, labels: torch.Tensor, init_delta: torch.Tensor | None = None):
        if init_delta is None:
            return super().forward(images, labels)
        images = images.clone().detach().to(self.device)
        labels = labels.clone().detach().to(self.device)
        return self.run_from(images, labels, init_delta)[1]

    def _loss_grad(self, x_adv: torch.Tensor, y: torch.Tensor):
        """(grad, logits, per-sample loss) at ``x_adv`` (the gradient of the summed loss)."""
        criterion = nn.CrossEntropyLoss(reduction="none") if self.loss == "ce" else self.dlr_loss
        x_adv.requires_grad_()
        with torch.enable_grad():
            logits = self.get_logits(x_adv)
            loss_indiv = criterion(logits, y)
            loss = loss_indiv.sum()
        grad = torch.autograd.grad(loss, [x_adv])[0].detach()
        return grad, logits, loss_indiv

    def _init_state(self, x: torch.Tensor, y: torch.Tensor, init_delta: torch.Tensor) -> _APGDState:
        x_adv = (x.detach() + init_delta.to(self.device)).clamp(0.0, 1.0)
        x_best, x_best_adv = x_adv.clone(), x_adv.clone()
        grad, logits, loss_indiv = self._loss_grad(x_adv, y)
        loss_best = loss_indiv.detach().clone()
        step_size = (self.eps * torch.ones([x.shape[0], 1, 1, 1]).to(self.device).detach()
                     * torch.Tensor([2.0]).to(self.device).detach().reshape([1, 1, 1, 1]))
        return _APGDState(x_adv=x_adv, x_old=x_adv.clone(), grad=grad, x_best=x_best, grad_best=grad.clone(),
                          loss_best=loss_best, x_best_adv=x_best_adv, acc=logits.detach().max(1)[1] == y,
                          step_size=step_size, loss_steps=torch.zeros([self.steps, x.shape[0]]),
                          loss_best_last_check=loss_best.clone(),
                          reduced_last_check=np.ones(loss_best.shape, dtype=bool),
                          k=max(int(0.22 * self.steps), 1))

    @torch.no_grad()
    def _linf_step(self, x: torch.Tensor, s: _APGDState, a: float, grad2: torch.Tensor) -> torch.Tensor:
        x_adv, eps = s.x_adv, self.eps
        x_1 = x_adv + s.step_size * torch.sign(s.grad)
        x_1 = torch.clamp(torch.min(torch.max(x_1, x - eps), x + eps), 0.0, 1.0)
        return torch.clamp(torch.min(torch.max(x_adv + (x_1 - x_adv) * a + grad2 * (1 - a), x - eps), x + eps),
                           0.0, 1.0)

    @torch.no_grad()
    def _l2_step(self, x: torch.Tensor, s: _APGDState, a: float, grad2: torch.Tensor) -> torch.Tensor:
        x_adv, grad = s.x_adv, s.grad
        eps = self.eps * torch.ones(x.shape).to(self.device).detach()

        def norm(d):
            return (d ** 2).sum(dim=(1, 2, 3), keepdim=True).sqrt()

        x_1 = x_adv + s.step_size * grad / (norm(grad) + 1e-12)
        x_1 = torch.clamp(x + (x_1 - x) / (norm(x_1 - x) + 1e-12) * torch.min(eps, norm(x_1 - x)), 0.0, 1.0)
        x_1 = x_adv + (x_1 - x_adv) * a + grad2 * (1 - a)
        return torch.clamp(x + (x_1 - x) / (norm(x_1 - x) + 1e-12) * torch.min(eps, norm(x_1 - x) + 1e-12),
                           0.0, 1.0)

    def _iterate(self, x: torch.Tensor, y: torch.Tensor, s: _APGDState, i: int) -> None:
        """One APGD iteration: momentum step, new gradient, best points, step-size check."""
        with torch.no_grad():
            s.x_adv = s.x_adv.detach()
            grad2 = s.x_adv - s.x_old
            s.x_old = s.x_adv.clone()
            step = self._linf_step if self.norm == "Linf" else self._l2_step
            s.x_adv = step(x, s, 0.75 if i > 0 else 1.0, grad2) + 0.0
        s.grad, logits, loss_indiv = self._loss_grad(s.x_adv, y)
        pred = logits.detach().max(1)[1] == y
        s.acc = torch.min(s.acc, pred)
        fooled = ~pred
        s.x_best_adv[fooled] = s.x_adv[fooled] + 0.0
        with torch.no_grad():
            y1 = loss_indiv.detach().clone()
            s.loss_steps[i] = y1.cpu() + 0
            better = y1 > s.loss_best
            s.x_best[better] = s.x_adv[better].clone()
            s.grad_best[better] = s.grad[better].clone()
            s.loss_best[better] = y1[better] + 0
            s.counter += 1
            if s.counter == s.k:
                self._check_step_size(s, i)

    def _check_step_size(self, s: _APGDState, i: int) -> None:
        """Halve the step of samples whose loss oscillates or stopped improving; restart them at
        their best point (torchattacks' checkpoint rule)."""
        fl_osc = self.check_oscillation(s.loss_steps.detach().cpu().numpy(), i, s.k, None, k3=self.thr_decr)
        fl_no_impr = (~s.reduced_last_check) * (s.loss_best_last_check.cpu().numpy() >= s.loss_best.cpu().numpy())
        fl_osc = ~(~fl_osc * ~fl_no_impr)
        s.reduced_last_check = np.copy(fl_osc)
        s.loss_best_last_check = s.loss_best.clone()
        if np.sum(fl_osc) > 0:
            where = torch.as_tensor(np.where(fl_osc)[0], device=s.x_adv.device)
            s.step_size[where] /= 2.0
            s.x_adv[where] = s.x_best[where].clone()
            s.grad[where] = s.grad_best[where].clone()
        s.counter = 0
        s.k = max(s.k - max(int(0.03 * self.steps), 1), max(int(0.06 * self.steps), 1))

    def best_loss_from(self, x: torch.Tensor, y: torch.Tensor, init_delta: torch.Tensor) -> torch.Tensor:
        """``APGD.perturb(x, y, best_loss=True)`` with one restart, from ``x + init_delta``: every
        sample's highest-loss iterate (the clean image where the loss was never finite)."""
        with torch.no_grad():
            self.get_logits(x)  # perturb's first forward (it counts for BatchNorm in training mode)
        s = self._init_state(x, y, init_delta)
        for i in range(self.steps):
            self._iterate(x, y, s, i)
        return torch.where((s.loss_best > -float("inf")).view(-1, 1, 1, 1), s.x_best, x).detach()

    def run_from(self, x: torch.Tensor, y: torch.Tensor, init_delta: torch.Tensor,
                 stop_when_fooled: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """One APGD run from ``x + init_delta``: (acc (bool, N), x_best_adv (N,C,H,W)).

        ``stop_when_fooled``: a sample leaves the batch as soon as an iterate misclassifies it.
        acc is unchanged (a fooled sample stays fooled, and every other sample's run is its own);
        x_best_adv then holds the first misclassified iterate instead of the last.
        """
        s = self._init_state(x, y, init_delta)
        if not stop_when_fooled:
            for i in range(self.steps):
                self._iterate(x, y, s, i)
            return s.acc, s.x_best_adv
        acc, adv = s.acc.clone(), s.x_best_adv.detach().clone()
        active = torch.arange(len(y), device=y.device)
        for i in range(self.steps):
            if not bool(s.acc.all()):
                keep = s.acc
                adv[active[~keep]] = s.x_best_adv.detach()[~keep]
                acc[active[~keep]] = False
                s, x, y, active = s.subset(keep), x[keep], y[keep], active[keep]
                if len(active) == 0:
                    return acc, adv
            self._iterate(x, y, s, i)
        acc[active] = s.acc
        adv[active] = s.x_best_adv.detach()
        return acc, adv


def make_apgd(model: nn.Module, norm: Norm, eps: float, steps: int, loss: str = "ce") -> StartableAPGD:
    """APGD at ``eps`` with the ``ce`` or ``dlr`` loss (step size adapted by APGD itself, starting
    at 2 * eps)."""
    return StartableAPGD(model, norm=norm, eps=eps, steps=steps, loss=loss)
