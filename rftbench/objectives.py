"""Training objectives: plain cross-entropy, PGD-AT (Madry et al.), TRADES (Zhang et al.)
and MART (Wang et al.), each a plugin in :data:`OBJECTIVES` with declared :class:`Param`s.

An objective declares its hyperparameters like a schedule does (``params``: default, bounds,
also the search space; values in ``self.values``), says says whether it needs adversarial examples (``uses_attack``) and which attack
crafts them (``attack``: a name in :data:`rftbench.attacks.ATTACKS`, or None for the configured
training attack), and turns a batch into a loss. Images are (N, C, H, W) in [0, 1]; labels (N,).
When the schedule's eps is 0 the trainer passes ``x_adv=None`` and every objective falls back
to clean cross-entropy (plain fine-tuning).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ObjectiveDefinitionError
from .params import Param, validate_values
from .registry import Registry, check_declared_class


@dataclass
class StepOutput:
    """The loss to back-propagate (a scalar, mean over the batch) and the logits used for batch
    accuracies (``None`` where the objective did not compute them)."""

    loss: torch.Tensor
    logits_clean: Optional[torch.Tensor]
    logits_adv: Optional[torch.Tensor]


class Objective:
    """Base class of training objectives (register subclasses in :data:`OBJECTIVES`).

    An instance holds its validated parameter values in ``self.values`` (name -> number).
    """

    name: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()
    reference: ClassVar[str] = ""
    uses_attack: ClassVar[bool] = False
    attack: ClassVar[Optional[str]] = None  # None: the configured training attack (pgd / apgd)
    # Whether the loss on an attacked batch also yields clean logits (else the trainer measures
    # clean batch accuracy with an extra no-grad forward, only on logging steps).
    clean_logits_when_attacked: ClassVar[bool] = False

    def __init__(self, /, **values: Any):
        self.values: dict[str, float | int] = validate_values(self.params, values, f"objective {self.name!r}")

    def __repr__(self) -> str:
        args = ",".join(f"{k}={v:g}" for k, v in self.values.items())
        return f"{self.name}({args})" if args else self.name

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 x_adv: Optional[torch.Tensor]) -> StepOutput:
        raise NotImplementedError


def _check_objective_class(name: str, obj: Any, source: str) -> None:
    """Registry check: ``obj`` must be a well-formed Objective subclass to be registered as ``name``."""
    check_declared_class(name, obj, source, Objective, "objective", ObjectiveDefinitionError)


OBJECTIVES: Registry[type[Objective]] = Registry("objective", entry_point_group="rftbench.objectives",
                                                 check=_check_objective_class)


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

    reference = "Zhang et al., 2019, Theoretically Principled Trade-off between Robustness and Accuracy"
    params = (Param("beta", 6.0, 0.0, 20.0, help="weight of the KL(clean || adversarial) term"),)

    def __call__(self, model, x, y, x_adv):
        if x_adv is None:
            return _clean_ce(model, x, y)
        logits = model(x)
        logits_adv = model(x_adv)
        kl = F.kl_div(F.log_softmax(logits_adv, 1), F.softmax(logits, 1), reduction="batchmean")
        return StepOutput(F.cross_entropy(logits, y) + self.values["beta"] * kl, logits, logits_adv)


def create_objective(spec: Any, params: Mapping[str, Any] | None = None) -> Objective:
    """The one door: the objective of ``spec`` (an ``ObjectiveConfig`` with ``name`` and
    ``params``, or a registry name with ``params``), its parameters validated."""
    if isinstance(spec, str):
        name, values = spec, dict(params or {})
    else:
        name, values = spec.name, dict(spec.params)
    return OBJECTIVES.get(name)(**values)


@OBJECTIVES.register("mart")
class MART(Objective):
    """MART: boosted CE on adversarial examples plus beta * a KL(clean || adversarial) term
    weighted by (1 - p_clean(y)), which emphasises misclassified clean samples; adversarial
    examples from the configured training attack (PGD on cross-entropy), as in the reference
    code (Wang et al., 2020). Clean and adversarial images use separate forward passes.
    """

    reference = "Wang et al., 2020, Improving Adversarial Robustness Requires Revisiting Misclassified Examples"
    params = (Param("beta", 6.0, 0.0, 20.0, help="weight of the misclassification-aware KL term"),)
    uses_attack = True
    clean_logits_when_attacked = True

    def __call__(self, model, x, y, x_adv):
        if x_adv is None:
            return _clean_ce(model, x, y)
        logits = model(x)
        logits_adv = model(x_adv)
        adv_probs = F.softmax(logits_adv, dim=1)
        top2 = torch.argsort(adv_probs, dim=1)[:, -2:]
        runner_up = torch.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])
        boosted_ce = F.cross_entropy(logits_adv, y) + F.nll_loss(torch.log(1.0001 - adv_probs + 1e-12), runner_up)
        nat_probs = F.softmax(logits, dim=1)
        true_probs = nat_probs.gather(1, y.unsqueeze(1)).squeeze(1)
        kl = (nat_probs * (torch.log(nat_probs + 1e-12) - torch.log(adv_probs + 1e-12))).sum(1)
        robust = (kl * (1.0000001 - true_probs)).mean()
        return StepOutput(boosted_ce + self.values["beta"] * robust, logits, logits_adv)
