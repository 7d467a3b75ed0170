"""``rftbench tune best STUDY``: retrain the best trial (or every Pareto point) on train+val
and evaluate it on test with AutoAttack, so that a search ends in a certified number.

The config is the study's own (stored in the study when it was created; never the current
command line's defaults), or for a trial trained under an allowed config change
(``--allow-config-change``) the config it trained with, plus the trial's schedule and knobs; ``data.val_fraction = 0`` puts the validation images back into
training. The runs are ordinary ``experiment`` runs (tagged ``optuna.study`` / ``optuna.trial``
and ``rftbench.split=test``), so they appear on the leaderboard, the search trials do not.
"""
from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import TrialState

from ..config import ExperimentConfig, parse_config
from ..errors import TuneError
from .setting import trial_base_config
from .storage import open_storage


def final_config(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> ExperimentConfig:
    """The config ``trial`` trained with (the study's recorded one, or the allowed change it ran
    under), with its schedule and knobs, on train+val, evaluated on test with AutoAttack."""
    base = trial_base_config(study, trial)
    if base is None:
        raise TuneError(f"study {study.study_name!r} holds no config (made by an older rftbench); retrain with "
                        f"`rftbench train` and the trial's parameters: {trial.params}.")
    cfg = parse_config(base, f"study {study.study_name}")
    cfg.search = None
    cfg.schedule.name = trial.user_attrs.get("schedule", cfg.schedule.name)
    cfg.schedule.params = dict(trial.user_attrs.get("schedule_params", {}))
    for key, value in trial.params.items():
        if key.startswith("train."):
            setattr(cfg.train, key.split(".", 1)[1], value)
    cfg.data.val_fraction = 0.0  # train on train+val
    cfg.eval.split = "test"
    cfg.eval.autoattack.enabled = True
    cfg.name = f"{cfg.name}-{study.study_name}-best{trial.number}"
    return cfg


def retrain_best(study_name: str, storage: str, *, tracking_uri: str | None = None, pareto: bool = True,
                 overrides: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Retrain and test the best trial, or every trial of the Pareto front of a multi-objective
    study (``pareto``); ``overrides`` (dotted keys) adjust the final runs (e.g. AutoAttack samples)."""
    from ..config import set_dotted
    from ..experiments.experiment import run_experiment

    study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    if not any(t.state == TrialState.COMPLETE for t in study.trials):
        raise TuneError(f"study {study_name!r} has no finished trial yet; run `rftbench tune` first.")
    trials = study.best_trials if len(study.directions) > 1 else [study.best_trial]
    if not pareto:
        trials = trials[:1]
    out = []
    for t in trials:
        cfg = final_config(study, t)
        if overrides:
            data = cfg.model_dump(mode="json")
            for k, v in overrides.items():
                set_dotted(data, k, v, f"override {k}")
            cfg = parse_config(data, "tune best overrides")
        res = run_experiment(cfg, tracking_uri=tracking_uri,
                             extra_tags={"optuna.study": study_name, "optuna.trial": t.number,
                                         "rftbench.split": "test", "rftbench.tuned": "true"})
        rec = res.record
        out.append({"trial": t.number, "mlflow_run_id": res.run_id, "schedule": cfg.schedule.name,
                    "schedule_params": cfg.schedule.params, "params": t.params, "search_values": t.values,
                    "test": rec.metrics() if rec is not None else {}, "certified": rec.data.get("certified") if rec else None})
    return out
