"""Training objectives: plain cross-entropy, PGD-AT (Madry et al.) and TRADES (Zhang et al.).

An objective says whether it needs adversarial examples (``uses_attack``) and which attack
crafts them (``attack``: a name in :data:`rftbench.attacks.ATTACKS`, or None for the configured
training attack), and turns a batch into a loss. Images are (N, C, H, W) in [0, 1]; labels (N,).
When the schedule's eps is 0 the trainer passes ``x_adv=None`` and every objective falls back
to clean cross-entropy (plain fine-tuning).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import ClassVar, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError
from .registry import Registry


@dataclass
class StepOutput:
    """The loss to back-propagate (a scalar, mean over the batch) and the logits used for batch
    accuracies (``None`` where the objective did not compute them)."""

    loss: torch.Tensor
    logits_clean: Optional[torch.Tensor]
    logits_adv: Optional[torch.Tensor]


class Objective:
    """Base class of training objectives (register subclasses in :data:`OBJECTIVES`)."""

    uses_attack: ClassVar[bool] = False
    attack: ClassVar[Optional[str]] = None  # None: the configured training attack (pgd / apgd)
    # Whether the loss on an attacked batch also yields clean logits (else the trainer measures
    # clean batch accuracy with an extra no-grad forward, only on logging steps).
    clean_logits_when_attacked: ClassVar[bool] = False

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 x_adv: Optional[torch.Tensor]) -> StepOutput:
        raise NotImplementedError


OBJECTIVES: Registry[type[Objective]] = Registry("objective", entry_point_group="rftbench.objectives")


def _clean_ce(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> StepOutput:
    logits = model(x)
    return StepOutput(F.cross_entropy(logits, y), logits, None)


@OBJECTIVES.register("ce")
class CrossEntropy(Objective):
    """Plain fine-tuning: cross-entropy on clean images; the attack is never run."""

    uses_attack = False

    def __call__(self, model, x, y, x_adv):
        return _clean_ce(model, x, y)


@OBJECTIVES.register("pgd_at")
class PGDAT(Objective):
    """PGD adversarial training: cross-entropy on adversarial examples (clean CE when eps = 0)."""

    uses_attack = True

    def __call__(self, model, x, y, x_adv):
        if x_adv is None:
            return _clean_ce(model, x, y)
        logits = model(x_adv)
        return StepOutput(F.cross_entropy(logits, y), None, logits)


@OBJECTIVES.register("trades")
class TRADES(Objective):
    """TRADES: CE(f(x), y) + beta * KL(p(x) || p(x_adv)), with KL summed over classes and
    averaged over the batch; adversarial examples from the KL attack (torchattacks.TPGD).

    Clean and adversarial images go through the model in two separate forward passes, as in
    the reference implementation (Zhang et al., 2019), so that BatchNorm in training mode
    normalises each with its own batch statistics.
    """

    uses_attack = True
    attack = "trades_kl"
    clean_logits_when_attacked = True

    def __init__(self, beta: float = 6.0):
        if beta < 0:
            raise ConfigError(f"train.trades_beta must be >= 0, got {beta}.")
        self.beta = beta

    def __call__(self, model, x, y, x_adv):
        if x_adv is None:
            return _clean_ce(model, x, y)
        logits = model(x)
        logits_adv = model(x_adv)
        kl = F.kl_div(F.log_softmax(logits_adv, 1), F.softmax(logits, 1), reduction="batchmean")
        return StepOutput(F.cross_entropy(logits, y) + self.beta * kl, logits, logits_adv)


def create_objective(name: str, trades_beta: float = 6.0) -> Objective:
    """The one door: the objective registered as ``name`` (``beta`` goes to those that take it)."""
    cls = OBJECTIVES.get(name)
    if not (isinstance(cls, type) and issubclass(cls, Objective)):
        raise ConfigError(f"objective {name!r} is registered as {cls!r}, which is not an Objective subclass.")
    takes_beta = "beta" in inspect.signature(cls.__init__).parameters
    return cls(beta=trades_beta) if takes_beta else cls()
