"""``rftbench tune``: Optuna search over schedule shapes."""
from __future__ import annotations

import argparse

from rich.console import Console

from .common import add_json_flag, add_set_flag, print_json


def cmd_tune(args) -> int:
    from ..config import load_config
    from ..tune import tune

    cfg = load_config(args.config, args.set)
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
