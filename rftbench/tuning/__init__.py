"""Optuna search over schedule shapes (``rftbench tune``).

``space`` (the config's ``search:`` section as Optuna distributions), ``samplers`` (SAMPLERS,
PRUNERS, per-worker seeds), ``objectives`` (``--objectives``), ``storage`` (``open_storage``),
``study`` (the study's identity, ``run_tune_worker`` for launchers, ``tune``), ``trial`` (one
trial = one MLflow child run),
``mlflow_link`` (the study's one parent run), ``report`` (best / Pareto front, importances,
visualizations), ``best`` (retrain the winners on train+val, evaluate on test).
"""
from .objectives import OBJECTIVES, parse_objectives
from .report import TuneResult, summarize
from .samplers import PRUNERS, SAMPLERS, trial_seed
from .space import SearchSpace, build_space
from .storage import open_storage
from .study import TuneOptions, default_storage, prepare_study, run_tune_worker, tune

__all__ = ["OBJECTIVES", "PRUNERS", "SAMPLERS", "SearchSpace", "TuneOptions", "TuneResult", "build_space",
           "default_storage", "open_storage", "parse_objectives", "prepare_study", "run_tune_worker", "summarize",
           "tune", "trial_seed"]
