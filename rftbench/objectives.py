"""Training objectives: plain cross-entropy, PGD-AT (Madry et al.) and TRADES (Zhang et al.).

An objective says which attack crafts its adversarial examples (``attack``: a name in
:data:`rftbench.attacks.ATTACKS`, or None) and turns a batch into a loss.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .registry import Registry


@dataclass
class StepOutput:
    """The loss to back-propagate and the logits used for batch accuracies (may be None)."""

    loss: torch.Tensor
    logits_clean: Optional[torch.Tensor]
    logits_adv: Optional[torch.Tensor]


class Objective:
    attack: Optional[str] = None  # None: use the configured training attack (pgd / apgd)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 x_adv: Optional[torch.Tensor]) -> StepOutput:
        raise NotImplementedError


OBJECTIVES: Registry[type[Objective]] = Registry("objective", entry_point_group="rftbench.objectives")


@OBJECTIVES.register("ce")
class CrossEntropy(Objective):
    """Plain fine-tuning: cross-entropy on clean images; the attack is never run."""

    uses_attack = False

    def __call__(self, model, x, y, x_adv):
        logits = model(x)
        return StepOutput(F.cross_entropy(logits, y), logits, None)


@OBJECTIVES.register("pgd_at")
class PGDAT(Objective):
    """PGD adversarial training: cross-entropy on adversarial examples (clean CE when eps = 0)."""

    uses_attack = True

    def __call__(self, model, x, y, x_adv):
        if x_adv is None:
            logits = model(x)
            return StepOutput(F.cross_entropy(logits, y), logits, None)
        logits = model(x_adv)
        return StepOutput(F.cross_entropy(logits, y), None, logits)


@OBJECTIVES.register("trades")
class TRADES(Objective):
    """TRADES: CE(clean) + beta * KL(p_clean || p_adv), adversarial examples from the KL attack."""

    uses_attack = True
    attack = "trades_kl"

    def __init__(self, beta: float = 6.0):
        self.beta = beta

    def __call__(self, model, x, y, x_adv):
        if x_adv is None:
            logits = model(x)
            return StepOutput(F.cross_entropy(logits, y), logits, None)
        logits_both = model(torch.cat([x, x_adv]))
        logits, logits_adv = logits_both[: len(x)], logits_both[len(x):]
        kl = F.kl_div(F.log_softmax(logits_adv, 1), F.softmax(logits, 1), reduction="batchmean")
        return StepOutput(F.cross_entropy(logits, y) + self.beta * kl, logits, logits_adv)


def create_objective(name: str, trades_beta: float = 6.0) -> Objective:
    cls = OBJECTIVES.get(name)
    return cls(beta=trades_beta) if cls is TRADES else cls()
