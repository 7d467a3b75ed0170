"""``rftbench leaderboard``: results read back from MLflow."""
from __future__ import annotations

import argparse

from .common import add_json_flag, print_json


def cmd_leaderboard(args) -> int:
    from ..leaderboard import collect_results, render_leaderboard, rows_to_json

    rows = collect_results(args.experiment)
    if args.json:
        print_json(rows_to_json(rows))
    else:
        render_leaderboard(rows, f"rftbench leaderboard: {args.experiment}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    lb = sub.add_parser("leaderboard", help="rank finished runs of an MLflow experiment")
    lb.add_argument("--experiment", default="rftbench-demo")
    add_json_flag(lb)
    lb.set_defaults(func=cmd_leaderboard)
