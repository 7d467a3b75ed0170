"""Optuna over a schedule's declared parameters; objective = expected robustness on val.

The study lives in an RDB storage (``sqlite:///optuna.db`` by default, PostgreSQL across
machines) so that any number of workers can join it; every trial is an MLflow run (a child
of one parent run per study and worker). Validation ER is reported after every epoch so that
the pruner can stop poor trials early.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from .config import ExperimentConfig
from .errors import ConfigError
from .experiment import run_experiment
from .training import OptunaPruning
from .validation import validate_names
from .registry import Registry
from .scheduling import SCHEDULES, suggest_schedule_params
from .tracking import start_run

SAMPLERS: Registry = Registry("sampler")
SAMPLERS.add("tpe", lambda seed: optuna.samplers.TPESampler(seed=seed))
SAMPLERS.add("random", lambda seed: optuna.samplers.RandomSampler(seed=seed))
PRUNERS: Registry = Registry("pruner")
PRUNERS.add("median", lambda: optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1))
PRUNERS.add("none", lambda: optuna.pruners.NopPruner())


@dataclass
class TuneResult:
    study_name: str
    storage: str
    best_params: dict[str, Any]
    best_value: float
    n_trials: int
    trials: list[dict[str, Any]]


def default_storage() -> str:
    return os.environ.get("RFTBENCH_OPTUNA_STORAGE") or f"sqlite:///{Path.cwd().resolve() / 'optuna.db'}"


def open_storage(url: str, attempts: int = 8) -> optuna.storages.BaseStorage:
    """An Optuna RDB storage; retries when several workers create its schema at the same moment
    (PostgreSQL then reports a duplicate type or table to all but one of them)."""
    import random
    import time

    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    if url.startswith("sqlite:///"):  # one creator at a time; the others wait, then find the schema
        from .paths import file_lock

        db = Path(url[len("sqlite:///"):])
        db.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(db.with_name(db.name + ".lock")):
            return optuna.storages.RDBStorage(url)
    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url)
        except (IntegrityError, ProgrammingError, OperationalError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 + random.random() * (attempt + 1))
    raise AssertionError("unreachable")


def tune(cfg: ExperimentConfig, *, n_trials: int, storage: str | None = None, study_name: str | None = None,
         sampler: str = "tpe", pruner: str = "median", tracking_uri: str | None = None) -> TuneResult:
    """Run ``n_trials`` trials (this worker) of the study over ``cfg.schedule``'s parameters."""
    validate_names(cfg)
    schedule_cls = SCHEDULES.get(cfg.schedule.name)
    if not schedule_cls.params:
        tunable = [n for n in SCHEDULES.names() if SCHEDULES.get(n).params]
        raise ConfigError(f"schedule {cfg.schedule.name!r} declares no parameters, so there is nothing to tune; "
                          f"pick one that does: {', '.join(tunable)}.")
    if cfg.schedule.params:
        raise ConfigError(f"schedule.params {dict(cfg.schedule.params)} would be ignored: tuning searches every "
                          f"declared parameter of {cfg.schedule.name!r}. Remove schedule.params from the config.")
    storage = storage or default_storage()
    study_name = study_name or f"{cfg.experiment}-{cfg.name}-{cfg.schedule.name}"
    study = optuna.create_study(study_name=study_name, storage=open_storage(storage), direction="maximize",
                                sampler=SAMPLERS.get(sampler)(cfg.seed), pruner=PRUNERS.get(pruner)(),
                                load_if_exists=True)
    base = cfg.model_copy(deep=True)
    base.eval.split = "val"  # tuning never sees test
    base.eval.autoattack.enabled = False
    if base.train.val_every == 0:
        base.train.val_every = 1

    with start_run(cfg.experiment, f"tune:{study_name}", uri=tracking_uri,
                   tags={"rftbench.kind": "study", "optuna.study": study_name}) as parent:
        parent.log_params({"study": study_name, "storage": storage.split("@")[-1], "sampler": sampler,
                           "pruner": pruner, "schedule": cfg.schedule.name,
                           "search_space": {p.name: {"low": p.low, "high": p.high, "kind": p.kind, "log": p.log}
                                            for p in schedule_cls.params}})

        def objective(trial: optuna.Trial) -> float:
            params = suggest_schedule_params(cfg.schedule.name, trial)
            trial_cfg = base.model_copy(deep=True)
            trial_cfg.schedule.params = dict(params)
            trial_cfg.name = f"{cfg.name}-trial{trial.number}"

            result = run_experiment(trial_cfg, tracking_uri=tracking_uri, parent_run_id=parent.run_id,
                                    callbacks=[OptunaPruning(trial)],
                                    extra_tags={"rftbench.kind": "trial", "optuna.study": study_name,
                                                "optuna.trial": trial.number})
            trial.set_user_attr("mlflow_run_id", result.run_id)
            return float(result.record["expected_robustness"]["value"])

        study.optimize(objective, n_trials=n_trials, catch=())
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        trials = [{"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
                   "mlflow_run_id": t.user_attrs.get("mlflow_run_id")} for t in study.trials]
        if not done:
            return TuneResult(study_name, storage, {}, float("nan"), len(study.trials), trials)
        best = study.best_trial
        parent.log_metrics({"best_val_expected_robustness": best.value})
        parent.log_params({f"best.{k}": v for k, v in best.params.items()})
        return TuneResult(study_name, storage, best.params, float(best.value), len(study.trials), trials)
