"""``rftbench sweep``: experiment grids."""
from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console
from rich.table import Table

from .common import add_json_flag, add_set_flag, print_json


def cmd_sweep(args) -> int:
    from ..sweep import expand_grid, load_grid_spec, run_grid, select_runs, write_configs

    runs = select_runs(expand_grid(load_grid_spec(args.spec), args.spec, args.set), args.only, args.shard)
    if args.write_configs:
        paths = write_configs(runs, args.write_configs)
        out: Any = {"written": [str(p) for p in paths]}
    elif args.list:
        out = [{"name": r.name, **r.labels, "model": r.config.model.name, "dataset": r.config.data.name,
                "target_eps": r.config.threat.eps, "schedule": r.config.schedule.name} for r in runs]
    else:
        out = run_grid(runs)
    if args.json:
        print_json(out)
    elif isinstance(out, list) and out and args.list:
        table = Table(title=f"{len(out)} runs of {args.spec}")
        for col in out[0]:
            table.add_column(col)
        for row in out:
            table.add_row(*[f"{v:.5g}" if isinstance(v, float) else str(v) for v in row.values()])
        Console().print(table)
    else:
        Console().print(out)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    sw = sub.add_parser("sweep", help="expand a grid spec (benchmarks/grids/*.yaml) and run, list or write its configs")
    sw.add_argument("spec")
    sw.add_argument("--list", action="store_true", help="validate and list the runs; train nothing")
    sw.add_argument("--write-configs", metavar="DIR", help="write one config YAML per run into DIR; train nothing")
    sw.add_argument("--only", action="append", default=[], metavar="GLOB", help="only runs whose name matches (repeatable)")
    sw.add_argument("--shard", metavar="I/N", help="only every N-th run starting at I (0-based), for N workers")
    add_set_flag(sw, "override a key in every run")
    add_json_flag(sw)
    sw.set_defaults(func=cmd_sweep)
