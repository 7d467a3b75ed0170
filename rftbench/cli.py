"""``rftbench`` command line: a thin layer over the library API (every command is a function
that tests call directly). Commands that report numbers take ``--json``."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Sequence

from rich.console import Console
from rich.table import Table

from .errors import RftbenchError


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


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
    from .scheduling import SCHEDULES

    items = []
    for e in SCHEDULES.entries():
        cls = e.obj
        items.append({"name": e.name, "source": e.source, "monotone": cls.monotone, "reference": cls.reference,
                      "params": [{"name": p.name, "default": p.default, "low": p.low, "high": p.high,
                                  "kind": p.kind, "log": p.log, "help": p.help} for p in cls.params]})
    if args.json:
        _print_json(items)
        return 0
    table = Table(title="epsilon schedules")
    for col in ("name", "parameters: default \\[low, high]", "source"):
        table.add_column(col)
    for it in items:
        ps = ", ".join(f"{p['name']}={p['default']:g} [{p['low']:g}, {p['high']:g}]" for p in it["params"])
        table.add_row(it["name"], ps or "-", it["source"])
    Console().print(table)
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
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        from .registry import load_plugin_file

        for path in args.plugin:
            load_plugin_file(path)
        return int(args.func(args) or 0)
    except RftbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
