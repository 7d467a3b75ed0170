"""Training attacks: thin adapters over torchattacks behind the :data:`ATTACKS` registry, and
:class:`TrainAttack`, whose eps follows the schedule step by step.

All eps are in [0,1] pixel units for Linf (the L2 radius in the same units for L2); models
take [0,1] images (N, C, H, W), so torchattacks sees the same threat model as the evaluation.

The built-in attacks are torchattacks' classes with two additions (:mod:`.startable`):
``draw_start(like)`` draws the random start torchattacks would draw for a batch like ``like``,
and ``forward(..., init_delta=)`` runs torchattacks' loop from a given start. Under DDP every
rank draws the start of the whole global batch and attacks from its rows of it, so the ranks
together use exactly the starts (and leave the RNG exactly where) one process would.
"""
from __future__ import annotations

from typing import Literal, Optional

import torch
import torchattacks
from torch import nn

from ..errors import ConfigError
from ..registry import Registry
from .norms import Norm
from .startable import StartableAPGD, StartablePGD, StartablePGDL2, StartableTPGD

# A training-attack factory builds a torchattacks Attack for (model, norm, steps, random_start);
# eps and step size are set per step through :class:`TrainAttack`.
ATTACKS: Registry = Registry("attack")


@ATTACKS.register("pgd")
def _pgd(model: nn.Module, norm: Norm, steps: int, random_start: bool) -> torchattacks.Attack:
    cls = StartablePGD if norm == "Linf" else StartablePGDL2
    return cls(model, eps=0.0, alpha=0.0, steps=steps, random_start=random_start)


class _TrainingAPGD(StartableAPGD):
    """torchattacks' APGD as a training attack: the highest-loss point for every sample.

    ``APGD.forward`` returns the clean image for every sample it fails to misclassify (useless
    for training) and re-seeds the global RNG with a fixed seed on every call (which would
    replay the same random numbers at every training step). ``perturb(best_loss=True)`` does
    neither: it returns the highest-loss iterate of each sample and draws its random start
    from the training RNG stream, so it is also reproducible and resumable.
    """

    def forward(self, images: torch.Tensor, labels: torch.Tensor,
                init_delta: Optional[torch.Tensor] = None) -> torch.Tensor:
        images = images.clone().detach().to(self.device)
        labels = labels.clone().detach().to(self.device)
        if init_delta is not None:
            return self.best_loss_from(images, labels, init_delta)
        _, adv_images = self.perturb(images, labels, best_loss=True)
        return adv_images.detach()

    def draw_start(self, like: torch.Tensor) -> torch.Tensor:
        """The start ``APGD.attack_single_run`` draws (from the global CPU RNG) for a batch shaped
        like ``like``: on the surface of the eps-ball."""
        n = len(like)
        if self.norm == "Linf":
            t = 2 * torch.rand(like.shape).to(self.device).detach() - 1
            return self.eps * t / t.reshape([n, -1]).abs().max(dim=1, keepdim=True)[0].reshape([-1, 1, 1, 1])
        t = torch.randn(like.shape).to(self.device).detach()
        return self.eps * t / ((t ** 2).sum(dim=(1, 2, 3), keepdim=True).sqrt() + 1e-12)


@ATTACKS.register("apgd")
def _apgd(model: nn.Module, norm: Norm, steps: int, random_start: bool) -> torchattacks.Attack:
    return _TrainingAPGD(model, norm=norm, eps=0.0, steps=steps, loss="ce")


@ATTACKS.register("trades_kl")
def _tpgd(model: nn.Module, norm: Norm, steps: int, random_start: bool) -> torchattacks.Attack:
    if norm != "Linf":
        raise ConfigError("the TRADES attack (torchattacks.TPGD) supports only norm: Linf; "
                          "set threat.norm: Linf or use train.objective: pgd_at.")
    return StartableTPGD(model, eps=0.0, alpha=0.0, steps=steps)


BN_MODES = ("eval", "train")


class TrainAttack:
    """A torchattacks attack whose eps (and step size = ``step_ratio`` * eps) change per step.

    eps is in [0,1] pixel units (Linf) or the L2 radius in the same units; inputs are
    (N, C, H, W) images in [0, 1] and so are the returned adversarial examples.

    ``bn_mode`` says how the model runs while the attack crafts its examples:

    - ``"eval"`` (the default): the whole model in eval mode (torchattacks' default, and what
      the TRADES reference code does). BatchNorm normalises with its running statistics and
      does not update them, dropout is off: the attack sees the deterministic network that
      evaluation sees, and the k attack passes never pollute the running statistics.
    - ``"train"``: the whole model in training mode (as in Madry et al.'s and Rice et al.'s
      PGD-AT code). BatchNorm normalises with the statistics of the adversarial batch and
      updates its running statistics on each of the k attack passes; dropout is active.

    Either way every module's train/eval flag is restored afterwards.
    """

    def __init__(self, model: nn.Module, name: str, norm: Norm, steps: int, step_ratio: float,
                 random_start: bool = True, bn_mode: Literal["eval", "train"] = "eval"):
        if bn_mode not in BN_MODES:
            raise ConfigError(f"attack.bn_mode must be one of {', '.join(BN_MODES)}, got {bn_mode!r}.")
        self.model = model
        self.attack = ATTACKS.get(name)(model, norm, steps, random_start)
        if bn_mode == "train":
            self.attack.set_model_training_mode(model_training=True, batchnorm_training=True,
                                                dropout_training=True)
        self.name, self.norm, self.steps, self.bn_mode = name, norm, steps, bn_mode
        self.step_ratio = step_ratio
        self.eps = 0.0
        self._modules = list(model.modules())

    def set_eps(self, eps: float) -> None:
        if eps != self.eps:
            self.eps = eps
            self.attack.eps = eps
            if hasattr(self.attack, "alpha"):
                self.attack.alpha = self.step_ratio * eps

    def __call__(self, x: torch.Tensor, y: torch.Tensor, rows: Optional[tuple[int, int]] = None) -> torch.Tensor:
        """Adversarial examples for ``x`` (N, C, H, W) with labels ``y`` (N,).

        ``rows=(first, total)``: ``x`` is rows ``first .. first + N`` of a batch of ``total`` samples
        (a DDP rank's slice of the global batch). The random start is then drawn for the whole
        batch, as one process attacking all of it would draw it, and this slice's rows are used.
        An attack without ``draw_start`` (a plugin) draws its own start for ``x`` alone.
        """
        if self.eps <= 0:
            raise ValueError("TrainAttack called with eps = 0; the trainer skips the attack at eps = 0.")
        modes = [m.training for m in self._modules]
        try:
            start = None
            if rows is not None and hasattr(self.attack, "draw_start"):
                start = self.attack.draw_start(_batch_like(x, rows[1]))
            if start is None:
                return self.attack(x, y)
            return self.attack(x, y, init_delta=start[rows[0]:rows[0] + len(x)])
        finally:  # torchattacks restores only a model that was in training mode as a whole
            for m, training in zip(self._modules, modes):
                m.training = training


def _batch_like(x: torch.Tensor, total: int) -> torch.Tensor:
    """An uninitialised batch of ``total`` samples with ``x``'s sample shape, dtype, device and
    memory format (channels-last or not), as ``torch.empty_like`` gives for the whole batch."""
    channels_last = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    return torch.empty((total, *x.shape[1:]), dtype=x.dtype, device=x.device,
                       memory_format=torch.channels_last if channels_last else torch.contiguous_format)
