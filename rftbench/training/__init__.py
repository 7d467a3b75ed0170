"""Robust fine-tuning: the :class:`Trainer` and its one door, :func:`train`.

Modules: :mod:`.trainer` (the run / epoch / batch loop and :func:`train`), :mod:`.callbacks`
(side jobs: MLflow, progress, checkpoints, signal stop, Optuna pruning, per-epoch functions),
:mod:`.step` (one training step, batch statistics, AMP), :mod:`.optim` (optimizer, parameter
groups, LR schedule), :mod:`.plan` (batch geometry, eps per batch), :mod:`.state` (the resumable
``state.pt``), :mod:`.progress` (progress displays), :mod:`.prefix` (eps-0 epochs shared by the
trials of a schedule search).
"""
from .callbacks import (BatchEnd, Callback, CheckpointCallback, EpochCallback, MlflowCallback, OptunaPruning,
                        PerEpochCallback, ProgressCallback, SignalStop, TrainingInterrupted)
from .optim import group_lr, lr_factor, make_lr_schedule, make_optimizer, param_groups, set_train_mode
from .plan import BatchPlan, EpsController
from .progress import PlainProgress, RichProgress, TrainProgress, make_progress
from .state import TrainingState
from .step import BatchMeter, TrainStep, amp_setup
from .trainer import Trainer, TrainResult, default_callbacks, train

__all__ = [
    "BatchEnd", "BatchMeter", "BatchPlan", "Callback", "CheckpointCallback", "EpochCallback", "EpsController",
    "MlflowCallback", "OptunaPruning", "PerEpochCallback", "PlainProgress", "ProgressCallback", "RichProgress",
    "SignalStop", "TrainProgress", "TrainResult", "TrainStep", "Trainer", "TrainingInterrupted", "TrainingState",
    "amp_setup", "default_callbacks", "group_lr", "lr_factor", "make_lr_schedule", "make_optimizer",
    "make_progress", "param_groups", "set_train_mode", "train",
]
