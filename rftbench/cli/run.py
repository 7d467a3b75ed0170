"""``rftbench demo | train | evaluate``: run the main jobs."""
from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console
from rich.markup import escape

from ..errors import RftbenchError
from .common import add_json_flag, add_set_flag, console, print_json


def record_summary(record: Any) -> dict[str, Any]:
    """The headline numbers of an evaluation record (one definition for every command)."""
    r = record.data
    aa = r.get("autoattack") or {}
    return {"n_samples": r["n_samples"], "acc_clean": r["clean_accuracy"],
            "sweep_attack": r["sweep"].get("attack"), "acc_sweep_at_target": r["sweep"]["accuracy"][-1],
            "acc_autoattack": aa.get("accuracy"), "autoattack_n": aa.get("n_samples"),
            "expected_robustness": r["expected_robustness"]["value"], "er_name": r["expected_robustness"]["name"],
            "certified": r["certified"], "flagged": bool(r.get("flagged", False)), "warnings": list(r["warnings"])}


def print_record_summary(record: Any, run_id: str | None = None, prefix: str = "") -> None:
    s, out = record_summary(record), console()
    aa = "n/a" if s["acc_autoattack"] is None else f"{s['acc_autoattack']:.4f} (n={s['autoattack_n']})"
    out.print(f"{prefix}clean {s['acc_clean']:.4f}  {s['sweep_attack']}@target {s['acc_sweep_at_target']:.4f}  "
              f"AutoAttack {aa}  {escape(s['er_name'])} {s['expected_robustness']:.4f}  n={s['n_samples']}"
              f"{'  certified' if s['certified'] else ''}{'  FLAGGED' if s['flagged'] else ''}"
              + (f"  (MLflow run {run_id})" if run_id else ""))
    for w in s["warnings"]:
        out.print(f"[yellow]warning:[/yellow] {escape(w)}")


def cmd_demo(args) -> int:
    from ..experiments.demo import run_demo

    res = run_demo(epochs=args.epochs, aa_samples=args.aa_samples, quiet=args.json)
    if args.json:
        import json

        from ..results.export import to_format

        print_json({"leaderboard": json.loads(to_format(res.leaderboard, "json")), "figure": str(res.figure),
                    "report": str(res.report), "wall_time_s": res.wall_time_s})
    return 0


def _torchrun(args) -> int:
    """``rftbench train CONFIG --nproc N``: the same command under torchrun's launcher with N
    processes (:mod:`rftbench.launch.torchrun`: a run whose rank 0 died ends KILLED)."""
    import sys

    from ..launch.torchrun import run_nproc

    argv, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            argv.append(a)
    return run_nproc(args.nproc, argv)


def cmd_train(args) -> int:
    from ..config import load_config
    from ..errors import RunFinishedError
    from ..experiments.experiment import run_experiment

    if args.nproc and args.nproc > 1:
        return _torchrun(args)
    if args.config is None:
        if not args.resume:
            raise RftbenchError("`rftbench train` needs a CONFIG (or `--resume RUN_ID` to continue a run with "
                                "its own config).")
        from ..tracking.recovery import config_of_run

        cfg = config_of_run(args.resume, args.set)
    else:
        cfg = load_config(args.config, args.set)
    try:
        res = run_experiment(cfg, evaluate=not args.no_eval, resume_run_id=args.resume, run_dir=args.run_dir)
    except RunFinishedError as exc:
        Console(stderr=True).print(escape(str(exc)))
        return 0
    if not res.run_id:  # a torchrun rank > 0: rank 0 reports
        return 0
    out = {"run_id": res.run_id, "run_dir": str(res.run_dir), "checkpoint": str(res.train.checkpoint),
           "train_wall_time_s": res.train.wall_time_s}
    if res.record is not None:
        out.update(record_summary(res.record))
    if args.json:
        print_json(out)
    else:
        print_train_summary(res, cfg, args.config)
    return 0


def _run_status(run_id: str) -> str:
    """The run's status in the tracking store, as MLflow shows it."""
    if run_id.startswith("offline-"):  # the spool's local id: the store was down when the run started
        return "not in MLflow yet: send it with `rftbench runs sync RUN_DIR`"
    from ..tracking.store import client_for

    try:
        return client_for().get_run(run_id).info.status
    except Exception as exc:  # noqa: BLE001 - a summary line must not fail a finished training
        return f"unknown (the tracking store did not answer: {type(exc).__name__})"


def print_train_summary(res: Any, cfg: Any, config_path: str | None) -> None:
    """What ``rftbench train`` did, one ``key: value`` line each: the run and its status, where
    its directory and checkpoint are, the last epoch's metrics, the evaluation's headline numbers,
    and the commands that evaluate it again and rank it."""
    import shlex

    out, t = console(), res.train
    last = {k: v for k, v in (t.history[-1] if t.history else {}).items() if k != "epoch" and isinstance(v, float)}
    lines = [("run", f"{res.run_id} ({cfg.experiment}/{cfg.name}), status {_run_status(res.run_id)}"),
             ("run dir", str(res.run_dir)), ("checkpoint", str(t.checkpoint)),
             ("training", f"{t.wall_time_s:.1f} s, {t.total_steps} steps, {t.attack_steps} attacked")]
    if last:
        lines.append(("last epoch", ", ".join(f"{k} {v:.4g}" for k, v in last.items())))
    for key, value in lines:
        out.print(f"{key + ':':<13}{escape(value)}", highlight=False)
    if res.record is not None:
        print_record_summary(res.record, prefix=f"{'evaluation:':<13}")
    cfg_arg = shlex.quote(config_path) if config_path else "CONFIG"
    out.print(f"{'evaluate:':<13}rftbench evaluate {cfg_arg} --model {shlex.quote(f'file:{t.checkpoint}')}"
              "", highlight=False, markup=False)
    out.print(f"{'leaderboard:':<13}rftbench leaderboard --experiment {shlex.quote(cfg.experiment)}",
              highlight=False, markup=False)


def cmd_evaluate(args) -> int:
    from ..config import load_config, parse_shard
    from ..experiments.experiment import evaluate_config
    from ..evaluation.records import EvaluationRecord

    if args.config[0] == "merge":
        return cmd_evaluate_merge(args, args.config[1:])
    if len(args.config) != 1:
        raise RftbenchError("`rftbench evaluate` takes one CONFIG (or: `rftbench evaluate merge REC.json ... --out M.json`).")
    overrides = list(args.set) + ([f"model.name={args.model}"] if args.model else [])
    cfg = load_config(args.config[0], overrides)
    shard = parse_shard(args.shard) if args.shard else None
    reference = EvaluationRecord.load(args.reference) if args.reference else None
    record, run_id = evaluate_config(cfg, log=not args.no_log, out=args.out, shard=shard, reference=reference,
                                     resume=args.resume, allow_fresh_head=args.allow_fresh_head)
    if args.json:
        print_json({**record.data, "mlflow_run_id": run_id})
    else:
        print_record_summary(record, run_id)
    return 0


def cmd_evaluate_merge(args, paths: list[str]) -> int:
    from ..experiments.experiment import log_evaluation_record
    from ..evaluation.records import EvaluationRecord, merge_records

    if not paths:
        raise RftbenchError("`rftbench evaluate merge` needs the shard records: merge REC1.json REC2.json ... --out M.json")
    record = merge_records([EvaluationRecord.load(p) for p in paths])
    experiment = _experiment_of_records(paths)
    if experiment is not None:
        record.data["experiment"] = experiment  # as an unsharded record says
    run_id = None
    if not args.no_log:
        experiment = args.experiment or experiment or "rftbench"
        run_id = log_evaluation_record(record, experiment=experiment, run_name=f"eval-merged:{record['dataset']}")
    if args.out:
        record.save(args.out)
    if args.json:
        print_json({**record_summary(record), "out": args.out, "mlflow_run_id": run_id})
    else:
        print_record_summary(record, run_id)
    return 0


def _experiment_of_records(paths: list[str]) -> str | None:
    """The experiment of the config the shard records were evaluated with, if they say."""
    import json

    names = set()
    for p in paths:
        try:
            data = json.loads(open(p, encoding="utf-8").read())
        except (OSError, ValueError):
            continue
        names.add(data.get("experiment") if isinstance(data, dict) else None)
    names.discard(None)
    if len(names) > 1:
        raise RftbenchError(f"the shard records come from different experiments {sorted(names)}; pick one with "
                            f"--experiment.")
    return names.pop() if names else None


def register(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("demo", help="fine-tune the embedded default once per schedule and show a leaderboard")
    d.add_argument("--epochs", type=int, default=20)
    d.add_argument("--aa-samples", type=int, default=100, help="AutoAttack test samples per schedule")
    add_json_flag(d)
    d.set_defaults(func=cmd_demo)

    t = sub.add_parser("train", help="robustly fine-tune and evaluate one config")
    t.add_argument("config", nargs="?", help="the config (optional with --resume: the run's own config is used)")
    add_set_flag(t)
    t.add_argument("--resume", metavar="MLFLOW_RUN_ID", help="resume that run from its last checkpoint")
    t.add_argument("--run-dir", help="where checkpoints go (default output_dir/<run id>)")
    t.add_argument("--no-eval", action="store_true")
    t.add_argument("--nproc", type=int, metavar="N", help="train on N processes with DDP (torchrun's launcher "
                   "in this process; one per GPU, or gloo on CPU)")
    add_json_flag(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="evaluate a model (any registry name) as the config's eval section says; "
                       "`evaluate merge REC.json ... --out M.json` combines shard records")
    e.add_argument("config", nargs="+", metavar="CONFIG | merge REC.json ...")
    e.add_argument("--shard", metavar="i/N", help="evaluate slice i (0-based) of N of the evaluation subset")
    e.add_argument("--reference", metavar="REC.json", help="a stored record whose clean results must reproduce")
    e.add_argument("--experiment", default=None, help="MLflow experiment of a merged record (merge only; default: "
                   "the experiment of the shard records' config)")
    e.add_argument("--allow-fresh-head", action="store_true", help="evaluate even though the model's classifier "
                   "head was never trained for the dataset (a freshly initialised head: chance-level numbers)")
    e.add_argument("--model", help="model name, e.g. file:runs/x/model.safetensors or timm:resnet18")
    add_set_flag(e)
    e.add_argument("--out", help="write the evaluation record JSON here")
    e.add_argument("--no-log", action="store_true", help="do not log to MLflow")
    e.add_argument("--resume", action="store_true", help="continue an interrupted evaluation from its saved blocks "
                   "(same config, --out and --shard)")
    add_json_flag(e)
    e.set_defaults(func=cmd_evaluate)
