"""Fail before any work: every registry name a config holds is checked in one place.

``validate_names(cfg)`` is called by ``rftbench train``, ``sweep`` (for every run of a grid)
and ``tune`` before anything is built, downloaded or logged. It loads the config's plugin
files first, so that their names count.
"""
from __future__ import annotations

from ..config import ExperimentConfig
from ..registry import load_plugin_file


def load_plugins(cfg: ExperimentConfig) -> None:
    """Import the plugin files named in ``cfg.plugins`` (schedules, objectives, models, ...)."""
    for path in cfg.plugins:
        load_plugin_file(path)


def validate_names(cfg: ExperimentConfig) -> None:
    """Raise the registry's clear error (known names, a close match) for the first unknown
    model, dataset, augmentation preset, schedule, regime, objective, sweep attack or ER distribution in
    ``cfg``; also validates the schedule's and the objective's parameters against their declarations."""
    from ..attacks import SWEEP_ATTACKS
    from ..data import DATASETS
    from ..evaluation.metrics import resolve_distribution
    from ..models import check_model_name
    from ..objectives import create_objective
    from ..regimes import create_regime
    from ..scheduling import create_schedule

    load_plugins(cfg)
    check_model_name(cfg.model.name)
    DATASETS.get(cfg.data.name)
    _check_augment(cfg)
    create_schedule(cfg.schedule.name, cfg.schedule.params)
    create_regime(cfg.model.regime)  # its params and options; whether it fits the model: the Trainer
    create_objective(cfg.train.objective)
    for name in ([cfg.eval.sweep_attack] if isinstance(cfg.eval.sweep_attack, str) else cfg.eval.sweep_attack):
        SWEEP_ATTACKS.get(name)
    resolve_distribution(cfg.eval.distribution)


def _check_augment(cfg: ExperimentConfig) -> None:
    """The augmentation preset and its options (``data.augment``, ``data.augment_options``)."""
    from ..data import DATASET_META, resolve_augment

    meta = DATASET_META.get(cfg.data.name)
    resolve_augment(cfg.data, meta.default_augment if meta is not None else "crop_flip")
