"""Grid throughput: the 6-run toy grid with 2 local workers against the same grid run
sequentially in one process, one torch thread per run in both.

Each side gets its own MLflow experiment (so nothing is skipped) in one temporary SQLite store;
the embedded pretrained checkpoint is built before timing. The 2-worker side pays a Python
start-up per run (each run is its own process, so that a dying run fails alone). Target: wall
time ratio <= 0.60 on a 2-core machine. The last line printed is one JSON object
``{"grid_2_workers_vs_sequential": {"ratio": r, "target": 0.6}}``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def grid(experiment: str, epochs: int) -> dict:
    return {
        "name": "r{run}",
        "base": {"experiment": experiment, "model": {"name": "small_cnn", "pretrained": True},
                 "data": {"name": "digits", "batch_size": 64}, "threat": {"eps": 0.2}, "attack": {"steps": 2},
                 "schedule": {"name": "linear"}, "train": {"epochs": epochs, "lr": 0.02, "progress": "off"},
                 "eval": {"num_points": 2, "sweep_steps": 2, "n_samples": 64, "autoattack": {"enabled": False}}},
        "axes": {"run": {str(i): {"seed": i} for i in range(6)}},
    }


def timed(runs, launcher) -> tuple[float, list]:
    from rftbench.sweep import run_sweep

    t0 = time.perf_counter()
    results = run_sweep(runs, launcher)
    return time.perf_counter() - t0, results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=4)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="perf-scale-"))
    os.chdir(work)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    os.environ.setdefault("RFTBENCH_CACHE", str(work / "cache"))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    import torch

    torch.set_num_threads(1)
    from rftbench.embedded import pretrained_checkpoint
    from rftbench.launch import LaunchOptions
    from rftbench.sweep import expand_grid

    pretrained_checkpoint("small_cnn")
    seq_s, seq = timed(expand_grid(grid("sequential", args.epochs)), None)
    par_s, par = timed(expand_grid(grid("workers", args.epochs)), LaunchOptions(workers=2, threads=1))
    for name, res in (("sequential", seq), ("2 workers", par)):
        bad = [r for r in res if r.status != "finished"]
        if bad:
            print(f"{name}: {bad[0].name} {bad[0].status}: {bad[0].message}", file=sys.stderr)
            return 1
    ratio = par_s / seq_s
    print(f"6 runs x {args.epochs} epochs: sequential {seq_s:.1f} s, 2 local workers {par_s:.1f} s "
          f"(ratio {ratio:.3f}) on {os.cpu_count()} cores")
    print(json.dumps({"grid_2_workers_vs_sequential": {"ratio": round(ratio, 4), "target": 0.6}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
