"""``rftbench tune``: Optuna search over schedule shapes; ``tune show STUDY`` and
``tune best STUDY`` look at and finish a study."""
from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from .common import add_json_flag, add_set_flag, console, print_json


def check_storage_url(url: str) -> None:
    """Refuse an Optuna storage URL that SQLAlchemy cannot open (unknown scheme or driver),
    before any study or run is created."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    from ..errors import ConfigError

    try:
        make_url(url).get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise ConfigError(f"--storage {url.split('@')[-1]!r} is not a database URL SQLAlchemy can open ({exc}); "
                          f"use e.g. sqlite:///optuna.db or postgresql://user@host/db.") from None


def _print_summary(res: dict, out: Console) -> None:
    out.print(f"study [bold]{res['study_name']}[/] ({res['storage'].split('@')[-1]}): "
                  f"objectives {', '.join(f'{o} ({d})' for o, d in zip(res['objectives'], res['directions']))}; "
                  f"trials {res['states']}")
    title = "Pareto front" if len(res["objectives"]) > 1 else "best trial"
    table = Table(title=title)
    for col in ("trial", *res["objectives"], "schedule", "params", "MLflow run"):
        table.add_column(col)
    for row in res["pareto_front"]:
        trained = row["params"] if row["schedule_params"] is None else {  # the values it trained with
            **row["schedule_params"], **{k: v for k, v in row["params"].items() if k.startswith("train.")}}
        table.add_row(str(row["number"]), *(f"{v:.4g}" for v in row["values"]), str(row["schedule"]),
                      ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trained.items()),
                      str(row["mlflow_run_id"]))
    out.print(table)
    from ..tuning.setting import describe_changes

    for change in res.get("config_changes", []):
        out.print(f"config changed on resume (--allow-config-change), trials from {change['from_trial']} on: "
                      f"{describe_changes(change['changes'])}", highlight=False)
    for obj, imp in res.get("importances", {}).items():
        shown = ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k}: {v}" for k, v in imp.items())
        out.print(f"importance (fANOVA) for {obj}: {shown}")


def _print_best(rows: list[dict], out: Console) -> None:
    """One line per retrained trial: its test metrics, schedule and MLflow run (``--json`` has it all)."""
    table = Table(title="retrained on train+val, evaluated on test")
    for col in ("trial", "schedule", "test", "certified", "MLflow run"):
        table.add_column(col)
    for row in rows:
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in row["schedule_params"].items())
        test = ", ".join(f"{k} {v:.4g}" for k, v in row["test"].items() if isinstance(v, (int, float)))
        table.add_row(str(row["trial"]), f"{row['schedule']}({params})", test or "-", str(row["certified"]),
                      str(row["mlflow_run_id"]))
    out.print(table)


def _options(args):
    from ..tuning import TuneOptions

    return TuneOptions(trials=args.trials, study=args.study, storage=args.storage, sampler=args.sampler,
                       pruner=args.pruner, objectives=args.objectives.split(","), grid_points=args.grid_points,
                       timeout=args.timeout, max_trials=args.max_trials, enqueue_defaults=args.enqueue_defaults,
                       workers=args.workers, share_prefix=not args.no_share_prefix,
                       allow_config_change=args.allow_config_change)


def _cmd_show_or_best(args) -> int:
    from ..errors import TuneError
    from ..tuning import default_storage, summarize

    if not args.study_arg:
        raise TuneError(f"`rftbench tune {args.config} STUDY`: name the study (see `rftbench tune show NAME`).")
    storage = args.storage or default_storage()
    if args.config == "best":
        from ..config import parse_override
        from ..tuning.best import retrain_best

        out = retrain_best(args.study_arg, storage, overrides=dict(parse_override(s) for s in args.set))
        print_json(out) if args.json else _print_best(out, console())
        return 0
    res = summarize(args.study_arg, storage).as_dict()
    if args.json:
        print_json(res)
    else:
        _print_summary(res, console())
    return 0


def cmd_tune(args) -> int:
    from ..config import load_config
    from ..tuning import tune

    if args.config in ("show", "best"):
        return _cmd_show_or_best(args)
    cfg = load_config(args.config, args.set)
    if args.storage:
        check_storage_url(args.storage)
    try:
        res = tune(cfg, _options(args)).as_dict()
    except KeyboardInterrupt as exc:
        raise KeyboardInterrupt(f"{exc or 'stopped'}; the running trial is marked FAIL and its MLflow run KILLED, "
                                f"finished trials are kept: run the same command again to resume the study.") from None
    if args.json:
        print_json(res)
    else:
        _print_summary(res, console())
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    tu = sub.add_parser("tune", help="Optuna search over schedule shapes (tune CONFIG | tune show STUDY | "
                                     "tune best STUDY)",
                        description="`tune CONFIG` runs (or resumes) a study; `tune show STUDY` prints its best "
                                    "trial / Pareto front, fANOVA importances and trial states; `tune best STUDY` "
                                    "retrains the winner(s) on train+val and evaluates on test with AutoAttack.")
    tu.add_argument("config", help="a config file, or `show` / `best`")
    tu.add_argument("study_arg", nargs="?", metavar="STUDY", help="the study for show / best")
    tu.add_argument("--trials", type=int, default=10, help="trials per worker")
    tu.add_argument("--storage", help="Optuna RDB URL (default sqlite:///optuna.db)")
    tu.add_argument("--study", help="study name (workers sharing a name and storage join one study)")
    tu.add_argument("--sampler", default="tpe", help="tpe, random, cmaes, gp, qmc, grid, nsgaii")
    tu.add_argument("--pruner", default=None, help="none, median, percentile, successive_halving, hyperband, "
                                                   "successive_halving_topk, hyperband_topk (ties at a rung promoted "
                                                   "only into its top 1/3), wilcoxon (default: median; none for "
                                                   "several objectives)")
    tu.add_argument("--objectives", default="val_er", help="comma-separated: val_er, val_clean, val_pgd, "
                                                           "train_compute (several = a multi-objective study)")
    tu.add_argument("--grid-points", type=int, default=5, help="points per parameter of the grid sampler")
    tu.add_argument("--timeout", type=float, default=None, help="seconds per worker")
    tu.add_argument("--max-trials", type=int, default=None, help="cap on the study's trials across all workers")
    tu.add_argument("--enqueue-defaults", action="store_true",
                    help="the first trial of a new study is the config's setting (the paper's, by default)")
    tu.add_argument("--workers", type=int, default=1, help="worker processes on the same storage")
    tu.add_argument("--no-share-prefix", action="store_true",
                    help="every trial trains its own eps-0 epochs (default: the first trial to reach one trains "
                         "it, later trials with the same training settings restore it)")
    tu.add_argument("--allow-config-change", action="store_true",
                    help="resume a study with a training config other than the one it was created with (refused "
                         "by default: its trials would not be comparable); the change is recorded on the study and "
                         "its trials, and `tune best` retrains each trial with its own config")
    add_set_flag(tu)
    add_json_flag(tu)
    tu.set_defaults(func=cmd_tune)
