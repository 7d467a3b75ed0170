"""Grid throughput: the 6-run grid on the embedded default with 2 local workers against the same
grid run sequentially in this process, one torch thread per run on both sides.

Both sides run the same configs (``--epochs`` epochs a run, PGD-2 training, a 2-point sweep of 64
samples, no AutoAttack; ``train.log_mlflow_model`` off on both sides unless ``--log-model``),
each in its own MLflow experiment of one SQLite store, so nothing is skipped. Not timed: building
the embedded pretrained checkpoint and creating the store and both experiments. Timed on the
2-worker side: starting the worker processes (spawned: Python, torch and MLflow imports), the
parent's look-up of what is done, and every run in a child forked from its worker. The
sequential side pays the run path's lazy imports in its first run; a worker pays them in its
first child and imports them itself before forking the next (:mod:`rftbench.launch.local`).

With the MLflow model on, each forked run pays about 1.2 s more than a sequential one: MLflow
maps installed packages to modules once per process to check the model's requirements.

Target: wall-time ratio <= 0.60 on a 2-core machine (the asymptote is 0.5 plus what two runs on
two cores slow each other down). The CPU seconds of both sides (this process, plus every
worker and run it waited for) are printed beside the wall times: on a loaded machine they show
what the launcher costs where the wall times cannot. The last line printed is one JSON object
``{"grid_2_workers_vs_sequential": {"ratio": r, "target": 0.6}}``.

    python benchmarks/perf_scale.py [--epochs 20] [--log-model]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def grid(experiment: str, epochs: int, log_model: bool) -> dict:
    return {
        "name": "r{run}",
        "base": {"experiment": experiment, "model": {"name": "small_cnn", "pretrained": True},
                 "data": {"name": "digits", "batch_size": 64}, "threat": {"eps": 0.2}, "attack": {"steps": 2},
                 "schedule": {"name": "linear"},
                 "train": {"epochs": epochs, "lr": 0.02, "progress": "off", "log_mlflow_model": log_model},
                 "eval": {"num_points": 2, "sweep_steps": 2, "n_samples": 64, "autoattack": {"enabled": False}}},
        "axes": {"run": {str(i): {"seed": i} for i in range(6)}},
    }


def cpu_s() -> float:
    """CPU seconds of this process and of every child it waited for (workers and their runs)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed(runs, launcher) -> tuple[float, float, list]:
    """(wall s, CPU s, one PointResult per run)."""
    from rftbench.experiments.sweep import run_sweep

    t0, c0 = time.perf_counter(), cpu_s()
    results = run_sweep(runs, launcher)
    return time.perf_counter() - t0, cpu_s() - c0, results


def prepare(experiments: list[str]) -> None:
    """The embedded checkpoint, the MLflow store and the experiments, before anything is timed."""
    from rftbench.embedded import pretrained_checkpoint
    from rftbench.tracking.store import client_for, get_or_create_experiment

    pretrained_checkpoint("small_cnn")
    client = client_for()
    for name in experiments:
        get_or_create_experiment(client, name)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=20, help="epochs per run (default 20)")
    ap.add_argument("--log-model", action="store_true", help="log the MLflow PyTorch model in every run (both sides)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="perf-scale-"))
    os.chdir(work)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    os.environ.setdefault("RFTBENCH_CACHE", str(work / "cache"))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    import torch

    torch.set_num_threads(1)
    from rftbench.launch import LaunchOptions
    from rftbench.experiments.sweep import expand_grid

    prepare(["sequential", "workers"])
    load = os.getloadavg()[0]
    seq_s, seq_cpu, seq = timed(expand_grid(grid("sequential", args.epochs, args.log_model)), None)
    par_s, par_cpu, par = timed(expand_grid(grid("workers", args.epochs, args.log_model)),
                                LaunchOptions(workers=2, threads=1))
    for name, res in (("sequential", seq), ("2 workers", par)):
        bad = [r for r in res if r.status != "finished"]
        if bad:
            print(f"{name}: {bad[0].name} {bad[0].status}: {bad[0].message}", file=sys.stderr)
            return 1
    ratio = par_s / seq_s
    print(f"6 runs x {args.epochs} epochs (MLflow model {'on' if args.log_model else 'off'}), {os.cpu_count()} "
          f"cores, load average {load:.2f} before / {os.getloadavg()[0]:.2f} after: sequential {seq_s:.1f} s wall, "
          f"{seq_cpu:.1f} s CPU; 2 local workers {par_s:.1f} s wall, {par_cpu:.1f} s CPU (ratio {ratio:.3f})")
    print(json.dumps({"grid_2_workers_vs_sequential": {"ratio": round(ratio, 4), "target": 0.6}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
