"""The epsilon-schedule plugin contract.

A schedule is pure: it maps ``(step, total_steps, target_eps)`` to the perturbation budget for
that step, always within ``[0, target_eps]`` (eps in [0,1] pixel units for Linf, or the L2
radius in the same pixel units). Subclasses implement :meth:`Schedule.alpha`, the fraction of
the target eps as a function of training progress in [0, 1], and declare their parameters as
:class:`Param` objects, which are also their Optuna search space.

Plugins live one file each in the top-level ``schedules/`` package, in installed packages
under the entry-point group ``rftbench.schedules``, or in a user's file loaded with
``--plugin path.py`` / ``plugins:`` in a config.
"""
from __future__ import annotations

import importlib
import math
import pkgutil
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Mapping

from .errors import ConfigError
from .registry import Registry

SCHEDULES: Registry[type["Schedule"]] = Registry("schedule", entry_point_group="rftbench.schedules")


@dataclass(frozen=True)
class Param:
    """One declared schedule parameter: default, inclusive bounds and how Optuna searches it."""

    name: str
    default: float
    low: float
    high: float
    kind: Literal["float", "int"] = "float"
    log: bool = False
    help: str = ""

    def validate(self, value: Any, schedule: str) -> float | int:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(
                f"schedule {schedule!r}: parameter {self.name!r} must be a number in "
                f"[{self.low}, {self.high}], got {value!r}."
            )
        if self.kind == "int":
            if float(value) != int(value):
                raise ConfigError(f"schedule {schedule!r}: parameter {self.name!r} must be an integer, got {value!r}.")
            value = int(value)
        if not (self.low <= value <= self.high) or (isinstance(value, float) and math.isnan(value)):
            raise ConfigError(
                f"schedule {schedule!r}: parameter {self.name!r}={value!r} is out of bounds "
                f"[{self.low}, {self.high}]."
            )
        return value

    def suggest(self, trial: Any, prefix: str = "") -> float | int:
        """Ask an ``optuna.Trial`` for a value of this parameter."""
        key = f"{prefix}{self.name}"
        if self.kind == "int":
            return trial.suggest_int(key, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(key, self.low, self.high, log=self.log)


class Schedule:
    """Base class of epsilon schedules. Subclasses set ``params`` and implement ``alpha``."""

    name: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()
    monotone: ClassVar[bool] = True  # non-decreasing in training progress
    reference: ClassVar[str] = ""  # where the shape comes from

    def __init__(self, **values: Any):
        known = {p.name: p for p in self.params}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(
                f"schedule {self.name!r} has no parameter(s) {', '.join(map(repr, unknown))}; "
                f"its parameters are: {', '.join(known) or '(none)'}."
            )
        self.values: dict[str, float | int] = {
            p.name: p.validate(values.get(p.name, p.default), self.name) for p in self.params
        }
        self.check(self.values)

    @classmethod
    def suggest_params(cls, trial: Any, prefix: str = "") -> dict[str, float | int]:
        """Sample this schedule's declared search space from an ``optuna.Trial``.

        Schedules whose parameters constrain each other (``start <= end``) override this.
        """
        return {p.name: p.suggest(trial, prefix) for p in cls.params}

    def check(self, values: Mapping[str, float | int]) -> None:
        """Cross-parameter validation (e.g. ``start <= end``); raise ConfigError."""

    def alpha(self, progress: float) -> float:
        """Fraction of the target eps at ``progress`` = step / total_steps in [0, 1)."""
        raise NotImplementedError

    def eps_at(self, step: int, total_steps: int, target_eps: float) -> float:
        """The eps for ``step`` (0-based) of ``total_steps``, in the units of ``target_eps``."""
        if total_steps <= 0:
            raise ValueError(f"total_steps must be positive, got {total_steps}")
        progress = min(max(step / total_steps, 0.0), 1.0)
        a = float(self.alpha(progress))
        if math.isnan(a):
            a = 0.0
        return float(target_eps) * min(max(a, 0.0), 1.0)

    def __repr__(self) -> str:
        args = ",".join(f"{k}={v:g}" for k, v in self.values.items())
        return f"{self.name}({args})" if args else self.name


def register_schedule(name: str):
    """Class decorator: register a :class:`Schedule` subclass under ``name``."""

    def deco(cls: type[Schedule]) -> type[Schedule]:
        if not (isinstance(cls, type) and issubclass(cls, Schedule)):
            raise TypeError(f"@register_schedule({name!r}) must decorate a Schedule subclass")
        cls.name = name
        SCHEDULES.add(name, cls)
        return cls

    return deco


def _load_builtin_schedules() -> None:
    import schedules as pkg  # the top-level plugin package: one file per schedule

    for info in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"{pkg.__name__}.{info.name}")


SCHEDULES.add_loader(_load_builtin_schedules)


def create_schedule(name: str, params: Mapping[str, Any] | None = None) -> Schedule:
    """The one door: build the schedule ``name`` with ``params`` (validated against bounds)."""
    cls = SCHEDULES.get(name)
    return cls(**dict(params or {}))


def parse_schedule_spec(spec: str) -> tuple[str, dict[str, float]]:
    """Parse ``"name:k=v,k2=v2"`` (the CLI form) into a name and a parameter dict."""
    name, _, rest = spec.partition(":")
    params: dict[str, float] = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise ConfigError(f"schedule spec {spec!r}: expected key=value, got {item!r}.")
        try:
            params[key.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"schedule spec {spec!r}: {key}={value!r} is not a number.") from None
    return name.strip(), params
