"""One trial: the point the sampler proposes, trained as an MLflow child run of the study.

The child run is tagged ``rftbench.kind=trial``, ``rftbench.split=val`` (a validation run:
never on a test leaderboard, it evaluates nothing on test), ``optuna.study`` and
``optuna.trial``; the trial's user attribute ``mlflow_run_id`` points back at it, set as soon as
the run starts, so pruned, failed and interrupted trials are linked too (the same id goes into the
system attribute optuna-integration's ``MLflowCallback`` reads: it logs the trial's values,
params and Optuna tags into this run when the trial ends, see :mod:`.mlflow_link`). The trainer
reports the monitored validation metric every epoch (intermediate values for the pruner).
Trials share the epochs their schedules keep at eps = 0 (:mod:`rftbench.training.prefix`): the
first trial to reach such an epoch trains it, later ones restore it.
"""
from __future__ import annotations

from typing import Any, Callable

import optuna

from ..training import Callback, OptunaPruning
from ..training.prefix import SharedPrefix
from .mlflow_link import RUN_ID_SYSTEM_ATTR
from .objectives import objective_values


class TrialLink(Callback):
    """Links the trial and its MLflow run both ways and counts the epochs trained (user attribute
    ``epochs_trained``: the epochs the trial's model went through, the budget its pruner saw) and,
    of those, the ones restored from an earlier trial's shared eps-0 prefix (``epochs_reused``)."""

    def __init__(self, trial: optuna.Trial):
        self.trial = trial

    def on_run_start(self, trainer):
        for cb in trainer.callbacks:
            tracker = getattr(cb, "tracker", None)
            if tracker is not None:
                self.trial.set_user_attr("mlflow_run_id", tracker.run_id)
                # handed to MLflowCallback as its own track_in_mlflow does (optuna has no public setter)
                self.trial.storage.set_trial_system_attr(self.trial._trial_id, RUN_ID_SYSTEM_ATTR, tracker.run_id)
                return

    def on_epoch_end(self, trainer, epoch, metrics):
        self.trial.set_user_attr("epochs_trained", epoch + 1)
        self.trial.set_user_attr("epochs_reused", trainer.epochs_reused)


class EpochPruning(OptunaPruning):
    """Reports the monitored metric after every epoch at step = epochs trained (1, 2, ...: the
    budget Hyperband and successive halving count), visible as the trial's intermediate values;
    asks the pruner after every epoch but the last (a trial trained to the end is finished)."""

    def on_epoch_end(self, trainer, epoch, metrics):
        value = metrics.get(self.monitor)
        if value is None:
            return
        self.trial.report(value, epoch + 1)
        if epoch + 1 < trainer.plan.epochs and self.trial.should_prune():
            short = self.monitor.split("/")[-1].replace("expected_robustness", "ER")
            raise optuna.TrialPruned(f"pruned after {epoch + 1} epoch(s) (val {short} {value:.4f})")


def trial_config(prep: Any, trial: optuna.Trial):
    """The trial's config: the base config with the proposed schedule and training knobs, validated
    on val only (no test evaluation, no AutoAttack)."""
    family, params, knobs = prep.space.suggest(trial)
    cfg = prep.cfg.model_copy(deep=True)
    cfg.search = None
    cfg.schedule.name = family
    cfg.schedule.params = dict(params)
    for knob, value in knobs.items():
        setattr(cfg.train, knob, value)
    cfg.eval.split = "val"
    cfg.eval.autoattack.enabled = False
    if cfg.train.val_every == 0:
        cfg.train.val_every = 1  # a value every epoch: intermediate values for pruners
    cfg.name = f"{prep.cfg.name}-trial{trial.number}"
    trial.set_user_attr("schedule", family)
    trial.set_user_attr("schedule_params", dict(params))
    if prep.config_change is not None:  # trained under an allowed change of the study's config
        trial.set_user_attr("config_change", prep.config_change)
        trial.set_user_attr("config_changes", prep.config_changes)
    return cfg


def make_objective(prep: Any, mine: list[int]) -> Callable[[optuna.Trial], Any]:
    from ..experiments.experiment import run_experiment

    single = len(prep.objectives) == 1
    monitor = prep.objectives[0].metric if single else None

    def objective(trial: optuna.Trial):
        mine.append(trial.number)
        cfg = trial_config(prep, trial)
        callbacks: list[Callback] = [TrialLink(trial)]
        if prep.prefix_dir is not None:  # before pruning: an epoch's state is shared even when the trial stops there
            callbacks.append(SharedPrefix(prep.prefix_dir))
        if monitor is not None:
            callbacks.append(EpochPruning(trial, monitor=monitor))
        tags = {"rftbench.kind": "trial", "rftbench.split": "val", "optuna.study": prep.study_name,
                "optuna.trial": trial.number, "optuna.storage": prep.storage_url.split("@")[-1]}
        result = run_experiment(cfg, tracking_uri=prep.tracking_uri, parent_run_id=prep.parent_run_id,
                                callbacks=callbacks, extra_tags=tags, evaluate=False)
        values = objective_values(prep.objectives, result.train.history, result.train.attack_steps,
                                  result.train.total_steps, cfg.attack.steps)
        return values[0] if single else values  # logged as objective/<name> by MLflowCallback

    return objective
