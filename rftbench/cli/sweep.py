"""``rftbench sweep``: experiment grids, run idempotently here or through a launcher."""
from __future__ import annotations

import argparse
from typing import Any

from rich.markup import escape
from rich.table import Table

from .common import add_json_flag, add_set_flag, console, print_json

# CLI flag -> LauncherConfig field (flags override the spec's `launcher:` section)
LAUNCHER_FLAGS = {"launcher": "name", "workers": "workers", "threads": "threads", "slurm_partition": "partition",
                  "slurm_gpus": "gpus", "slurm_cpus": "cpus", "slurm_time": "time_min",
                  "slurm_array_parallelism": "array_parallelism", "slurm_mem_gb": "mem_gb",
                  "slurm_folder": "folder", "submitit_cluster": "cluster", "ray_address": "ray_address",
                  "ray_gpus": "gpus", "ray_cpus": "cpus", "slurm_requeue": "requeue",
                  "slurm_signal_delay": "signal_delay_s", "slurm_max_requeues": "max_requeues"}


def _launcher(args, spec: dict[str, Any]):
    from ..errors import LauncherError
    from ..experiments.sweep import launch_options, launcher_config

    lc = launcher_config(spec, args.spec)
    given = {f: getattr(args, a) for a, f in LAUNCHER_FLAGS.items() if getattr(args, a) is not None}
    lc = lc.model_copy(update=given)
    slurm = [a for a in LAUNCHER_FLAGS if a.startswith(("slurm_", "submitit_")) and getattr(args, a) is not None]
    if slurm and lc.name != "submitit":
        raise LauncherError(f"--{slurm[0].replace('_', '-')} is a SLURM option: add --launcher submitit "
                            f"(pip install 'rftbench[submitit]').")
    ray = [a for a in LAUNCHER_FLAGS if a.startswith("ray_") and getattr(args, a) is not None]
    if ray and lc.name != "ray":
        raise LauncherError(f"--{ray[0].replace('_', '-')} is a Ray option: add --launcher ray.")
    return launch_options(lc) if lc.name else None


def _table(title: str, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    table = Table(title=title)
    for col in rows[0]:
        table.add_column(col)
    for row in rows:
        table.add_row(*[f"{v:.5g}" if isinstance(v, float) else escape(str(v)) for v in row.values()])
    console().print(table)


def _runnable(runs, inputs: list[dict[str, Any]]) -> list[bool]:
    """Per run: are both its dataset and its weights present? (matched by the names
    :func:`rftbench.experiments.inputs_check.check_inputs` gives its rows: ``data.name``, and ``model.name``
    followed by ``model.weights`` when set)."""
    ok = {(i["kind"], i["name"]): i["ok"] for i in inputs}
    return [ok.get(("dataset", r.config.data.name), False)
            and ok.get(("weights", f"{r.config.model.name} {r.config.model.weights or ''}".strip()), False)
            for r in runs]


def _list(args, runs) -> int:
    """The runs and their inputs' check; exit 1 when not one listed run could start here (every
    one lacks its dataset or its weights), 0 when at least one can."""
    from ..experiments.inputs_check import check_inputs

    inputs = check_inputs([r.config for r in runs])
    runnable = _runnable(runs, inputs)
    rows = [{"name": r.name, **r.labels, "model": r.config.model.name, "dataset": r.config.data.name,
             "target_eps": r.config.threat.eps, "schedule": r.config.schedule.name, "inputs_present": ok}
            for r, ok in zip(runs, runnable)]
    if args.json:
        print_json({"runs": rows, "inputs": inputs, "n_runnable": sum(runnable)} if args.check_inputs else rows)
    else:
        if rows:
            _table(f"{len(rows)} runs of {args.spec} ({sum(runnable)} with their inputs present)", rows)
        for i in inputs:
            mark = "[green]present[/green]" if i["ok"] else "[red]missing[/red]"
            console().print(f"{i['kind']} {escape(i['name'])}: {mark} {escape(i['problem'])}")
    if any(runnable):
        return 0
    why = (f"no run of {args.spec} matches the selection (--only / --shard)" if not runs else
           f"none of the {len(runs)} runs of {args.spec} can start on this machine: each lacks its dataset or its "
           f"pretrained weights. Put the missing files where the lines above say (or pass `--set data.download=true` "
           f"for a dataset that downloads), then list again")
    console(stderr=True).print(f"[red]error:[/red] {escape(why)}.")
    return 1


def cmd_sweep(args) -> int:
    from ..experiments.gridrun import PointOptions
    from ..experiments.sweep import (expand_grid, load_grid_spec, plan_grid, run_sweep, select_runs, sweep_summary,
                                     write_configs)

    spec = load_grid_spec(args.spec)
    runs = select_runs(expand_grid(spec, args.spec, args.set), args.only, args.shard)
    opts = PointOptions(retry_failed=args.retry_failed)
    if args.write_configs:
        out: Any = {"written": [str(p) for p in write_configs(runs, args.write_configs)]}
    elif args.list:
        return _list(args, runs)
    elif args.dry_run:
        out = plan_grid(runs, opts)
    else:
        launcher = _launcher(args, spec)
        results = run_sweep(runs, launcher, opts)
        summary = sweep_summary(results)
        if args.json:
            print_json({"runs": [r.__dict__ for r in results], "summary": summary})
        else:
            _table(f"sweep {args.spec}", [{"name": r.name, "status": r.status, "run_id": r.run_id or "",
                                           "message": r.message[:120]} for r in results])
            console().print(", ".join(f"{v} {k}" for k, v in summary.items() if k != "failures"))
            for f in summary["failures"]:
                console().print(f"[red]failed[/red] {escape(f['name'])}: {escape(f['message'])}")
        return 1 if summary["failed"] else 0
    if args.json:
        print_json(out)
    elif isinstance(out, list) and out:
        _table(f"{len(out)} runs of {args.spec}", out)
    elif isinstance(out, list):
        console().print(f"no run of {escape(args.spec)} matches the selection.")
    else:
        console().print(f"wrote {len(out['written'])} configs into {escape(args.write_configs)}:")
        console().print("\n".join(escape(p) for p in out["written"]))
    return 0


def _launcher_flags(sw: argparse.ArgumentParser) -> None:
    g = sw.add_argument_group("launchers (override the spec's `launcher:` section)")
    g.add_argument("--launcher", choices=["local", "submitit", "ray"],
                   help="where runs go (default: this process, one after another)")
    g.add_argument("--workers", type=int, help="local: runs at once (default 2)")
    g.add_argument("--threads", type=int, help="torch threads per run (default 1; 0: torch's default)")
    g.add_argument("--slurm-partition")
    g.add_argument("--slurm-gpus", type=float, help="GPUs per run")
    g.add_argument("--slurm-cpus", type=int, help="CPUs per run")
    g.add_argument("--slurm-time", type=int, metavar="MINUTES", help="time limit per run")
    g.add_argument("--slurm-array-parallelism", type=int, help="array tasks running at once")
    g.add_argument("--slurm-mem-gb", type=float)
    g.add_argument("--slurm-requeue", action=argparse.BooleanOptionalAction, default=None,
                   help="requeue a preempted or timed-out run so it resumes (default on; off: it ends KILLED and "
                        "the next sweep resumes it)")
    g.add_argument("--slurm-signal-delay", type=int, metavar="SECONDS",
                   help="SIGUSR2 this long before the time limit: the run saves its state (default min(90, limit/4))")
    g.add_argument("--slurm-max-requeues", type=int, help="time-outs a run may be requeued after (default 3)")
    g.add_argument("--slurm-folder", help="submitit's logs and pickles (default rftbench-launch)")
    g.add_argument("--submitit-cluster", choices=["slurm", "local"], help="default: SLURM where sbatch exists")
    g.add_argument("--ray-address", help="a running Ray cluster (host:port or ray://host:port)")
    g.add_argument("--ray-gpus", type=float, help="GPUs per run")
    g.add_argument("--ray-cpus", type=int, help="CPUs per run")


def register(sub: argparse._SubParsersAction) -> None:
    sw = sub.add_parser("sweep", help="run a grid spec (benchmarks/grids/*.yaml) idempotently, or list / write its "
                                      "configs; finished runs are skipped, killed ones resumed")
    sw.add_argument("spec")
    sw.add_argument("--list", action="store_true", help="validate and list the runs, and check that their datasets "
                    "and pretrained weights are present locally; train nothing")
    sw.add_argument("--check-inputs", action="store_true", help="with --list --json: also the inputs' check")
    sw.add_argument("--dry-run", action="store_true", help="say what each run would do (train, resume, skip, "
                    "fail); train nothing")
    sw.add_argument("--retry-failed", action="store_true", help="train runs that FAILED before again")
    sw.add_argument("--write-configs", metavar="DIR", help="write one config YAML per run into DIR; train nothing")
    sw.add_argument("--only", action="append", default=[], metavar="GLOB", help="only runs whose name matches (repeatable)")
    sw.add_argument("--shard", metavar="I/N", help="only every N-th run starting at I (0-based), for N workers")
    _launcher_flags(sw)
    add_set_flag(sw, "override a key in every run")
    add_json_flag(sw)
    sw.set_defaults(func=cmd_sweep)
