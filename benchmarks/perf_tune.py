"""Compute saved by pruning a schedule-shape search, measured side by side (lower is better).

On the embedded default (small CNN pretrained on digits 0-4, fine-tuned on 5-9; fixed seeds),
a TPE study over ``epsilon_scheduling``'s ``start``/``end`` pruned by Hyperband with the
library's settings (``--pruner hyperband``, Optuna's: epochs are the budget, min_resource 1
epoch, max_resource = the epochs, reduction factor 3) against the same study unpruned, the same number
of trials, for each of ``--seeds`` sampler seeds (the config seed, from which every trial's
sampler seed is derived). Both studies run as ``rftbench tune`` does by default: trials share
the epochs their schedules keep at eps = 0 (the first trial to reach one trains it, later ones
restore it; ``rftbench/training/prefix.py``), each study its own. Reported:

- the ratio of epochs trained (computed: restored epochs not counted), pruned / unpruned, summed
  over seeds and per seed; target <= 0.5;
- the same ratio counting every epoch each trial went through (what the studies would train
  with ``--no-share-prefix``: restoring is bit-identical here, so the studies are the same);
- the gap between the best validation ER found (unpruned minus pruned, averaged over seeds, in
  points; target <= 1);
- both again for ``--pruner hyperband_topk`` (ties at a rung promoted only into its top 1/3:
  ``rftbench/tuning/pruners.py``; Optuna promotes every tied trial), a third study per seed.

All are counts and values of deterministic studies (one torch thread, fixed seeds), so they do
not depend on machine load; wall times are printed beside. Per pruned study it also prints where
its trials stopped and per seed how many unpruned trials had the same validation ER after epoch 1
(schedules still at eps = 0 then train the same model: no pruner can tell them apart at the
first rung). The last line is one JSON object.

    python benchmarks/perf_tune.py [--trials 30] [--epochs 20] [--seeds 3] [--first-seed 0] [--jobs 3]

20 epochs is the embedded default's run length (the demo's): Hyperband then has 3 brackets
(rungs at 1, 3 and 9 epochs). At 8 epochs it has 2, and even ideal ranking saves at most 60%.
About 20 minutes with 3 jobs on 2 idle cores (270 trials); ``--epochs 8`` about 12.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def config(seed: int, epochs: int):
    from rftbench.config import parse_config

    return parse_config({
        "name": "perf-tune", "experiment": "perf-tune", "seed": seed,
        "model": {"name": "small_cnn", "pretrained": True},
        "data": {"name": "digits", "batch_size": 64, "val_fraction": 0.25},
        "threat": {"eps": 0.2}, "attack": {"steps": 2},
        "schedule": {"name": "epsilon_scheduling", "params": {}},
        "train": {"epochs": epochs, "lr": 0.02, "val_samples": 128, "val_every": 1, "progress": "off",
                  "log_mlflow_model": False},
        "eval": {"num_points": 3, "sweep_steps": 3, "autoattack": {"enabled": False}},
    }, "perf_tune")


def run_study(workdir: Path, seed: int, epochs: int, trials: int, pruner: str) -> dict:
    import optuna

    from rftbench.tuning import TuneOptions, tune

    name = f"{pruner}-seed{seed}"
    storage = f"sqlite:///{workdir / 'optuna.db'}"
    t0 = time.perf_counter()
    res = tune(config(seed, epochs), TuneOptions(trials=trials, study=name, storage=storage, sampler="tpe",
                                                 pruner=pruner, visualize=False))
    study = optuna.load_study(study_name=name, storage=storage)
    trained = [t.user_attrs.get("epochs_trained", 0) for t in study.trials]
    reused = sum(t.user_attrs.get("epochs_reused", 0) for t in study.trials)
    first = Counter(t.intermediate_values.get(1) for t in study.trials)
    return {"study": name, "epochs": sum(trained) - reused, "epochs_gone_through": sum(trained),
            "epochs_reused": reused, "best_val_er": res.best_value, "states": res.states,
            "stopped_after": {str(k): v for k, v in sorted(Counter(trained).items())},
            "same_epoch1_er": first.most_common(1)[0][1], "wall_s": time.perf_counter() - t0}


PRUNERS = ("none", "hyperband", "hyperband_topk")  # the last: ties at a rung promoted only into its top 1/3


def run_seed(seed: int, epochs: int, trials: int, threads: int) -> list[dict]:
    """Both studies of one sampler seed, in a fresh working directory and MLflow store."""
    import optuna
    import torch

    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory(prefix="perf-tune-") as tmp:
        work = Path(tmp)
        os.chdir(work)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
        for pruner in PRUNERS:
            rows.append({"seed": seed, "pruner": pruner, **run_study(work, seed, epochs, trials, pruner)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def summary(rows: list[dict], args: argparse.Namespace) -> dict:
    by = {p: sorted((r for r in rows if r["pruner"] == p), key=lambda r: r["seed"]) for p in PRUNERS}
    ratio = sum(r["epochs"] for r in by["hyperband"]) / sum(r["epochs"] for r in by["none"])
    per_seed = [round(b["epochs"] / a["epochs"], 4) for a, b in zip(by["none"], by["hyperband"])]
    unshared = (sum(r["epochs_gone_through"] for r in by["hyperband"])
                / sum(r["epochs_gone_through"] for r in by["none"]))
    gap = 100 * sum(a["best_val_er"] - b["best_val_er"] for a, b in zip(by["none"], by["hyperband"])) / args.seeds
    topk = sum(r["epochs"] for r in by["hyperband_topk"]) / sum(r["epochs"] for r in by["none"])
    topk_gap = 100 * sum(a["best_val_er"] - b["best_val_er"]
                         for a, b in zip(by["none"], by["hyperband_topk"])) / args.seeds
    return {"pruned_study_epochs_vs_unpruned": {"ratio": round(ratio, 4), "target": 0.5, "per_seed": per_seed,
                                                "epochs": {p: [r["epochs"] for r in by[p]] for p in by},
                                                "without_shared_prefix": round(unshared, 4),
                                                "hyperband_topk": round(topk, 4),
                                                "hyperband_topk_er_gap_points": round(topk_gap, 3)},
            "best_val_er_gap_points": {"ratio": round(max(gap, 0.0), 3), "target": 1.0, "signed_points": round(gap, 3),
                                       "unpruned": [r["best_val_er"] for r in by["none"]],
                                       "pruned": [r["best_val_er"] for r in by["hyperband"]]},
            "setup": {"trials": args.trials, "epochs": args.epochs, "seeds": args.seeds, "first_seed": args.first_seed,
                      "pruner": "hyperband",
                      "sampler": "tpe"}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--epochs", type=int, default=20, help="the embedded default's 20 (the demo's run length)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0, help="sampler seeds first-seed, first-seed + 1, ...")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=min(3, os.cpu_count() or 1),
                    help="seeds run in this many processes at once (the figures do not depend on it)")
    args = ap.parse_args()
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(run_seed, s, args.epochs, args.trials, args.threads) for s in range(args.first_seed, args.first_seed + args.seeds)]
        rows = [r for f in futures for r in f.result()]
    out = summary(rows, args)
    print(f"{'seed':>4} {'pruner':>10} {'epochs':>7} {'(restored)':>10} {'best val ER':>12} {'wall s':>7}  "
          f"trials stopped after (epochs: n)")
    for r in rows:
        print(f"{r['seed']:>4} {r['pruner']:>10} {r['epochs']:>7} {r['epochs_reused']:>10} {r['best_val_er']:>12.4f} "
              f"{r['wall_s']:>7.1f}  "
              f"{r['stopped_after']}" + (f"  (same epoch-1 ER: {r['same_epoch1_er']} of {args.trials})"
                                         if r["pruner"] == "none" else ""))
    e, g = out["pruned_study_epochs_vs_unpruned"], out["best_val_er_gap_points"]
    print(f"epochs trained, pruned / unpruned: {e['ratio']:.3f} (per seed {e['per_seed']}; target <= 0.5; "
          f"{e['without_shared_prefix']:.3f} counting restored epochs); "
          f"best val ER, unpruned - pruned: {g['signed_points']:+.2f} points (target <= 1)")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
