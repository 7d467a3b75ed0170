"""``rftbench`` command line: a thin layer over the library API (every command is a function
that tests call directly). Commands that report numbers take ``--json``."""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from rich.console import Console
from rich.table import Table

from .errors import RftbenchError


_json_out = None  # where --json documents go; everything else printed meanwhile goes to stderr


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str), file=_json_out or sys.stdout)


def cmd_demo(args) -> int:
    from .demo import run_demo

    res = run_demo(epochs=args.epochs, aa_samples=args.aa_samples, quiet=args.json)
    if args.json:
        from .leaderboard import rows_to_json

        _print_json({"leaderboard": rows_to_json(res.rows), "figure": str(res.figure), "wall_time_s": res.wall_time_s})
    return 0


def cmd_train(args) -> int:
    from .config import load_config
    from .experiment import run_experiment

    cfg = load_config(args.config, args.set)
    res = run_experiment(cfg, evaluate=not args.no_eval, resume_run_id=args.resume,
                         run_dir=args.run_dir)
    out = {"run_id": res.run_id, "run_dir": str(res.run_dir), "checkpoint": str(res.train.checkpoint),
           "train_wall_time_s": res.train.wall_time_s}
    if res.record is not None:
        out.update({"acc_clean": res.record["clean_accuracy"], "acc_pgd": res.record["pgd"]["accuracy"][-1],
                    "acc_autoattack": (res.record["autoattack"] or {}).get("accuracy"),
                    "expected_robustness": res.record["expected_robustness"]["value"],
                    "certified": res.record["certified"]})
    if args.json:
        _print_json(out)
    else:
        Console().print(out)
    return 0


def cmd_evaluate(args) -> int:
    from rich.markup import escape

    from .config import load_config
    from .evaluate import EvaluationRecord, parse_shard
    from .experiment import evaluate_config

    if args.config[0] == "merge":
        return cmd_evaluate_merge(args, args.config[1:])
    if len(args.config) != 1:
        raise RftbenchError("`rftbench evaluate` takes one CONFIG (or: `rftbench evaluate merge REC.json ... --out M.json`).")
    overrides = list(args.set)
    if args.model:
        overrides.append(f"model.name={args.model}")
    cfg = load_config(args.config[0], overrides)
    shard = parse_shard(args.shard) if args.shard else None
    reference = EvaluationRecord.load(args.reference) if args.reference else None
    record, run_id = evaluate_config(cfg, log=not args.no_log, out=args.out, shard=shard, reference=reference)
    if args.json:
        _print_json({**record.data, "mlflow_run_id": run_id})
    else:
        r = record.data
        Console().print(f"clean {r['clean_accuracy']:.4f}  PGD@{r['threat_model']['target_eps']:.4g} "
                        f"{r['pgd']['accuracy'][-1]:.4f}  AutoAttack "
                        f"{(r['autoattack'] or {}).get('accuracy', float('nan')):.4f}  "
                        f"{escape(r['expected_robustness']['name'])} {r['expected_robustness']['value']:.4f}  "
                        f"n={r['n_samples']}{'  certified' if r['certified'] else ''}"
                        + (f"  (MLflow run {run_id})" if run_id else ""))
        for w in r["warnings"]:
            Console().print(f"[yellow]warning:[/yellow] {escape(w)}")
    return 0


def cmd_evaluate_merge(args, paths: list[str]) -> int:
    from .evaluate import EvaluationRecord, merge_records
    from .experiment import log_evaluation_record

    if not paths:
        raise RftbenchError("`rftbench evaluate merge` needs the shard records: merge REC1.json REC2.json ... --out M.json")
    record = merge_records([EvaluationRecord.load(p) for p in paths])
    run_id = None
    if not args.no_log:
        run_id = log_evaluation_record(record, experiment=args.experiment, run_name=f"eval-merged:{record['dataset']}")
    if args.out:
        record.save(args.out)
    r = record.data
    summary = {"n_samples": r["n_samples"], "clean_accuracy": r["clean_accuracy"], "pgd_accuracy": r["pgd"]["accuracy"],
               "acc_autoattack": (r["autoattack"] or {}).get("accuracy"),
               "expected_robustness": r["expected_robustness"]["value"], "er_name": r["expected_robustness"]["name"],
               "certified": r["certified"], "warnings": r["warnings"], "out": args.out, "mlflow_run_id": run_id}
    if args.json:
        _print_json(summary)
    else:
        Console().print(summary)
    return 0


def cmd_leaderboard(args) -> int:
    from .leaderboard import collect_results, render_leaderboard, rows_to_json

    rows = collect_results(args.experiment)
    if args.json:
        _print_json(rows_to_json(rows))
    else:
        render_leaderboard(rows, f"rftbench leaderboard: {args.experiment}")
    return 0


def cmd_schedules_list(args) -> int:
    from .scheduling import schedule_catalog

    items = schedule_catalog()
    if args.json:
        _print_json(items)
        return 0
    table = Table(title="epsilon schedules")
    for col in ("name", "parameters: default \\[low, high]", "source"):
        table.add_column(col)
    for it in items:
        ps = ", ".join(f"{p['name']}={p['default']:g} \\[{p['low']:g}, {p['high']:g}]"
                       + (" int" if p["kind"] == "int" else "") + (" log" if p["log"] else "")
                       for p in it["params"])
        source = f"built-in: schedules/{Path(it['source']).name}" if it["origin"] == "built-in" else it["source"]
        table.add_row(it["name"], ps or "-", source)
    Console().print(table)
    return 0


def _eps_value(text: str) -> float:
    """argparse type: a number or a fraction such as ``4/255``."""
    num, slash, den = text.partition("/")
    try:
        return float(num) / float(den) if slash else float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or a fraction like 4/255") from None


def cmd_schedules_plot(args) -> int:
    from .scheduling import plot_schedule_specs

    path, drawn = plot_schedule_specs(args.specs, args.out, target_eps=args.target_eps, total_steps=args.total_steps)
    if args.json:
        _print_json({"figure": str(path), "schedules": [{"name": s.name, "params": s.values} for s in drawn],
                     "target_eps": args.target_eps, "total_steps": args.total_steps})
    else:
        Console().print(f"wrote {path} ({', '.join(map(repr, drawn))})")
    return 0


def cmd_tune(args) -> int:
    from .config import load_config
    from .tune import tune

    cfg = load_config(args.config, args.set)
    res = tune(cfg, n_trials=args.trials, storage=args.storage, study_name=args.study, sampler=args.sampler,
               pruner=args.pruner)
    out = {"study": res.study_name, "storage": res.storage, "best_params": res.best_params,
           "best_val_expected_robustness": res.best_value, "n_trials": res.n_trials, "trials": res.trials}
    if args.json:
        _print_json(out)
    else:
        Console().print(out)
    return 0


def cmd_models_list(args) -> int:
    from .models import describe_models

    info = describe_models(args.timm)
    if args.json:
        _print_json(info)
        return 0
    console = Console()
    table = Table(title="model families (name -> model.name)")
    for col in ("family", "usage"):
        table.add_column(col)
    for f in info["families"]:
        table.add_row(f["name"], f["usage"])
    console.print(table)
    table = Table(title="built-in models")
    for col in ("name", "input (C, H, W)", "description"):
        table.add_column(col)
    for b in info["builtins"]:
        table.add_row(b["name"], str(tuple(b["input_size"])), b["description"])
    console.print(table)
    t = info["timm"]
    table = Table(title=f"timm {t['version']}: {t['n_architectures']} architectures, {t['n_pretrained']} pretrained tags")
    for col in ("pattern", "architectures", "pretrained tags"):
        table.add_column(col)
    for p in t["patterns"]:
        table.add_row(p["pattern"], str(p["n_architectures"]), str(p["n_pretrained"]))
    console.print(table)
    console.print("paper backbones: " + ", ".join(f"{k}={v}" for k, v in info["paper_backbones"].items()))
    if "matches" in t:
        console.print(f"timm pretrained names matching {args.timm!r} ({len(t['matches'])}):")
        console.print("\n".join("  timm:" + m for m in t["matches"]) or "  (none)")
    return 0


def cmd_datasets_list(args) -> int:
    from .data import describe_datasets

    items = describe_datasets()
    if args.json:
        _print_json(items)
        return 0
    table = Table(title="datasets (data.name); data.root or $RFTBENCH_DATA is the data root")
    for col in ("name", "dataset", "classes", "splits", "download"):
        table.add_column(col)
    for d in items:
        table.add_row(d["name"], d["title"], str(d.get("num_classes") or "-"), d.get("splits", ""),
                      "yes" if d.get("download") else "no")
    Console().print(table)
    return 0


def cmd_sweep(args) -> int:
    from .sweep import expand_grid, load_grid_spec, run_grid, select_runs, write_configs

    runs = select_runs(expand_grid(load_grid_spec(args.spec), args.spec, args.set), args.only, args.shard)
    if args.write_configs:
        paths = write_configs(runs, args.write_configs)
        out: Any = {"written": [str(p) for p in paths]}
    elif args.list:
        out = [{"name": r.name, **r.labels, "model": r.config.model.name, "dataset": r.config.data.name,
                "target_eps": r.config.attack.target_eps, "schedule": r.config.schedule.name} for r in runs]
    else:
        out = run_grid(runs)
    if args.json:
        _print_json(out)
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


def cmd_runs_mark_stale(args) -> int:
    from .recovery import mark_stale_runs, stale_runs_to_json

    stale = mark_stale_runs(args.experiment, older_than_s=args.older_than, dry_run=args.dry_run)
    if args.json:
        _print_json(stale_runs_to_json(stale))
        return 0
    verb = "would mark" if args.dry_run else "marked"
    for s in stale:
        Console().print(f"{verb} {s.run_id} ({s.run_name}) KILLED: {s.reason}")
    Console().print(f"{len(stale)} stale run(s); resume one with `rftbench train CONFIG --resume RUN_ID`.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rftbench", description="Robust fine-tuning benchmark harness.")
    p.add_argument("--plugin", action="append", default=[], metavar="FILE.py",
                   help="load a Python file that registers schedules/models/datasets (repeatable)")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="fine-tune the embedded default once per schedule and show a leaderboard")
    d.add_argument("--epochs", type=int, default=20)
    d.add_argument("--aa-samples", type=int, default=100, help="AutoAttack test samples per schedule")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_demo)

    t = sub.add_parser("train", help="robustly fine-tune and evaluate one config")
    t.add_argument("config")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    t.add_argument("--resume", metavar="MLFLOW_RUN_ID", help="resume that run from its last checkpoint")
    t.add_argument("--run-dir", help="where checkpoints go (default output_dir/<run id>)")
    t.add_argument("--no-eval", action="store_true")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="evaluate a model (any registry name) as the config's eval section says; "
                       "`evaluate merge REC.json ... --out M.json` combines shard records")
    e.add_argument("config", nargs="+", metavar="CONFIG | merge REC.json ...")
    e.add_argument("--shard", metavar="i/N", help="evaluate slice i (0-based) of N of the evaluation subset")
    e.add_argument("--reference", metavar="REC.json", help="a stored record whose clean results must reproduce")
    e.add_argument("--experiment", default="rftbench", help="MLflow experiment of a merged record (merge only)")
    e.add_argument("--model", help="model name, e.g. file:runs/x/model.safetensors or timm:resnet18")
    e.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    e.add_argument("--out", help="write the evaluation record JSON here")
    e.add_argument("--no-log", action="store_true", help="do not log to MLflow")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_evaluate)

    lb = sub.add_parser("leaderboard", help="rank finished runs of an MLflow experiment")
    lb.add_argument("--experiment", default="rftbench-demo")
    lb.add_argument("--json", action="store_true")
    lb.set_defaults(func=cmd_leaderboard)

    s = sub.add_parser("schedules", help="epsilon-schedule plugins")
    ssub = s.add_subparsers(dest="schedules_command", required=True)
    sl = ssub.add_parser("list")
    sl.add_argument("--json", action="store_true")
    sl.set_defaults(func=cmd_schedules_list)
    sp = ssub.add_parser("plot", help="eps against training progress, several schedules on one figure")
    sp.add_argument("specs", nargs="+", metavar="NAME[:k=v,...]")
    sp.add_argument("--out", required=True, metavar="FILE.png")
    sp.add_argument("--target-eps", type=_eps_value, default=4 / 255, help="pixel units, e.g. 4/255 (default)")
    sp.add_argument("--total-steps", type=int, default=1000, help="steps (or epochs) the schedule is sampled at")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_schedules_plot)

    tu = sub.add_parser("tune", help="Optuna search over a schedule's parameters (objective: val ER)")
    tu.add_argument("config")
    tu.add_argument("--trials", type=int, default=10)
    tu.add_argument("--storage", help="Optuna RDB URL (default sqlite:///optuna.db)")
    tu.add_argument("--study", help="study name (workers sharing a name and storage join one study)")
    tu.add_argument("--sampler", default="tpe")
    tu.add_argument("--pruner", default="median")
    tu.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    tu.add_argument("--json", action="store_true")
    tu.set_defaults(func=cmd_tune)

    mo = sub.add_parser("models", help="the model registry")
    mosub = mo.add_subparsers(dest="models_command", required=True)
    mol = mosub.add_parser("list", help="model families, built-ins and timm name patterns")
    mol.add_argument("--timm", metavar="PATTERN", help="also list timm pretrained names matching PATTERN, e.g. 'vit_base*'")
    mol.add_argument("--json", action="store_true")
    mol.set_defaults(func=cmd_models_list)

    ds = sub.add_parser("datasets", help="the dataset registry")
    dssub = ds.add_subparsers(dest="datasets_command", required=True)
    dsl = dssub.add_parser("list", help="datasets, their splits, layouts and download sources")
    dsl.add_argument("--json", action="store_true")
    dsl.set_defaults(func=cmd_datasets_list)

    sw = sub.add_parser("sweep", help="expand a grid spec (benchmarks/grids/*.yaml) and run, list or write its configs")
    sw.add_argument("spec")
    sw.add_argument("--list", action="store_true", help="validate and list the runs; train nothing")
    sw.add_argument("--write-configs", metavar="DIR", help="write one config YAML per run into DIR; train nothing")
    sw.add_argument("--only", action="append", default=[], metavar="GLOB", help="only runs whose name matches (repeatable)")
    sw.add_argument("--shard", metavar="I/N", help="only every N-th run starting at I (0-based), for N workers")
    sw.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a key in every run")
    sw.add_argument("--json", action="store_true")
    sw.set_defaults(func=cmd_sweep)

    r = sub.add_parser("runs", help="MLflow runs of interrupted trainings")
    rsub = r.add_subparsers(dest="runs_command", required=True)
    ms = rsub.add_parser("mark-stale", help="end RUNNING runs whose process is gone (e.g. SIGKILLed) as KILLED")
    ms.add_argument("--experiment", required=True)
    ms.add_argument("--older-than", type=float, default=3600.0, metavar="SECONDS",
                    help="runs from other hosts count as stale after this long without a heartbeat")
    ms.add_argument("--dry-run", action="store_true", help="only list them")
    ms.add_argument("--json", action="store_true")
    ms.set_defaults(func=cmd_runs_mark_stale)
    return p


def _take_plugin_options(argv: list[str]) -> tuple[list[str], list[str]]:
    """``--plugin FILE`` / ``--plugin=FILE`` may stand anywhere on the command line (before or
    after the subcommand): take them out before argparse sees the subcommands."""
    plugins, rest, i = [], [], 0
    while i < len(argv):
        a = argv[i]
        if a == "--plugin" and i + 1 < len(argv):
            plugins.append(argv[i + 1])
            i += 2
            continue
        if a.startswith("--plugin="):
            plugins.append(a.split("=", 1)[1])
        else:
            rest.append(a)
        i += 1
    return plugins, rest


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    plugins, rest = _take_plugin_options(list(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(rest)
    args.plugin = plugins
    try:
        from .registry import load_plugin_file

        for path in args.plugin:
            load_plugin_file(path)
        if not getattr(args, "json", False):
            return int(args.func(args) or 0)
        # libraries (MLflow run links, progress) print to stdout: keep stdout one JSON document
        global _json_out
        _json_out = sys.stdout
        try:
            with contextlib.redirect_stdout(sys.stderr):
                return int(args.func(args) or 0)
        finally:
            _json_out = None
    except RftbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # e.g. training stopped by SIGTERM after saving its state
        print(f"interrupted: {exc}" if str(exc) else "interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
