"""One progress line per trial start and end (``trial 2/5 ...``) through :mod:`rftbench.progress`.

Lines rather than a live bar: each trial's trainer draws its own rich display, and a bar of
trials around it would be redrawn under it."""
from __future__ import annotations

from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from .. import progress


class TrialProgress:
    """Counts this run's trials (``total`` = ``--trials``) and notes each start and end; the end
    line has the trial's state, its value(s) and the study's best so far (Pareto size when
    several objectives)."""

    def __init__(self, total: int):
        self.total, self.started = total, 0

    def wrap(self, objective: Callable[[optuna.Trial], Any]) -> Callable[[optuna.Trial], Any]:
        def noted(trial: optuna.Trial):
            self.started += 1
            progress.note(f"trial {self.started}/{self.total} (study trial {trial.number}) started")
            return objective(trial)
        return noted

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        values = "" if trial.values is None else " value " + ", ".join(f"{v:.4g}" for v in trial.values)
        progress.note(f"trial {self.started}/{self.total} (study trial {trial.number}) {trial.state.name}"
                      f"{values}; {_best(study)}")


def _best(study: optuna.Study) -> str:
    if not any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        return "no finished trial yet"
    if len(study.directions) > 1:
        return f"Pareto front {len(study.best_trials)} trial(s)"
    return f"best so far {study.best_value:.4g} (trial {study.best_trial.number})"
