"""Declared plugin parameters: one :class:`Param` is both validation and search space.

Schedules and objectives declare their parameters as a tuple of :class:`Param` (default,
inclusive bounds, int/float, log scale); a config's values are checked against them, and
``rftbench tune`` searches exactly that space.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

from .errors import ConfigError


@dataclass(frozen=True)
class Param:
    """One declared plugin parameter (of a schedule, an objective, ...): default, inclusive
    bounds and how Optuna searches it.

    ``kind="int"`` parameters are searched with ``suggest_int``; ``log=True`` searches on a
    log scale (needs ``low > 0``, or ``low >= 1`` for ints).
    """

    name: str
    default: float
    low: float
    high: float
    kind: Literal["float", "int"] = "float"
    log: bool = False
    help: str = ""

    def validate(self, value: Any, owner: str) -> float | int:
        """``value`` as this parameter's type; ConfigError naming ``owner`` (e.g. "schedule
        'linear'"), the parameter and its bounds."""
        where = f"{owner}: parameter {self.name!r}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number in [{self.low}, {self.high}], got {value!r}.")
        if not math.isfinite(value):
            raise ConfigError(f"{where}={value!r} is out of bounds [{self.low}, {self.high}].")
        if self.kind == "int":
            if float(value) != int(value):
                raise ConfigError(f"{where} must be an integer in [{self.low:g}, {self.high:g}], got {value!r}.")
            value = int(value)
        else:
            value = float(value)
        if not (self.low <= value <= self.high):
            raise ConfigError(f"{where}={value!r} is out of bounds [{self.low}, {self.high}].")
        return value

    def distribution(self) -> Any:
        """The Optuna distribution this parameter is searched with."""
        import optuna

        if self.kind == "int":
            return optuna.distributions.IntDistribution(int(self.low), int(self.high), log=self.log)
        return optuna.distributions.FloatDistribution(float(self.low), float(self.high), log=self.log)

    def suggest(self, trial: Any, prefix: str = "") -> float | int:
        """Ask an ``optuna.Trial`` for a value of this parameter."""
        key = f"{prefix}{self.name}"
        if self.kind == "int":
            return trial.suggest_int(key, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(key, float(self.low), float(self.high), log=self.log)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "default": self.default, "low": self.low, "high": self.high,
                "kind": self.kind, "log": self.log, "help": self.help}

    def problems(self) -> list[str]:
        """What is wrong with this declaration (empty when it is well-formed)."""
        out = []
        if not (isinstance(self.name, str) and self.name.isidentifier()):
            out.append(f"parameter name {self.name!r} must be a Python identifier")
        if self.kind not in ("float", "int"):
            out.append(f"{self.name!r}: kind must be 'float' or 'int', got {self.kind!r}")
        nums = {"default": self.default, "low": self.low, "high": self.high}
        bad = [k for k, v in nums.items() if isinstance(v, bool) or not isinstance(v, (int, float))
               or not math.isfinite(v)]
        if bad:
            return out + [f"{self.name!r}: {', '.join(bad)} must be finite numbers"]
        if not self.low <= self.default <= self.high:
            out.append(f"{self.name!r}: default {self.default} is outside its bounds [{self.low}, {self.high}]")
        if self.kind == "int" and any(float(v) != int(v) for v in nums.values()):
            out.append(f"{self.name!r}: an int parameter needs integer default and bounds")
        if self.log and self.low <= 0 or self.log and self.kind == "int" and self.low < 1:
            out.append(f"{self.name!r}: a log-scale parameter needs low > 0 (>= 1 for ints), got {self.low}")
        return out


def validate_values(params: Sequence[Param], values: Mapping[str, Any], owner: str) -> dict[str, float | int]:
    """``values`` completed with defaults and checked against ``params``: unknown names and
    out-of-bounds values raise ConfigError naming ``owner`` and the declared parameters."""
    known = {p.name: p for p in params}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{owner} has no parameter(s) {', '.join(map(repr, unknown))}; "
                          f"its parameters are: {', '.join(known) or '(none)'}.")
    return {p.name: p.validate(values.get(p.name, p.default), owner) for p in params}


def declaration_problems(params: Any) -> list[str]:
    """What is wrong with a plugin's ``params`` declaration (empty when well-formed)."""
    if not isinstance(params, tuple) or not all(isinstance(p, Param) for p in params):
        return ["params must be a tuple of rftbench.params.Param"]
    problems = [msg for p in params for msg in p.problems()]
    names = [p.name for p in params]
    problems += [f"parameter {n!r} is declared twice" for n in sorted({n for n in names if names.count(n) > 1})]
    return problems
