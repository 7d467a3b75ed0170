"""Where the trainer stands: the batch geometry of an epoch and the eps of every batch."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

from ..scheduling import Schedule


@dataclass(frozen=True)
class BatchPlan:
    """The batches of every epoch: ``n_train`` samples in batches of ``batch_size``, an
    optimizer step every ``accum`` batches (and at the end of each epoch).

    A last batch of a single sample is dropped (``drop_last``): BatchNorm in training mode
    cannot normalise one sample.
    """

    n_train: int
    batch_size: int
    accum: int
    epochs: int

    @property
    def drop_last(self) -> bool:
        return self.n_train > self.batch_size and self.n_train % self.batch_size == 1

    @property
    def steps_per_epoch(self) -> int:
        n, bs = self.n_train, self.batch_size
        return n // bs if self.drop_last else math.ceil(n / bs)

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def opt_steps_per_epoch(self) -> int:
        return math.ceil(self.steps_per_epoch / self.accum)

    def size_of(self, b: int) -> int:
        """The number of samples in batch ``b`` (0-based) of an epoch."""
        if b < self.steps_per_epoch - 1 or self.drop_last:
            return self.batch_size
        return self.n_train - self.batch_size * (self.steps_per_epoch - 1)

    def group_end(self, b: int) -> bool:
        """Whether batch ``b`` ends an accumulation group (an optimizer step follows it)."""
        return (b + 1) % self.accum == 0 or b + 1 == self.steps_per_epoch

    def loss_weight(self, b: int) -> Optional[float]:
        """Batch ``b``'s share of its accumulation group's samples (None without accumulation),
        so that accumulated gradients equal those of one batch of the whole group."""
        if self.accum == 1:
            return None
        first = b - b % self.accum
        group = range(first, min(first + self.accum, self.steps_per_epoch))
        return self.size_of(b) / sum(self.size_of(i) for i in group)


class EpsController:
    """Maps the trainer's position to eps (pixel units) through the schedule, per step or per epoch.

    ``progress_map`` (e.g. an LP-FT regime's ``eps_progress``) moves training progress in [0, 1]
    to the schedule's own progress (None: eps = 0 there); None: the schedule sees training as is."""

    def __init__(self, schedule: Schedule, target_eps: float, granularity: str, steps_per_epoch: int, epochs: int,
                 progress_map: Optional[Callable[[float], Optional[float]]] = None):
        self.schedule, self.target = schedule, target_eps
        self.granularity, self.spe, self.epochs = granularity, steps_per_epoch, epochs
        self.progress_map = progress_map

    def eps(self, epoch: int, batch: int) -> float:
        step, total = (epoch, self.epochs) if self.granularity == "epoch" else (epoch * self.spe + batch,
                                                                                self.epochs * self.spe)
        if self.progress_map is None:
            return self.schedule.eps_at(step, total, self.target)
        moved = self.progress_map(step / total)
        return 0.0 if moved is None else self.schedule.eps_at(moved * total, total, self.target)
