"""The epsilon-schedule plugin contract.

A schedule is pure: it maps ``(step, total_steps, target_eps)`` to the perturbation budget for
that step, always within ``[0, target_eps]`` (eps in [0,1] pixel units for Linf, or the L2
radius in the same pixel units). Subclasses implement :meth:`Schedule.alpha`, the fraction of
the target eps as a function of training progress in [0, 1], and declare their parameters as
:class:`Param` objects (default, inclusive bounds, int/float, log scale), which are also their
Optuna search space. Whether the trainer asks per step or per epoch is its own option
(``schedule.granularity``): to a schedule a "step" is just a position out of ``total_steps``.

Plugins live one file each in the ``rftbench/schedules/`` package, in installed packages
under the entry-point group ``rftbench.schedules`` (the entry point's name is the schedule's
name; it points at a :class:`Schedule` subclass), or in a user's file loaded with
``--plugin path.py`` / ``plugins:`` in a config. A minimal plugin file::

    from rftbench.scheduling import Param, Schedule, register_schedule

    @register_schedule("quadratic")
    class Quadratic(Schedule):
        reference = "where the shape comes from"
        params = (Param("power", 2.0, 1.0, 4.0),)

        def alpha(self, progress):
            return progress ** self.values["power"]

Shapes that stay at 0 for a first phase, ramp to the target, then hold (the paper's shape and
its smooth variants) subclass :class:`RampSchedule` and only implement ``ramp(u)``.

**What Optuna records is what trained.** The search coordinates (:meth:`Schedule.search_params`)
are static and independent: every point of their box is a valid schedule, so no sampled value is
ever sorted, clipped or replaced afterwards. Where declared parameters constrain each other, the
schedule samples other coordinates and maps them with :meth:`Schedule.from_search`, a pure
function: the params Optuna records for a trial rebuild, through ``from_search``, exactly the
schedule the trial trained with (the trial's ``schedule_params`` attribute holds its output).
A ramp searches ``start`` and ``length`` (where ``end`` lies between ``start`` and its highest
value: ``end = start + length * (1 - start)`` over the full range); with one of the two held
fixed it searches the other's own value within the part of its range that keeps
``start <= end``. Schedules whose parameters are independent need none of this: their
coordinates are their declared parameters.
"""
from __future__ import annotations

import importlib
import math
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

from .errors import ConfigError, RftbenchError, ScheduleDefinitionError
from .params import Param, declaration_problems, validate_values
from .registry import Registry, import_plugin_package


class Schedule:
    """Base class of epsilon schedules. Subclasses set ``params`` and implement ``alpha``.

    An instance holds validated parameter values in ``self.values`` (name -> number).
    """

    name: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()
    monotone: ClassVar[bool] = True  # non-decreasing in training progress (checked by the tests)
    reference: ClassVar[str] = ""  # where the shape comes from

    def __init__(self, /, **values: Any):
        self.values: dict[str, float | int] = validate_values(self.params, values, f"schedule {self.name!r}")
        self.check(self.values)

    @classmethod
    def search_params(cls, searched: Mapping[str, Param], fixed: Mapping[str, float | int]) -> tuple[Param, ...]:
        """The coordinates Optuna samples when the parameters in ``searched`` (declared ones,
        possibly with narrowed bounds) are searched and those in ``fixed`` are held: static,
        independent ranges in which every point is a valid schedule. Default: ``searched`` itself.

        Schedules whose parameters constrain each other override this with :meth:`from_search`
        and :meth:`to_search` (see :class:`RampSchedule`)."""
        return tuple(searched.values())

    @classmethod
    def from_search(cls, point: Mapping[str, float | int], searched: Mapping[str, Param],
                    fixed: Mapping[str, float | int]) -> dict[str, float | int]:
        """The schedule's parameter values for one point of :meth:`search_params` (fixed ones
        included). Pure and deterministic: the recorded point rebuilds the trained schedule."""
        return {**fixed, **point}

    @classmethod
    def to_search(cls, values: Mapping[str, float | int], searched: Mapping[str, Param],
                  fixed: Mapping[str, float | int]) -> dict[str, float | int]:
        """A point of :meth:`search_params` that :meth:`from_search` maps to ``values`` (the
        enqueued default trial); exact where the coordinates allow it."""
        return {name: values[name] for name in searched}

    @classmethod
    def suggest_params(cls, trial: Any, prefix: str = "") -> dict[str, float | int]:
        """One point of the declared search space (every declared parameter searched over its
        declared bounds), sampled from an ``optuna.Trial`` through :meth:`search_params`."""
        searched = {p.name: p for p in cls.params}
        point = {p.name: p.suggest(trial, prefix) for p in cls.search_params(searched, {})}
        return cls.from_search(point, searched, {})

    @classmethod
    def search_space(cls) -> dict[str, Any]:
        """The Optuna distributions of the declared search space, by coordinate name."""
        return {p.name: p.distribution() for p in cls.search_params({p.name: p for p in cls.params}, {})}

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """Name, parameters (defaults, bounds, kind), monotone flag and reference, as plain data."""
        return {"name": cls.name, "monotone": cls.monotone, "reference": cls.reference,
                "params": [p.describe() for p in cls.params]}

    def check(self, values: Mapping[str, float | int]) -> None:
        """Cross-parameter validation (e.g. ``start <= end``); raise ConfigError."""

    def alpha(self, progress: float) -> float:
        """Fraction of the target eps at ``progress`` = step / total_steps in [0, 1]."""
        raise NotImplementedError

    def eps_at(self, step: int, total_steps: int, target_eps: float) -> float:
        """The eps for ``step`` (0-based) of ``total_steps``, in the units of ``target_eps``.

        Always within ``[0, target_eps]``: the plugin's ``alpha`` is clipped to [0, 1].
        """
        if total_steps <= 0:
            raise ValueError(f"total_steps must be positive, got {total_steps}")
        if not target_eps >= 0:
            raise ValueError(f"target_eps must be >= 0, got {target_eps}")
        progress = min(max(step / total_steps, 0.0), 1.0)
        a = float(self.alpha(progress))
        if math.isnan(a):
            raise ScheduleDefinitionError(f"schedule {self!r} returned alpha = NaN at progress {progress}.")
        return float(target_eps) * min(max(a, 0.0), 1.0)

    def eps_values(self, total_steps: int, target_eps: float) -> list[float]:
        """eps for every step 0..total_steps-1."""
        return [self.eps_at(s, total_steps, target_eps) for s in range(total_steps)]

    def __repr__(self) -> str:
        args = ",".join(f"{k}={v:g}" for k, v in self.values.items())
        return f"{self.name}({args})" if args else self.name


_LENGTH_HELP = ("where end lies from start (0) to end's highest value (1): end = start + length * (1 - start) "
                "over the full range; the search coordinate of a ramp whose start and end are both searched")


class RampSchedule(Schedule):
    """eps = 0 until ``start``, then ``ramp(u)`` of the target with u going 0 -> 1 until ``end``,
    then the target (``start``/``end`` are fractions of training; ``start <= end``).

    Subclasses implement ``ramp(u)``: non-decreasing on [0, 1] with ramp(0) = 0 and ramp(1) = 1;
    they may add parameters after the two phase boundaries.
    """

    params = (
        Param("start", 0.24, 0.0, 1.0, help="fraction of training with eps = 0 (T1 / T)"),
        Param("end", 0.74, 0.0, 1.0, help="fraction of training at which eps reaches the target (T2 / T)"),
    )

    def ramp(self, u: float) -> float:
        """Fraction of the target at position u in [0, 1) of the ramp."""
        raise NotImplementedError

    @classmethod
    def search_params(cls, searched, fixed):
        """``start`` and ``length`` when both boundaries are searched; with one fixed, the other
        over the part of its range on the right side of it (ConfigError when no part is)."""
        s, e = searched.get("start"), searched.get("end")
        out = {k: p for k, p in searched.items() if k not in ("start", "end")}
        if s is not None and e is not None:
            start = cls._narrowed(s, high=min(s.high, e.high), why=f"lies above end's highest value {e.high}")
            defaults = {**{n: p.default for n, p in searched.items()}, "start": start.default,
                        "end": max(e.default, start.default)}
            length = cls.to_search(defaults, searched, fixed)["length"]
            return (start, Param("length", length, 0.0, 1.0, help=_LENGTH_HELP), *out.values())
        if s is not None:
            bound = fixed.get("end", s.high)
            out = {"start": cls._narrowed(s, high=min(s.high, bound), why=f"lies above the fixed end={bound}"), **out}
        if e is not None:
            bound = fixed.get("start", e.low)
            out = {"end": cls._narrowed(e, low=max(e.low, bound), why=f"lies below the fixed start={bound}"), **out}
        return tuple(out.values())

    @classmethod
    def _narrowed(cls, p: Param, *, low: float | None = None, high: float | None = None, why: str) -> Param:
        low, high = p.low if low is None else low, p.high if high is None else high
        if low > high:
            raise ConfigError(f"schedule {cls.name!r}: {p.name}'s range [{p.low}, {p.high}] {why}, so no "
                              f"{p.name} keeps start <= end; change one of the two ranges (search.params).")
        return replace(p, low=low, high=high, default=min(max(p.default, low), high))

    @classmethod
    def from_search(cls, point, searched, fixed):
        if "length" not in point:
            return {**fixed, **point}
        values = {k: v for k, v in point.items() if k != "length"}
        low, high = max(values["start"], searched["end"].low), searched["end"].high
        # the clamp only absorbs rounding: low + 1.0 * (high - low) may land an ulp past high
        values["end"] = min(max(low + point["length"] * (high - low), low), high)
        return {**fixed, **values}

    @classmethod
    def to_search(cls, values, searched, fixed):
        if "start" not in searched or "end" not in searched:
            return {name: values[name] for name in searched}
        point = {name: values[name] for name in searched if name != "end"}
        low, high = max(values["start"], searched["end"].low), searched["end"].high
        length = min(max((values["end"] - low) / (high - low), 0.0), 1.0) if high > low else 0.0
        for _ in range(64):  # step by ulps to the float whose image is exactly the wanted end
            got = cls.from_search({**point, "length": length}, searched, fixed)["end"]
            step = math.nextafter(length, math.inf if got < values["end"] else -math.inf)
            if got == values["end"] or not 0.0 <= step <= 1.0:
                break
            length = step
        return {"start": point.pop("start"), "length": length, **point}

    def check(self, values: Mapping[str, float | int]) -> None:
        if values["start"] > values["end"]:
            raise ConfigError(
                f"schedule {self.name!r}: start={values['start']} must not exceed end={values['end']} "
                f"(both are fractions of training)."
            )

    def alpha(self, progress: float) -> float:
        start, end = self.values["start"], self.values["end"]
        if progress < start:
            return 0.0
        if progress >= end:
            return 1.0
        return self.ramp((progress - start) / (end - start))


def _check_schedule_class(name: str, obj: Any, source: str) -> None:
    """Registry check: ``obj`` must be a well-formed Schedule subclass to be registered as ``name``."""
    where = f"schedule {name!r} ({source})"
    if not (isinstance(obj, type) and issubclass(obj, Schedule)):
        raise ScheduleDefinitionError(
            f"{where} must be a subclass of rftbench.scheduling.Schedule, got {obj!r}.")
    if not name or not isinstance(name, str) or any(c in name for c in ":,= "):
        raise ScheduleDefinitionError(f"{where}: a schedule name must be non-empty, without ':', ',', '=' or spaces.")
    own_name = obj.__dict__.get("name")
    if own_name and own_name != name:
        raise ScheduleDefinitionError(
            f"{where}: the class is registered as {own_name!r}; give it one name "
            f"(an entry point's name must equal the schedule's name).")
    if obj.alpha is Schedule.alpha or (issubclass(obj, RampSchedule) and obj.ramp is RampSchedule.ramp):
        method = "ramp(self, u)" if issubclass(obj, RampSchedule) else "alpha(self, progress)"
        raise ScheduleDefinitionError(f"{where} must implement {method}.")
    problems = declaration_problems(obj.params)
    if problems:
        raise ScheduleDefinitionError(f"{where} declares bad parameters: " + "; ".join(problems) + ".")
    obj.name = name
    try:
        obj().eps_at(0, 2, 1.0)
    except RftbenchError as exc:
        raise ScheduleDefinitionError(f"{where}: its defaults are not valid: {exc}") from None
    except Exception as exc:
        raise ScheduleDefinitionError(
            f"{where} fails with its default parameters: {type(exc).__name__}: {exc}") from exc


SCHEDULES: Registry[type[Schedule]] = Registry("schedule", entry_point_group="rftbench.schedules",
                                               check=_check_schedule_class)


def register_schedule(name: str):
    """Class decorator: register a :class:`Schedule` subclass under ``name``."""

    def deco(cls: type[Schedule]) -> type[Schedule]:
        SCHEDULES.add(name, cls)
        return cls

    return deco


def _load_builtin_schedules() -> None:
    # the plugin package rftbench.schedules, one file per schedule; imported by name (it imports
    # this module, so nothing here imports it)
    import_plugin_package("rftbench.schedules", "schedule", ScheduleDefinitionError)


SCHEDULES.add_loader(_load_builtin_schedules)


def create_schedule(name: str, params: Mapping[str, Any] | None = None) -> Schedule:
    """The one door: build the schedule ``name`` with ``params`` (validated against bounds)."""
    cls = SCHEDULES.get(name)
    return cls(**dict(params or {}))


def suggest_schedule_params(name: str, trial: Any, prefix: str = "") -> dict[str, float | int]:
    """One point of the declared search space of schedule ``name``, sampled from ``trial``.

    Checks the plugin's ``suggest_params`` against its declaration: exactly the declared
    names, each within its bounds (ScheduleDefinitionError otherwise).
    """
    cls = SCHEDULES.get(name)
    values = cls.suggest_params(trial, prefix)
    declared = [p.name for p in cls.params]
    if sorted(values) != sorted(declared):
        raise ScheduleDefinitionError(
            f"schedule {name!r}: suggest_params returned {sorted(values)}, but the declared parameters "
            f"are {sorted(declared)}; it must sample exactly those.")
    try:
        cls(**values)
    except ConfigError as exc:
        raise ScheduleDefinitionError(f"schedule {name!r}: suggest_params left the declared space: {exc}") from None
    return values


def parse_schedule_spec(spec: str) -> tuple[str, dict[str, float]]:
    """Parse ``"name:k=v,k2=v2"`` (the CLI form) into a name and a parameter dict."""
    name, _, rest = spec.partition(":")
    if not name.strip():
        raise ConfigError(f"schedule spec {spec!r} has no name; write NAME or NAME:key=value,...")
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


def schedule_from_spec(spec: str) -> Schedule:
    """Build a schedule from its CLI form ``"name:k=v,..."``."""
    name, params = parse_schedule_spec(spec)
    return create_schedule(name, params)


def schedule_outline(schedule: Schedule, total_steps: int, target_eps: float) -> tuple[list[float], list[float]]:
    """The schedule as the trainer sees it: eps held constant over each of ``total_steps``
    steps, as a step-function outline (progress points from 0 to 1, eps at each point)."""
    progress: list[float] = []
    eps: list[float] = []
    for s, e in enumerate(schedule.eps_values(total_steps, target_eps)):
        progress += [s / total_steps, (s + 1) / total_steps]
        eps += [e, e]
    return progress, eps


def plot_schedule_specs(specs: Sequence[str], out: str | Path, *, target_eps: float = 4 / 255,
                        total_steps: int = 1000) -> tuple[Path, list[Schedule]]:
    """Plot eps against training progress for each ``"name:k=v,..."`` spec on one figure.

    ``target_eps`` in [0,1] pixel units; ``total_steps`` is the resolution (steps, or epochs
    for a per-epoch schedule). Returns the figure's path and the schedules drawn.
    """
    if not specs:
        raise ConfigError("name at least one schedule to plot, e.g. epsilon_scheduling:start=0.24,end=0.74")
    if not (isinstance(target_eps, (int, float)) and math.isfinite(target_eps) and target_eps > 0):
        raise ConfigError(f"target eps must be a positive number (pixel units, e.g. 4/255), got {target_eps!r}.")
    if total_steps < 1:
        raise ConfigError(f"total steps must be at least 1, got {total_steps}.")
    out = Path(out)
    if out.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise ConfigError(f"--out {str(out)!r}: write the figure to a .png, .pdf or .svg file.")
    from .plots import plot_schedules  # matplotlib only when plotting

    built = [schedule_from_spec(s) for s in specs]
    series: dict[str, tuple[list[float], list[float]]] = {}
    for sched in built:
        label = repr(sched)
        while label in series:
            label += "'"
        series[label] = schedule_outline(sched, total_steps, target_eps)
    return plot_schedules(series, out, target_eps), built


def schedule_catalog() -> list[dict[str, Any]]:
    """Every registered schedule as plain data: ``describe()`` plus ``source`` (a file or an
    entry point) and ``origin`` (``built-in``, ``entry point`` or ``file``)."""
    pkg = importlib.import_module("rftbench.schedules")
    builtin_dir = Path(pkg.__path__[0]).resolve()
    items = []
    for entry in SCHEDULES.entries():
        if entry.source.startswith("entry point"):
            origin = "entry point"
        elif Path(entry.source).resolve().parent == builtin_dir:
            origin = "built-in"
        else:
            origin = "file"
        items.append({**entry.obj.describe(), "name": entry.name, "source": entry.source, "origin": origin})
    return items
