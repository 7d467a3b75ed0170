"""A study: its identity (space, objectives, directions) in an RDB storage, one MLflow parent
run, and workers that run trials as MLflow child runs.

``run_tune_worker(cfg_or_path, options, worker_index)`` is picklable and self-contained: a
launcher (local processes, submitit, Ray) calls it in another process; every worker opens the
study, checks it is the same search, finds the study's one parent run by its tag and runs its
share of trials; the sampler is re-seeded before every trial from (config seed, trial number),
and the storage hands out each trial number once, so no two workers or resumes share a stream.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import optuna

from ..config import ExperimentConfig, load_config, parse_config
from ..errors import TuneError
from ..experiments.validation import validate_names
from .objectives import StudyObjective, parse_objectives
from .samplers import PRUNERS, SAMPLERS, make_pruner, make_sampler, trial_seed
from .space import SearchSpace, build_space
from .storage import open_storage

from .setting import ATTR_CONFIG, config_changes, record_change, recorded_config, refusal

ATTR_SPACE, ATTR_OBJECTIVES = "rftbench.space", "rftbench.objectives"


@dataclass
class TuneOptions:
    """How to run a study (picklable: launchers send it to other processes)."""

    trials: int = 10  # per worker
    study: str | None = None
    storage: str | None = None
    sampler: str = "tpe"
    pruner: str | None = None  # None: median for one objective, none for several
    objectives: list[str] = field(default_factory=lambda: ["val_er"])
    grid_points: int = 5
    timeout: float | None = None  # seconds, per worker
    max_trials: int | None = None  # cap on the study's total trials (all workers, all states)
    enqueue_defaults: bool = False
    tracking_uri: str | None = None
    workers: int = 1
    visualize: bool = True  # Optuna's figures into the parent run when a worker ends
    share_prefix: bool = True  # trials reuse the eps-0 epochs an earlier trial trained (training/prefix.py)
    allow_config_change: bool = False  # resume a study with another training config (recorded: setting.py)

    def check(self) -> None:
        if self.trials < 1:
            raise TuneError(f"--trials {self.trials}: a worker runs at least one trial (use `rftbench tune show` "
                            f"to look at a study without running trials).")
        if self.max_trials is not None and self.max_trials < 1:
            raise TuneError(f"--max-trials {self.max_trials} must be at least 1.")
        if self.workers < 1:
            raise TuneError(f"--workers {self.workers} must be at least 1.")
        if self.grid_points < 2:
            raise TuneError(f"--grid-points {self.grid_points} must be at least 2.")
        if self.timeout is not None and self.timeout <= 0:
            raise TuneError(f"--timeout {self.timeout} must be a positive number of seconds.")
        SAMPLERS.get(self.sampler)
        PRUNERS.get(self.pruner_name())

    def pruner_name(self) -> str:
        if self.pruner is not None:
            return self.pruner
        return "median" if len(self.objectives) == 1 else "none"


def default_storage() -> str:
    return os.environ.get("RFTBENCH_OPTUNA_STORAGE") or f"sqlite:///{Path.cwd().resolve() / 'optuna.db'}"


def study_name_for(cfg: ExperimentConfig, options: TuneOptions) -> str:
    return options.study or f"{cfg.experiment}-{cfg.name}-{cfg.schedule.name}"


@dataclass
class Prepared:
    cfg: ExperimentConfig
    space: SearchSpace
    objectives: list[StudyObjective]
    study_name: str
    storage_url: str
    storage: Any
    parent_run_id: str
    tracking_uri: str | None = None
    visualize: bool = True
    prefix_dir: Path | None = None  # the study's shared eps-0 epochs (None: every trial trains its own)
    config_changes: dict[str, Any] = field(default_factory=dict)  # allowed differences from the study's config
    config_change: str | None = None  # their digest (setting.record_change)


def prefix_dir_for(cfg: ExperimentConfig, study_name: str, options: TuneOptions) -> Path | None:
    """Where the study's trials share their eps-0 epochs: ``output_dir/shared-prefix/STUDY`` (one
    directory per study, so that two studies never share compute). None when ``--no-share-prefix``
    or when training knobs are searched (trials then differ from the first epoch on)."""
    import re

    if not options.share_prefix or (cfg.search is not None and cfg.search.train):
        return None
    return Path(cfg.output_dir).resolve() / "shared-prefix" / re.sub(r"[^\w.-]", "_", study_name)


def _check_identity(study: optuna.Study, space: SearchSpace, objectives: list[StudyObjective]) -> None:
    attrs = study.user_attrs
    want_obj = [o.name for o in objectives]
    had_dirs = [d.name.lower() for d in study.directions]
    if attrs.get(ATTR_OBJECTIVES, want_obj) != want_obj or had_dirs != [o.direction for o in objectives]:
        raise TuneError(f"study {study.study_name!r} optimises {attrs.get(ATTR_OBJECTIVES)} ({', '.join(had_dirs)}); "
                        f"this run asks for {want_obj} ({', '.join(o.direction for o in objectives)}). Use the "
                        f"study's --objectives to resume it, or a new --study name.")
    had = attrs.get(ATTR_SPACE)
    if had is not None and had["fingerprint"] != space.fingerprint():
        raise TuneError(f"study {study.study_name!r} searched another space:\n  before: {json.dumps(had['space'])}\n"
                        f"  now:    {json.dumps(space.describe())}\nresume it with the same schedule/search "
                        f"sections, or start a new --study name.")


def _create_or_load(name: str, storage: Any, objectives: list[StudyObjective]) -> tuple[optuna.Study, bool]:
    """The study, and whether this call created it (the storage's unique study name lets exactly
    one caller create it, however many start at once)."""
    try:
        return optuna.create_study(study_name=name, storage=storage,
                                   directions=[o.direction for o in objectives]), True
    except optuna.exceptions.DuplicatedStudyError:
        return optuna.load_study(study_name=name, storage=storage), False


def _record_identity(study: optuna.Study, cfg: ExperimentConfig, space: SearchSpace,
                     objectives: list[StudyObjective]) -> None:
    study.set_user_attr(ATTR_SPACE, {"fingerprint": space.fingerprint(), "space": space.describe()})
    study.set_user_attr(ATTR_OBJECTIVES, [o.name for o in objectives])
    study.set_user_attr(ATTR_CONFIG, cfg.model_dump(mode="json"))


def prepare_study(cfg: ExperimentConfig, options: TuneOptions) -> Prepared:
    """Create or open the study, check it is the same search, enqueue the defaults (new study
    only), and create (the study's creator) or find its one MLflow parent run. Safe to call from
    every worker at once (see :mod:`rftbench.tuning.mlflow_link`)."""
    from .mlflow_link import create_parent, parent_of, wait_for_setup

    options.check()
    validate_names(cfg)
    space = build_space(cfg)
    objectives = parse_objectives(options.objectives)
    make_sampler(options.sampler, 0, space, options.grid_points, len(objectives))  # refuse early
    make_pruner(options.pruner_name(), cfg.train.epochs, len(objectives))
    url = options.storage or default_storage()
    storage = open_storage(url)
    name = study_name_for(cfg, options)
    study, created = _create_or_load(name, storage, objectives)
    if not created:
        wait_for_setup(study)  # the creator records the identity, then the parent run
        _check_identity(study, space, objectives)
    if ATTR_SPACE not in study.user_attrs:
        _record_identity(study, cfg, space, objectives)
    elif ATTR_CONFIG not in study.user_attrs:  # made by an rftbench that did not record it: from now on
        study.set_user_attr(ATTR_CONFIG, cfg.model_dump(mode="json"))
    changes, digest = _check_setting(study, cfg, options)
    if options.enqueue_defaults and not study.trials:
        study.enqueue_trial(space.default_point(), user_attrs={"enqueued": "defaults"}, skip_if_exists=True)
    if created:
        parent = create_parent(study, cfg, url, options, space)
    else:
        parent = parent_of(study, cfg, url, options, space)
    return Prepared(cfg, space, objectives, name, url, storage, parent, options.tracking_uri, options.visualize,
                    prefix_dir_for(cfg, name, options), changes, digest)


def _check_setting(study: optuna.Study, cfg: ExperimentConfig, options: TuneOptions) -> tuple[dict, str | None]:
    """The differences of ``cfg`` from the study's recorded config: refused (TuneError naming
    them), or with ``allow_config_change`` recorded on the study (with their digest)."""
    recorded = recorded_config(study)
    changes = config_changes(recorded, cfg) if recorded is not None else {}
    if not changes:
        return {}, None
    if not options.allow_config_change:
        raise refusal(study.study_name, changes)
    return changes, record_change(study, cfg, changes)


def _as_config(cfg_or_path: ExperimentConfig | str | Path | dict) -> ExperimentConfig:
    if isinstance(cfg_or_path, ExperimentConfig):
        return cfg_or_path
    if isinstance(cfg_or_path, dict):
        return parse_config(cfg_or_path, "<tune worker>")
    return load_config(cfg_or_path)


def run_tune_worker(cfg_or_path: ExperimentConfig | str | Path | dict, options: TuneOptions | dict,
                    worker_index: int = 0) -> dict[str, Any]:
    """One worker: run ``options.trials`` trials of the study (fewer on ``timeout`` or when the
    study reaches ``max_trials``). Picklable arguments, a plain dict back."""
    from optuna.study import MaxTrialsCallback

    from .trial import make_objective

    options = TuneOptions(**options) if isinstance(options, dict) else options
    prep = prepare_study(_as_config(cfg_or_path), options)
    existing = len(optuna.load_study(study_name=prep.study_name, storage=prep.storage).trials)
    seed = prep.cfg.seed  # each trial's sampler seed: samplers.trial_seed(seed, trial number)
    study = optuna.load_study(study_name=prep.study_name, storage=prep.storage,
                              sampler=make_sampler(options.sampler, seed, prep.space, options.grid_points,
                                                   len(prep.objectives)),
                              pruner=make_pruner(options.pruner_name(), prep.cfg.train.epochs, len(prep.objectives)))
    from .mlflow_link import TrialRunCallback

    from .trial_progress import TrialProgress

    lines = TrialProgress(options.trials)
    callbacks = [TrialRunCallback(prep.tracking_uri, prep.objectives), lines]
    if options.max_trials:
        callbacks.append(MaxTrialsCallback(options.max_trials, states=None))
    mine: list[int] = []
    if options.max_trials is None or existing < options.max_trials:
        try:
            study.optimize(lines.wrap(make_objective(prep, mine)), n_trials=options.trials, timeout=options.timeout,
                           callbacks=callbacks, catch=())
        finally:
            from .mlflow_link import close_parent

            close_parent(study, prep)
    return {"worker": worker_index, "config_seed": seed, "trials": mine, "study": prep.study_name,
            "trial_seeds": {n: trial_seed(seed, n) for n in mine}}


def _worker_call(cfg: dict, options: dict, worker_index: int) -> dict[str, Any]:
    """A worker process of ``tune --workers N``; its prints go to stderr (stdout is the parent's
    to write, e.g. one --json document)."""
    import contextlib
    import sys

    with contextlib.redirect_stdout(sys.stderr):
        return run_tune_worker(cfg, options, worker_index)


def _launch_workers(cfg: ExperimentConfig, options: TuneOptions) -> list[dict[str, Any]]:
    """``options.workers`` workers on the same storage through the ``local`` launcher (each its
    own process with its share of the CPU's threads; one that dies does not stop the others)."""
    from ..launch import LaunchOptions, launch

    one = TuneOptions(**{**asdict(options), "workers": 1})
    threads = max(1, (os.cpu_count() or 1) // options.workers)
    calls = [(cfg.model_dump(mode="json"), asdict(one), i) for i in range(options.workers)]
    outcomes = launch(_worker_call, calls, LaunchOptions(workers=options.workers, threads=threads))
    failed = [f"worker {i}: {o.error}" for i, o in enumerate(outcomes) if not o.ok]
    if failed:
        raise TuneError(f"{len(failed)} of {options.workers} tune workers failed ({'; '.join(failed)}); the "
                        f"others' trials are in the study: run the same command again to go on.")
    return [o.value for o in outcomes]


def tune(cfg: ExperimentConfig, options: TuneOptions | None = None, **kw: Any) -> "TuneResult":
    """Run the study: ``options.workers`` workers of ``options.trials`` trials each; the summary
    back. Keyword arguments are TuneOptions fields (``n_trials`` is accepted for ``trials``)."""
    from .report import TuneResult, summarize

    if "n_trials" in kw:
        kw["trials"] = kw.pop("n_trials")
    if "study_name" in kw:
        kw["study"] = kw.pop("study_name")
    options = options or TuneOptions(**kw)
    prep = prepare_study(cfg, options)  # once here: errors before any process starts
    if options.workers == 1:
        runs = [run_tune_worker(cfg, options, 0)]
    else:
        runs = _launch_workers(cfg, options)
    res: TuneResult = summarize(prep.study_name, prep.storage_url, tracking_uri=options.tracking_uri)
    res.workers = runs
    return res
