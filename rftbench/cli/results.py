"""``rftbench leaderboard``, ``rftbench report`` and ``rftbench export``: results read back from MLflow."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import add_json_flag, print_json


def _build(args, experiments):
    from ..results.leaderboard import build_leaderboard

    return build_leaderboard(experiments, group_by=args.group_by.split(","), where=args.where,
                             include_val=args.include_val, metric=args.metric, baseline=args.baseline,
                             seed_ci=args.seed_ci, sort=args.sort, n_resamples=args.n_resamples,
                             threat=getattr(args, "threat", None))


def cmd_leaderboard(args) -> int:
    import json

    from ..results.export import render, to_format

    lb = _build(args, args.experiment or ["rftbench-demo"])
    fmt = "json" if args.json else args.format
    if args.json and not args.out:
        print_json(json.loads(to_format(lb, "json")))
    elif fmt == "table":
        render(lb, title=f"rftbench leaderboard: {', '.join(lb.experiments)}")
    else:
        text = to_format(lb, fmt, args.columns.split(",") if args.columns else None)
        if args.out:
            Path(args.out).write_text(text)
        else:
            sys.stdout.write(text + ("" if text.endswith("\n") else "\n"))
    return 0


def cmd_report(args) -> int:
    from ..results.report import write_report

    lb = _build(args, [args.experiment])
    out = write_report(lb, args.out)
    print(f"report written to {out}")
    return 0


def cmd_model_card(args) -> int:
    from ..results.modelcard import export_model_card

    out = export_model_card(args.run_id, args.out)
    print(f"model card and weights written to {out}")
    return 0


def _add_leaderboard_options(p: argparse.ArgumentParser) -> None:
    from ..results.leaderboard import DEFAULT_GROUP_BY

    p.add_argument("--group-by", default=",".join(DEFAULT_GROUP_BY), help="comma-separated grouping keys")
    p.add_argument("--where", action="append", default=[], metavar="KEY=GLOB", help="keep matching runs (repeatable)")
    p.add_argument("--metric", default="er", help="ranking metric: clean, pgd, aa or er; METRIC@THREAT (aa@L2:1, "
                   "aa@L2) ranks by a threat of eval.threats")
    p.add_argument("--threat", default=None, help="show this threat of eval.threats (L2:1, L1, union) in the pgd, "
                   "aa and er columns")
    p.add_argument("--sort", default=None, help="rank by this column instead (COL or COL:asc)")
    p.add_argument("--include-val", action="store_true", help="also rank validation-split runs (search trials)")
    p.add_argument("--baseline", default=None, metavar="SCHEDULE", help="paired differences to this schedule")
    p.add_argument("--seed-ci", action="store_true", help="require >= 2 seeds per row (for the seed CI)")
    p.add_argument("--n-resamples", type=int, default=2000, help="bootstrap resamples")


def register(sub: argparse._SubParsersAction) -> None:
    lb = sub.add_parser("leaderboard", help="schedules ranked per setting, from finished MLflow runs")
    lb.add_argument("--experiment", action="append", default=[], help="MLflow experiment (repeatable; "
                    "default rftbench-demo)")
    lb.add_argument("--format", default="table", choices=["table", "markdown", "csv", "json", "latex", "html"])
    lb.add_argument("--out", default=None, help="write the export to this file")
    lb.add_argument("--columns", default=None, help="comma-separated columns of an export (default: all)")
    _add_leaderboard_options(lb)
    add_json_flag(lb)
    lb.set_defaults(func=cmd_leaderboard)

    rp = sub.add_parser("report", help="one self-contained HTML report of an experiment")
    rp.add_argument("experiment")
    rp.add_argument("--out", default="report.html")
    _add_leaderboard_options(rp)
    rp.set_defaults(func=cmd_report)

    ex = sub.add_parser("export", help="export results (model-card)")
    exsub = ex.add_subparsers(dest="what", required=True)
    mc = exsub.add_parser("model-card", help="weights (safetensors) + RobustBench model-info JSON of a run")
    mc.add_argument("run_id")
    mc.add_argument("--out", required=True)
    mc.set_defaults(func=cmd_model_card)
