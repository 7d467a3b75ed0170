"""The regime's phases on the trainer's batch plan: which batches train which parameters.

A phase starts at the first accumulation group whose first batch lies at or past one of the
regime's boundaries (training progress = global batch / total batches), so an accumulation group
never mixes two trained sets. :class:`RegimePhases` switches ``requires_grad`` and the train/eval
modes of the model when the phase changes, and knows the optimizer step at which each phase
starts (for an LR schedule that restarts there).
"""
from __future__ import annotations

from typing import Any, Optional

from ..config import ExperimentConfig
from ..regimes import Regime, set_trainable
from .optim import set_train_mode
from .plan import BatchPlan


class RegimePhases:
    """Phases of ``regime`` over ``plan`` for ``model``; :meth:`enter` puts the model in a phase."""

    def __init__(self, regime: Regime, model: Any, plan: BatchPlan, cfg: ExperimentConfig):
        self.regime, self.model, self.plan, self.cfg = regime, model, plan, cfg
        self.sets = [regime.trainable(model, i) for i in range(len(regime.boundaries()) + 1)]
        self.current: Optional[int] = None

    def phase_of(self, epoch: int, b: int) -> int:
        """The phase of batch ``b`` of epoch ``epoch`` (that of its accumulation group's first batch)."""
        if len(self.sets) == 1:
            return 0
        first = b - b % self.plan.accum
        return self.regime.phase_at((epoch * self.plan.steps_per_epoch + first) / self.plan.total_steps)

    def enter(self, phase: int) -> None:
        """Train exactly phase ``phase``'s parameters, in training mode where they are."""
        if phase != self.current:
            set_trainable(self.model, self.sets[phase])
            self.current = phase
        self.train_mode()

    def train_mode(self) -> None:
        set_train_mode(self.model, self.cfg, self.sets[self.current or 0], self.regime)

    def restart_steps(self) -> tuple[int, ...]:
        """Optimizer steps (0-based) at which a phase after the first starts (empty unless the
        regime restarts the LR schedule at its boundaries)."""
        if len(self.sets) == 1 or not self.regime.lr_restarts():
            return ()
        plan, out, step, prev = self.plan, [], 0, 0
        for e in range(plan.epochs):
            for b in range(plan.steps_per_epoch):
                ph = self.phase_of(e, b)
                if ph != prev and b % plan.accum == 0:
                    out.append(step)
                    prev = ph
                step += plan.group_end(b)
        return tuple(out)

    def trainable_count(self) -> int:
        """Parameters (elements) trained in the last phase."""
        names = self.sets[-1]
        return sum(p.numel() for n, p in self.model.net.named_parameters() if n in names)
