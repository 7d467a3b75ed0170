"""The search space of a study, built from a config's ``schedule`` and ``search`` sections.

By default the space is the declared parameters of ``schedule.name`` (their ``Param`` bounds);
``schedule.params`` holds some of them fixed; ``search.params`` narrows ranges;
``search.schedules`` makes the family itself a categorical parameter ``schedule`` whose
families' parameters are conditional (named ``family.param``: a trial only ever suggests the
parameters of the family it drew); ``search.train`` adds training knobs (``train.lr``, ...).

Every distribution is static (the same for every trial) so that samplers which need a fixed
space (CMA-ES, GP, QMC, grid) can use it. The distributions are each family's search coordinates
(:meth:`rftbench.scheduling.Schedule.search_params`): a ramp whose ``start`` and ``end`` are both
searched is sampled as ``start`` and ``length``, so no sampled value is ever reordered or clipped,
and a trial's Optuna params rebuild, through ``Schedule.from_search``, exactly the schedule it
trained with (its user attribute ``schedule_params`` holds those values).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from ..config import ExperimentConfig, SearchRange
from ..errors import ConfigError
from ..params import Param
from ..scheduling import SCHEDULES

FAMILY = "schedule"  # the categorical parameter's name


def _dist(kind: str, low: float, high: float, log: bool) -> Any:
    if kind == "int":
        return IntDistribution(int(low), int(high), log=log)
    return FloatDistribution(float(low), float(high), log=log)


@dataclass
class SearchSpace:
    """Families (``name -> {param: distribution}``), their fixed values, and training knobs."""

    families: dict[str, dict[str, Any]]  # family -> {coordinate: distribution}
    fixed: dict[str, dict[str, float]]
    train: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    searched: dict[str, dict[str, Param]] = field(default_factory=dict)  # family -> declared params searched

    def schedule_params(self, family: str, point: dict[str, Any]) -> dict[str, float | int]:
        """The schedule's parameter values (fixed ones included) for a point of the family's
        coordinates (names without the ``family.`` prefix): what a trial with that point trains."""
        return SCHEDULES.get(family).from_search(point, self.searched.get(family, {}), self.fixed.get(family, {}))

    def rebuild(self, params: dict[str, Any]) -> tuple[str, dict[str, float | int]]:
        """(family, schedule params) from a trial's recorded Optuna params."""
        fam = params[FAMILY] if self.categorical else next(iter(self.families))
        point = {p: params[self.key(fam, p)] for p in self.families[fam]}
        return fam, self.schedule_params(fam, point)

    @property
    def categorical(self) -> bool:
        return len(self.families) > 1

    def key(self, family: str, param: str) -> str:
        return f"{family}.{param}" if self.categorical else param

    def distributions(self) -> dict[str, Any]:
        """Every Optuna parameter name of the space with its distribution."""
        out: dict[str, Any] = {}
        if self.categorical:
            out[FAMILY] = CategoricalDistribution(list(self.families))
        for fam, params in self.families.items():
            out.update({self.key(fam, p): d for p, d in params.items()})
        out.update({f"train.{k}": d for k, d in self.train.items()})
        return out

    def describe(self) -> dict[str, Any]:
        return {"families": {f: {p: optuna.distributions.distribution_to_json(d) for p, d in ps.items()}
                             for f, ps in self.families.items()},
                "fixed": self.fixed, "train": {k: optuna.distributions.distribution_to_json(d)
                                               for k, d in self.train.items()}}

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.describe(), sort_keys=True).encode()).hexdigest()[:16]

    def suggest(self, trial: optuna.Trial) -> tuple[str, dict[str, float], dict[str, float]]:
        """(family, schedule params incl. fixed ones, training knobs) for ``trial``."""
        fam = trial.suggest_categorical(FAMILY, list(self.families)) if self.categorical else next(iter(self.families))
        point = {p: _suggest(trial, self.key(fam, p), d) for p, d in self.families[fam].items()}
        values = self.schedule_params(fam, point)
        knobs = {k: _suggest(trial, f"train.{k}", d) for k, d in self.train.items()}
        return fam, values, knobs

    def default_point(self) -> dict[str, Any]:
        """The Optuna params of the config's own setting (the paper's, for epsilon_scheduling)."""
        return dict(self.defaults)


def _suggest(trial: optuna.Trial, name: str, d: Any) -> Any:
    if isinstance(d, IntDistribution):
        return trial.suggest_int(name, d.low, d.high, log=d.log)
    return trial.suggest_float(name, d.low, d.high, log=d.log)


def _range_for(p: Param, fam: str, search_params: dict[str, SearchRange]) -> Param:
    """The declared parameter with the bounds ``search.params`` narrows it to."""
    r = search_params.get(f"{fam}.{p.name}") or search_params.get(p.name)
    if r is None:
        return p
    if r.low < p.low or r.high > p.high:
        raise ConfigError(f"search.params {p.name!r} of {fam!r}: [{r.low}, {r.high}] leaves the declared bounds "
                          f"[{p.low}, {p.high}]; narrow it.")
    return replace(p, low=r.low, high=r.high, log=r.log or p.log, default=min(max(p.default, r.low), r.high))


def _family_space(fam: str, cfg: ExperimentConfig,
                  search_params: dict[str, SearchRange]) -> tuple[dict[str, Param], dict]:
    cls = SCHEDULES.get(fam)
    declared = {p.name: p for p in cls.params}
    fixed = {k: v for k, v in cfg.schedule.params.items() if k in declared}
    for key in search_params:
        name = key.split(".", 1)[-1]
        if name in fixed and (key == name or key.startswith(f"{fam}.")):
            raise ConfigError(f"schedule parameter {name!r} is both fixed (schedule.params.{name}={fixed[name]}) "
                              f"and searched (search.params.{key}); remove one of them.")
    return {n: _range_for(p, fam, search_params) for n, p in declared.items() if n not in fixed}, fixed


def _check_names(cfg: ExperimentConfig, families: list[str]) -> None:
    search = cfg.search
    declared = {f: {p.name for p in SCHEDULES.get(f).params} for f in families}
    for key in (search.params if search else {}):
        fam, _, name = key.rpartition(".")
        ok = (name in declared.get(fam, ())) if fam else any(name in d for d in declared.values())
        if not ok:
            raise ConfigError(f"search.params.{key}: no searched schedule declares it; declared: "
                              + "; ".join(f"{f}: {', '.join(sorted(d)) or '(none)'}" for f, d in declared.items()))
    for k in cfg.schedule.params:
        if not any(k in d for d in declared.values()):
            raise ConfigError(f"schedule.params.{k}: no searched schedule declares it "
                              f"({', '.join(families)}); remove it.")


def build_space(cfg: ExperimentConfig) -> SearchSpace:
    """The study's space from ``cfg`` (ConfigError when there is nothing to search or a key is wrong)."""
    search = cfg.search
    families = list(search.schedules) if search and search.schedules else [cfg.schedule.name]
    for fam in families:
        SCHEDULES.get(fam)  # an unknown family fails with the known names
    _check_names(cfg, families)
    space = SearchSpace({}, {})
    for fam in families:
        space.searched[fam], space.fixed[fam] = _family_space(fam, cfg, search.params if search else {})
        coords = SCHEDULES.get(fam).search_params(space.searched[fam], space.fixed[fam])
        space.families[fam] = {p.name: p.distribution() for p in coords}
    for knob, r in (search.train if search else {}).items():
        space.train[knob] = _dist(r.kind, r.low, r.high, r.log)
    if not space.distributions() or (not space.categorical and not space.train and not space.families[families[0]]):
        tunable = [n for n in SCHEDULES.names() if SCHEDULES.get(n).params]
        why = ("declares no parameters" if not SCHEDULES.get(families[0]).params
               else f"has every parameter fixed by schedule.params {dict(cfg.schedule.params)}")
        raise ConfigError(f"schedule {families[0]!r} {why}, so there is nothing to tune; pick one that declares "
                          f"parameters ({', '.join(tunable)}), remove fixed ones, or add search.train knobs.")
    space.defaults = _defaults(space, cfg)
    return space


def _defaults(space: SearchSpace, cfg: ExperimentConfig) -> dict[str, Any]:
    fam = cfg.schedule.name if cfg.schedule.name in space.families else next(iter(space.families))
    out: dict[str, Any] = {FAMILY: fam} if space.categorical else {}
    searched, fixed = space.searched[fam], space.fixed[fam]
    values = {**{p.name: p.default for p in SCHEDULES.get(fam).params}, **{n: p.default for n, p in searched.items()}}
    for p, v in SCHEDULES.get(fam).to_search(values, searched, fixed).items():
        d = space.families[fam][p]  # a default outside a narrowed range starts at its nearest end
        out[space.key(fam, p)] = min(max(v, d.low), d.high)
    for k, d in space.train.items():
        value = getattr(cfg.train, k)
        if value is not None:
            out[f"train.{k}"] = min(max(value, d.low), d.high)
    return out
