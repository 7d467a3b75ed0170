"""Experiment grids: one YAML spec expands into many validated experiment configs.

A grid spec has a ``base`` config (any :class:`~rftbench.config.ExperimentConfig` keys), and
``axes``: each axis maps a label to overrides (dotted keys, e.g. ``model.name``); the grid is
the product of the axes, in the order written. ``name`` is a template over the axis labels,
e.g. ``"{backbone}-{dataset}-eps{eps}-{schedule}"``. Expanding validates every config and
resolves every registry name offline (no weights or data touched), so a grid fails before
any GPU time is spent. ``benchmarks/grids/paper_grid.yaml`` is the paper-scale spec.
"""
from __future__ import annotations

import copy
import fnmatch
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional


from ..config import (ExperimentConfig, apply_overrides, dump_config, parse_config, parse_shard, read_yaml,
                      set_dotted)
from ..errors import ConfigError

_SPEC_KEYS = {"grid", "description", "name", "base", "axes", "launcher"}


@dataclass
class GridRun:
    """One point of a grid: its name, its label on each axis and its config."""

    name: str
    labels: dict[str, str]
    config: ExperimentConfig


def load_grid_spec(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    spec = read_yaml(p, "grid spec")
    if not isinstance(spec, dict):
        raise ConfigError(f"grid spec {p}: the top level must be a mapping with base and axes.")
    return spec


def expand_grid(spec: dict[str, Any], source: str = "<grid>", overrides: list[str] | None = None,
                check_names: bool = True) -> list[GridRun]:
    """All configs of a grid spec, validated; ``overrides`` (``key=value``) apply to every run."""
    unknown = sorted(set(spec) - _SPEC_KEYS)
    if unknown:
        raise ConfigError(f"grid spec {source}: unknown key(s) {unknown}; a spec has {sorted(_SPEC_KEYS)}.")
    base = spec.get("base") or {}
    axes = spec.get("axes") or {}
    if not isinstance(base, dict) or not isinstance(axes, dict) or not axes:
        raise ConfigError(f"grid spec {source}: needs `base:` (a config mapping) and `axes:` (axis -> label -> "
                          f"overrides).")
    for axis, values in axes.items():
        if not isinstance(values, dict) or not values:
            raise ConfigError(f"grid spec {source}: axis {axis!r} must map labels to overrides, e.g. "
                              f"`{axis}: {{label: {{model.name: ...}}}}`.")
    template = spec.get("name") or "-".join("{" + a + "}" for a in axes)
    runs, seen = [], set()
    for combo in itertools.product(*[list(v.items()) for v in axes.values()]):
        labels = {axis: str(label) for axis, (label, _) in zip(axes, combo)}
        try:
            name = template.format(**labels)
        except KeyError as exc:
            raise ConfigError(f"grid spec {source}: name template {template!r} uses {exc}, which is not an axis "
                              f"({', '.join(axes)}).") from None
        if name in seen:
            raise ConfigError(f"grid spec {source}: two runs are both named {name!r}; put every axis in `name:`.")
        seen.add(name)
        data = copy.deepcopy(base)
        for axis, (label, sets) in zip(axes, combo):
            where = f"grid spec {source}, axis {axis}, label {label}"
            if not isinstance(sets, dict):
                raise ConfigError(f"{where}: overrides must be a mapping of dotted keys to values.")
            for key, value in sets.items():
                set_dotted(data, str(key), copy.deepcopy(value), where)
        data["name"] = name
        data = apply_overrides(data, overrides or [])
        cfg = parse_config(data, f"{source} [{name}]")
        runs.append(GridRun(name, labels, cfg))
    if check_names:
        check_registry_names([r.config for r in runs])
    return runs


def check_registry_names(configs: list[ExperimentConfig]) -> None:
    """:func:`rftbench.experiments.validation.validate_names` for every run (each distinct set of names
    once); raise the registry's error (with the known names) on the first that fails."""
    from .validation import validate_names

    checked: set[str] = set()
    for cfg in configs:
        key = json.dumps([cfg.plugins, cfg.model.name, cfg.data.name, cfg.schedule.model_dump(),
                          cfg.train.objective.model_dump(), cfg.eval.sweep_attack, cfg.eval.distribution],
                         sort_keys=True, default=str)
        if key not in checked:
            validate_names(cfg)
            checked.add(key)


def select_runs(runs: list[GridRun], only: Optional[list[str]] = None, shard: Optional[str] = None) -> list[GridRun]:
    """Runs whose name matches any glob in ``only``, then shard ``"i/n"`` (every n-th, from i, 0-based)."""
    if only:
        runs = [r for r in runs if any(fnmatch.fnmatchcase(r.name, g) for g in only)]
    if shard:
        i, n = parse_shard(shard)
        runs = runs[i::n]
    return runs


def write_configs(runs: list[GridRun], out_dir: str | Path) -> list[Path]:
    """Write each run's config as ``<out_dir>/<name>.yaml`` (for ``rftbench train`` in array jobs)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for r in runs:
        p = out / f"{r.name}.yaml"
        p.write_text(dump_config(r.config))
        paths.append(p)
    return paths


def run_grid(runs: list[GridRun], *, evaluate: bool = True) -> list[dict[str, Any]]:
    """Train (and evaluate) every run in turn with :func:`~rftbench.experiments.experiment.run_experiment`;
    each lands in MLflow as usual. Returns one summary per run."""
    from .experiment import run_experiment

    out = []
    for r in runs:
        res = run_experiment(r.config, evaluate=evaluate, extra_tags={f"rftbench.grid.{k}": v for k, v in r.labels.items()})
        rec = res.record
        out.append({"name": r.name, "run_id": res.run_id, "labels": r.labels,
                    "acc_clean": rec["clean_accuracy"] if rec else None,
                    "expected_robustness": rec["expected_robustness"]["value"] if rec else None,
                    "train_wall_time_s": res.train.wall_time_s})
    return out


def launcher_config(spec: dict[str, Any], source: str = "<grid>"):
    """The spec's ``launcher:`` section as a :class:`~rftbench.config.LauncherConfig`."""
    from pydantic import ValidationError

    from ..config import LauncherConfig

    try:
        return LauncherConfig.model_validate(spec.get("launcher") or {})
    except ValidationError as exc:
        raise ConfigError(f"grid spec {source}, launcher section: {exc.errors()[0]['loc']}: "
                          f"{exc.errors()[0]['msg']}; see `rftbench sweep --help` for the launcher options.") from None


def launch_options(lc) -> Any:
    """:class:`rftbench.launch.LaunchOptions` from a :class:`~rftbench.config.LauncherConfig`."""
    from ..launch import LaunchOptions

    return LaunchOptions(launcher=lc.name or "local", workers=lc.workers, threads=lc.threads, cpus_per_run=lc.cpus,
                         gpus_per_run=lc.gpus, partition=lc.partition, time_min=lc.time_min,
                         array_parallelism=lc.array_parallelism, mem_gb=lc.mem_gb, folder=lc.folder,
                         cluster=lc.cluster, ray_address=lc.ray_address, slurm_requeue=lc.requeue,
                         slurm_signal_delay_s=lc.signal_delay_s, slurm_max_requeues=lc.max_requeues,
                         unknown_timeout_s=lc.unknown_timeout_s)


def plan_grid(runs: list[GridRun], point_options: Any = None) -> list[dict[str, Any]]:
    """What :func:`run_sweep` would do with each run (``--dry-run``): train, resume, skip, fail."""
    from .gridrun import PointOptions, decide, find_runs, run_identity
    from ..tracking.store import client_for

    opts = point_options or PointOptions()
    client = client_for()
    out = []
    for r in runs:
        ident = run_identity(r.config)
        exp = client.get_experiment_by_name(r.config.experiment)
        d = decide(find_runs(client, exp.experiment_id, ident) if exp else [], opts)
        action = {"new": "train", "busy": "skip (busy)"}.get(d.action, d.action)
        out.append({"name": r.name, "identity": ident, "action": action, "message": d.message})
    return out


def run_sweep(runs: list[GridRun], launcher: Any = None, point_options: Any = None) -> list[Any]:
    """Every run of the grid through :func:`rftbench.experiments.gridrun.run_point`: in this process one after
    another (``launcher`` None) or with :func:`rftbench.launch.launch` (a ``LaunchOptions``).
    Returns one :class:`~rftbench.experiments.gridrun.PointResult` per run; a run whose worker died is
    ``failed`` with the launcher's message (its MLflow run is resumed by the next sweep)."""
    from .gridrun import PointOptions, PointResult, run_identity, run_point

    opts = point_options or PointOptions()
    calls = [(r.config.model_dump(), r.labels, opts) for r in runs]
    if launcher is None:
        done: list[Any] = []
        for c in calls:
            done.append(run_point(*c))
            _say_point(done, len(calls))
        return done
    from ..launch import launch

    # what is done (or failed, without --retry-failed) needs no worker; the workers decide again under a claim
    planned = {p["name"]: p for p in plan_grid(runs, opts)}
    results: dict[str, Any] = {}
    for r in runs:
        p = planned[r.name]
        if p["action"] in ("skip", "skip (busy)", "failed"):
            status = "failed" if p["action"] == "failed" else "skipped"
            results[r.name] = PointResult(r.name, p["identity"], status, None, p["message"])
    todo = [(r, c) for r, c in zip(runs, calls) if r.name not in results]
    if not launcher.preload:
        from dataclasses import replace

        launcher = replace(launcher, preload=("rftbench.experiments.experiment",))
    outcomes = launch(run_point, [c for _, c in todo], launcher)
    for (r, _), o in zip(todo, outcomes):
        results[r.name] = o.value if o.ok else PointResult(r.name, run_identity(r.config), "failed", None, o.error)
    ordered = [results[r.name] for r in runs]
    for i in range(len(ordered)):
        _say_point(ordered[:i + 1], len(ordered))
    return ordered


def _say_point(done: list[Any], total: int) -> None:
    """One progress line (stderr) for the last grid point of ``done``, with the counts so far."""
    from ..progress import note

    last = done[-1]
    counts = sweep_summary(done)
    why = f" ({last.message})" if last.status == "failed" and last.message else ""
    note(f"grid run {len(done)}/{total} {last.name}: {last.status}{why}; so far " +
         ", ".join(f"{counts[s]} {s}" for s in ("finished", "resumed", "skipped", "failed") if counts[s]))


def sweep_summary(results: list[Any]) -> dict[str, Any]:
    """Counts per status and every failure's message."""
    counts = {s: sum(r.status == s for r in results) for s in ("finished", "skipped", "resumed", "failed")}
    return {**counts, "failures": [{"name": r.name, "message": r.message} for r in results if r.status == "failed"]}
