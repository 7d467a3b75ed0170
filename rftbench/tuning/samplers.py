"""Optuna samplers and pruners by name, and the per-worker sampler seed.

A sampler factory is ``(seed, space, grid_points) -> optuna.samplers.BaseSampler``; a pruner
factory is ``(epochs) -> optuna.pruners.BasePruner`` (epochs = the budget of multi-fidelity
pruners: Hyperband and successive halving count resources in epochs).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, IntDistribution

from ..errors import TuneError
from ..registry import Registry
from .pruners import TopKHyperbandPruner, TopKSuccessiveHalvingPruner
from .space import SearchSpace

SAMPLERS: Registry = Registry("sampler")
PRUNERS: Registry = Registry("pruner")
MULTI_OBJECTIVE_SAMPLERS = ("nsgaii", "tpe", "random", "gp", "qmc", "grid")
SINGLE_OBJECTIVE_PRUNERS = ("median", "percentile", "successive_halving", "hyperband", "successive_halving_topk",
                            "hyperband_topk", "wilcoxon")


def trial_seed(config_seed: int, trial_number: int) -> int:
    """The sampler seed of one trial: trial numbers are unique in a study (the storage hands them
    out), so no two trials, on any worker or machine, in any resume, share a random stream."""
    return int(np.random.SeedSequence([int(config_seed), 1 << 20, int(trial_number)]).generate_state(1)[0])


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """Wraps an Optuna sampler: before each trial it builds the inner sampler afresh, seeded with
    :func:`trial_seed` (Optuna's samplers keep their state in the storage, the RNG aside)."""

    def __init__(self, build, config_seed: int):
        self._build, self._config_seed = build, config_seed
        self._inner = build(config_seed)

    def before_trial(self, study, trial):
        self._inner = self._build(trial_seed(self._config_seed, trial.number))
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values):
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._inner.reseed_rng()


def grid_values(d: Any, points: int) -> list[Any]:
    """``points`` values over a distribution's range (log-spaced for a log range)."""
    if isinstance(d, CategoricalDistribution):
        return list(d.choices)
    grid = np.geomspace(d.low, d.high, points) if d.log else np.linspace(d.low, d.high, points)
    if isinstance(d, IntDistribution):
        return sorted({int(round(v)) for v in grid})
    return [float(v) for v in grid]


def _grid(seed: int, space: SearchSpace, grid_points: int) -> optuna.samplers.BaseSampler:
    if space.categorical:
        raise TuneError("the grid sampler needs one schedule family: a grid over conditional parameters would "
                        "repeat every point once per other family. Use search.schedules with tpe/random/gp, "
                        "or one grid study per family.")
    return optuna.samplers.GridSampler({k: grid_values(d, grid_points) for k, d in space.distributions().items()},
                                       seed=seed)


def _cmaes(seed: int, space: SearchSpace, grid_points: int) -> optuna.samplers.BaseSampler:
    if space.categorical:
        raise TuneError("the cmaes sampler cannot search a categorical choice of schedule families "
                        f"({', '.join(space.families)}): CMA-ES works on continuous spaces. Use tpe, gp or random "
                        "with search.schedules, or search one family with cmaes.")
    return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)


SAMPLERS.add("tpe", lambda seed, space, gp: optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                                                       n_startup_trials=4))
SAMPLERS.add("random", lambda seed, space, gp: optuna.samplers.RandomSampler(seed=seed))
SAMPLERS.add("cmaes", _cmaes)
SAMPLERS.add("gp", lambda seed, space, gp: optuna.samplers.GPSampler(seed=seed, n_startup_trials=4))
SAMPLERS.add("qmc", lambda seed, space, gp: optuna.samplers.QMCSampler(seed=seed, scramble=True,
                                                                       warn_independent_sampling=False))
SAMPLERS.add("grid", _grid)
SAMPLERS.add("nsgaii", lambda seed, space, gp: optuna.samplers.NSGAIISampler(seed=seed, population_size=4))

PRUNERS.add("none", lambda epochs: optuna.pruners.NopPruner())
PRUNERS.add("median", lambda epochs: optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0))
PRUNERS.add("percentile", lambda epochs: optuna.pruners.PercentilePruner(33.0, n_startup_trials=2))
# Successive halving and Hyperband on epochs: rungs at 1, 3, 9, ... epochs. Hyperband:
# floor(log3(epochs)) + 1 brackets (2 for 3-8 epochs), trials assigned to brackets by a hash of
# (study name, trial number); TPE then sees only its bracket's trials. bootstrap_count stays 0:
# above 0 Optuna prunes the first trials at every rung (the enqueued defaults among them) instead
# of holding them back. The *_topk variants promote trials tied at a rung only into its top 1/3
# (pruners.py; Optuna promotes every tie, and trials still at eps = 0 tie bit for bit): they
# save more compute and lose more of the best ER (benchmarks/perf_tune.py, NOTES.md).
PRUNERS.add("successive_halving", lambda epochs: optuna.pruners.SuccessiveHalvingPruner(
    min_resource=1, reduction_factor=3))
PRUNERS.add("hyperband", lambda epochs: optuna.pruners.HyperbandPruner(
    min_resource=1, max_resource=max(1, epochs), reduction_factor=3))
PRUNERS.add("successive_halving_topk", lambda epochs: TopKSuccessiveHalvingPruner(min_resource=1,
                                                                                   reduction_factor=3))
PRUNERS.add("hyperband_topk", lambda epochs: TopKHyperbandPruner(min_resource=1, max_resource=max(1, epochs),
                                                                 reduction_factor=3))
# Wilcoxon pairs the trial's per-epoch values with the best trial's (epochs as instances)
PRUNERS.add("wilcoxon", lambda epochs: optuna.pruners.WilcoxonPruner(p_threshold=0.1, n_startup_steps=1))


def _quiet(factory):
    """Build without Optuna's ExperimentalWarning (TPE's ``group``, QMC, Wilcoxon): chosen on purpose."""
    import warnings

    def build(*args):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return factory(*args)

    return build


def make_sampler(name: str, seed: int, space: SearchSpace, grid_points: int, n_objectives: int):
    import importlib.util

    if name == "cmaes" and importlib.util.find_spec("cmaes") is None:
        raise TuneError("the cmaes sampler needs the `cmaes` package: pip install cmaes (an rftbench dependency).")
    if n_objectives > 1 and name not in MULTI_OBJECTIVE_SAMPLERS:
        raise TuneError(f"sampler {name!r} handles one objective only; for several objectives use one of "
                        f"{', '.join(MULTI_OBJECTIVE_SAMPLERS)} (nsgaii is made for it).")
    factory = _quiet(SAMPLERS.get(name))
    if name == "qmc":  # one scrambled sequence per study; its points are indexed by a storage counter
        return factory(seed, space, grid_points)
    return TrialSeededSampler(lambda s: factory(s, space, grid_points), seed)


def make_pruner(name: str, epochs: int, n_objectives: int):
    if n_objectives > 1 and name != "none":
        raise TuneError(f"pruner {name!r} needs one objective (Optuna prunes on one intermediate value); "
                        f"a multi-objective study runs with --pruner none.")
    return _quiet(PRUNERS.get(name))(epochs)
