"""``rftbench tune``: Optuna search over schedule shapes."""
from __future__ import annotations

import argparse

from rich.console import Console

from .common import add_json_flag, add_set_flag, print_json


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


def cmd_tune(args) -> int:
    from ..config import load_config
    from ..tune import tune

    cfg = load_config(args.config, args.set)
    if args.storage:
        check_storage_url(args.storage)
    res = tune(cfg, n_trials=args.trials, storage=args.storage, study_name=args.study, sampler=args.sampler,
               pruner=args.pruner)
    out = {"study": res.study_name, "storage": res.storage, "best_params": res.best_params,
           "best_val_expected_robustness": res.best_value, "n_trials": res.n_trials, "trials": res.trials}
    if args.json:
        print_json(out)
    else:
        Console().print(out)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    tu = sub.add_parser("tune", help="Optuna search over a schedule's parameters (objective: val ER)")
    tu.add_argument("config")
    tu.add_argument("--trials", type=int, default=10)
    tu.add_argument("--storage", help="Optuna RDB URL (default sqlite:///optuna.db)")
    tu.add_argument("--study", help="study name (workers sharing a name and storage join one study)")
    tu.add_argument("--sampler", default="tpe")
    tu.add_argument("--pruner", default="median")
    add_set_flag(tu)
    add_json_flag(tu)
    tu.set_defaults(func=cmd_tune)
