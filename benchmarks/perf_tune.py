"""Compute saved by pruning a schedule-shape search, measured side by side (lower is better).

On the embedded default (small CNN pretrained on digits 0-4, fine-tuned on 5-9; fixed seeds),
a TPE study over ``epsilon_scheduling``'s ``start``/``end`` pruned by Hyperband (epochs as the
budget) against the same study unpruned, the same number of trials, for each of ``--seeds``
sampler seeds (the config seed, from which the worker's sampler seed is derived). Reported:
the ratio of epochs trained (pruned / unpruned, summed over seeds; target <= 0.5) and the gap
between the best validation ER found (unpruned minus pruned, averaged over seeds, in points;
target <= 1). The last line is one JSON object.

    python benchmarks/perf_tune.py [--trials 10] [--epochs 6] [--seeds 3] [--jobs 3]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
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
        "train": {"epochs": epochs, "lr": 0.02, "val_samples": 128, "val_every": 1, "progress": "off"},
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
    epochs_trained = sum(t.user_attrs.get("epochs_trained", 0) for t in study.trials)
    return {"study": name, "epochs": epochs_trained, "best_val_er": res.best_value, "states": res.states,
            "wall_s": time.perf_counter() - t0}


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
        for pruner in ("none", "hyperband"):
            rows.append({"seed": seed, "pruner": pruner, **run_study(work, seed, epochs, trials, pruner)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=1, help="seeds run in this many processes at once")
    args = ap.parse_args()
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(run_seed, s, args.epochs, args.trials, args.threads) for s in range(args.seeds)]
        rows = [r for f in futures for r in f.result()]
    by = {p: [r for r in rows if r["pruner"] == p] for p in ("none", "hyperband")}
    ratio = sum(r["epochs"] for r in by["hyperband"]) / sum(r["epochs"] for r in by["none"])
    gap = 100 * sum(a["best_val_er"] - b["best_val_er"] for a, b in zip(by["none"], by["hyperband"])) / args.seeds
    print(f"{'seed':>4} {'pruner':>10} {'epochs':>7} {'best val ER':>12} {'wall s':>7}")
    for r in rows:
        print(f"{r['seed']:>4} {r['pruner']:>10} {r['epochs']:>7} {r['best_val_er']:>12.4f} {r['wall_s']:>7.1f}")
    print(f"epochs trained, pruned / unpruned: {ratio:.3f} (target <= 0.5); best val ER, unpruned - pruned: "
          f"{gap:+.2f} points (target <= 1)")
    print(json.dumps({"pruned_study_epochs_vs_unpruned": {"ratio": round(ratio, 4), "target": 0.5},
                      "best_val_er_gap_points": {"ratio": round(max(gap, 0.0), 3), "target": 1.0,
                                                 "signed_points": round(gap, 3)},
                      "setup": {"trials": args.trials, "epochs": args.epochs, "seeds": args.seeds}}))


if __name__ == "__main__":
    main()
