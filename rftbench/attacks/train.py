"""Training attacks: thin adapters over torchattacks behind the :data:`ATTACKS` registry, and
:class:`TrainAttack`, whose eps follows the schedule step by step.

All eps are in [0,1] pixel units for Linf (the L2 radius in the same units for L2); models
take [0,1] images (N, C, H, W), so torchattacks sees the same threat model as the evaluation.
"""
from __future__ import annotations

from typing import Literal

import torch
import torchattacks
from torch import nn

from ..errors import ConfigError
from ..registry import Registry
from .norms import Norm

# A training-attack factory builds a torchattacks Attack for (model, norm, steps, random_start);
# eps and step size are set per step through :class:`TrainAttack`.
ATTACKS: Registry = Registry("attack")


@ATTACKS.register("pgd")
def _pgd(model: nn.Module, norm: Norm, steps: int, random_start: bool) -> torchattacks.Attack:
    cls = torchattacks.PGD if norm == "Linf" else torchattacks.PGDL2
    return cls(model, eps=0.0, alpha=0.0, steps=steps, random_start=random_start)


class _TrainingAPGD(torchattacks.APGD):
    """torchattacks' APGD as a training attack: the highest-loss point for every sample.

    ``APGD.forward`` returns the clean image for every sample it fails to misclassify (useless
    for training) and re-seeds the global RNG with a fixed seed on every call (which would
    replay the same random numbers at every training step). ``perturb(best_loss=True)`` does
    neither: it returns the highest-loss iterate of each sample and draws its random start
    from the training RNG stream, so it is also reproducible and resumable.
    """

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        images = images.clone().detach().to(self.device)
        labels = labels.clone().detach().to(self.device)
        _, adv_images = self.perturb(images, labels, best_loss=True)
        return adv_images.detach()


@ATTACKS.register("apgd")
def _apgd(model: nn.Module, norm: Norm, steps: int, random_start: bool) -> torchattacks.Attack:
    return _TrainingAPGD(model, norm=norm, eps=0.0, steps=steps, n_restarts=1, loss="ce")


@ATTACKS.register("trades_kl")
def _tpgd(model: nn.Module, norm: Norm, steps: int, random_start: bool) -> torchattacks.Attack:
    if norm != "Linf":
        raise ConfigError("the TRADES attack (torchattacks.TPGD) supports only norm: Linf; "
                          "set threat.norm: Linf or use train.objective: pgd_at.")
    return torchattacks.TPGD(model, eps=0.0, alpha=0.0, steps=steps)


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

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.eps <= 0:
            raise ValueError("TrainAttack called with eps = 0; the trainer skips the attack at eps = 0.")
        modes = [m.training for m in self._modules]
        try:
            return self.attack(x, y)
        finally:  # torchattacks restores only a model that was in training mode as a whole
            for m, training in zip(self._modules, modes):
                m.training = training
