"""Thin adapters over torchattacks (training and sweep attacks) and pyautoattack (evaluation).

All eps are in [0,1] pixel units for Linf (the L2 radius in the same units for L2); models
take [0,1] images, so torchattacks and AutoAttack see the same threat model as the sweep.
"""
from __future__ import annotations

import logging
from typing import Literal

import torch
import torchattacks
from torch import nn

from .errors import ConfigError
from .registry import Registry

Norm = Literal["Linf", "L2"]

# A training-attack factory builds a torchattacks Attack for (model, norm, steps, random_start);
# eps and step size are set per step through :class:`TrainAttack`.
ATTACKS: Registry = Registry("attack")


@ATTACKS.register("pgd")
def _pgd(model: nn.Module, norm: Norm, steps: int, random_start: bool) -> torchattacks.Attack:
    cls = torchattacks.PGD if norm == "Linf" else torchattacks.PGDL2
    return cls(model, eps=0.0, alpha=0.0, steps=steps, random_start=random_start)


@ATTACKS.register("apgd")
def _apgd(model: nn.Module, norm: Norm, steps: int, random_start: bool) -> torchattacks.Attack:
    return torchattacks.APGD(model, norm=norm, eps=0.0, steps=steps, n_restarts=1, loss="ce", seed=0)


@ATTACKS.register("trades_kl")
def _tpgd(model: nn.Module, norm: Norm, steps: int, random_start: bool) -> torchattacks.Attack:
    if norm != "Linf":
        raise ConfigError("the TRADES attack (torchattacks.TPGD) supports only norm: Linf.")
    return torchattacks.TPGD(model, eps=0.0, alpha=0.0, steps=steps)


class TrainAttack:
    """A torchattacks attack whose eps (and step size = ``step_ratio`` * eps) change per step.

    ``bn_mode="eval"`` (default) crafts examples with BatchNorm in eval mode, so the attack
    neither uses batch statistics nor updates running stats; ``"train"`` keeps the model in
    training mode with BatchNorm statistics frozen (torchattacks' ``set_model_training_mode``).
    """

    def __init__(self, model: nn.Module, name: str, norm: Norm, steps: int, step_ratio: float,
                 random_start: bool = True, bn_mode: Literal["eval", "train"] = "eval"):
        self.attack = ATTACKS.get(name)(model, norm, steps, random_start)
        if bn_mode == "train":
            self.attack.set_model_training_mode(model_training=True, batchnorm_training=False)
        self.step_ratio = step_ratio
        self.eps = 0.0

    def set_eps(self, eps: float) -> None:
        if eps != self.eps:
            self.eps = eps
            self.attack.eps = eps
            if hasattr(self.attack, "alpha"):
                self.attack.alpha = self.step_ratio * eps

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.attack(x, y)


def autoattack(model: nn.Module, *, eps: float, norm: Norm, version: str, num_classes: int,
               device: torch.device | str, seed: int = 0, attacks: list[str] | None = None):
    """A pyautoattack ``AutoAttack`` configured for ``num_classes`` classes.

    With fewer than 10 classes, pyautoattack's ``standard`` version crashes in APGD-T and FAB-T
    as soon as a sample survives the untargeted attacks; the number of target classes is set
    to ``num_classes - 1`` (and recorded by the caller).
    """
    from pyautoattack import AutoAttack

    logging.getLogger("auto-attack").setLevel(logging.WARNING)
    kwargs = dict(norm=norm, eps=eps, version=version, device=device, seed=seed)
    if version == "custom":
        if not attacks:
            raise ConfigError("autoattack.version 'custom' needs autoattack.attacks, e.g. [apgd-ce, apgd-t].")
        kwargs["attacks"] = list(attacks)
    aa = AutoAttack(model, **kwargs)
    n_target = max(1, min(9, num_classes - 1))
    aa.apgd_targeted.n_target_classes = n_target
    aa.fab.n_target_classes = n_target
    return aa
