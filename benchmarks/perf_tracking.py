"""The cost of tracking: a training run logging every step to a real MLflow tracking server
(``mlflow server``, SQLite backend, on 127.0.0.1) vs the same run with tracking off.

Both sides train the embedded pretrained small CNN on digits 5-9 (PGD-AT, ``train.log_every: 1``:
every batch's window metrics plus a heartbeat tag go to MLflow), built fresh through
``rftbench.task.build_task`` before each timed run. The tracked side goes through
:func:`rftbench.tracking.spool.start_spooled_run` (run creation, the on-disk spool, the background
flusher and the final flush of everything to the server are all inside the timed region). Each
side runs ``--repeats`` times, alternating, and the best time counts. Torch runs on one thread;
the ratio compares the CPU time of this process (the work the tracking adds to training, with
the flusher thread; unaffected by other processes competing for the cores), wall times are
printed beside. The last line is ``{"tracked_vs_untracked_run": {"ratio": r, "target": 1.03}}``.

    python benchmarks/perf_tracking.py [--repeats 3] [--epochs 6]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def start_server(root: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    cmd = [os.path.join(os.path.dirname(sys.executable), "mlflow"), "server", "--backend-store-uri",
           f"sqlite:///{root / 'server.db'}", "--artifacts-destination", str(root / "artifacts"),
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    for _ in range(240):
        try:
            with urllib.request.urlopen(uri + "/health", timeout=2) as r:
                if r.status == 200:
                    return proc, uri
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("mlflow server did not start")


def config(epochs: int):
    from rftbench.config import parse_config

    return parse_config({"name": "perf-tracking", "experiment": "perf-tracking", "seed": 0,
                         "model": {"name": "small_cnn", "pretrained": True},
                         "data": {"name": "digits", "batch_size": 32}, "threat": {"eps": 0.1},
                         "attack": {"steps": 3}, "schedule": {"name": "linear", "params": {"warmup": 0.25}},
                         "train": {"epochs": epochs, "lr": 0.02, "val_samples": 32, "device": "cpu",
                                   "progress": "off", "log_every": 1}}, "perf_tracking")


def one_run(cfg, root: Path, uri: str | None) -> tuple[float, float, int]:
    """(wall s, CPU s, steps) of one training run, tracked to ``uri`` or untracked (None)."""
    from rftbench.task import build_task
    from rftbench.tracking.spool import start_spooled_run
    from rftbench.training import train

    task = build_task(cfg)
    run_dir = Path(tempfile.mkdtemp(dir=root))
    t, c = time.perf_counter(), time.process_time()
    if uri is None:
        result = train(cfg, run_dir=run_dir, task=task)
    else:
        with start_spooled_run(cfg.experiment, cfg.name, uri=uri, sync_wait_s=120) as tracker:
            tracker.attach(run_dir)
            result = train(cfg, run_dir=run_dir, task=task, tracker=tracker)
    return time.perf_counter() - t, time.process_time() - c, result.total_steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=6)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = config(args.epochs)
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        os.environ["RFTBENCH_CACHE"] = os.environ.get("RFTBENCH_CACHE") or str(root / "cache")
        proc, uri = start_server(root)
        try:
            one_run(cfg, root, None)  # warm-up: the embedded checkpoint, imports, data
            times = {"untracked": [], "tracked": []}
            for _ in range(args.repeats):
                times["untracked"].append(one_run(cfg, root, None))
                times["tracked"].append(one_run(cfg, root, uri))
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
    best = {k: (min(w for w, _, _ in v), min(c for _, c, _ in v)) for k, v in times.items()}
    steps = times["tracked"][0][2]
    for k, (w, c) in best.items():
        print(f"{k:>10}: best wall {w:6.2f} s  best CPU {c:6.2f} s  ({steps} steps, every one logged when tracked)")
    ratio = best["tracked"][1] / best["untracked"][1]
    print(f"wall-time ratio (beside): {best['tracked'][0] / best['untracked'][0]:.3f}")
    print(json.dumps({"tracked_vs_untracked_run": {"ratio": round(ratio, 4), "target": 1.03}}))


if __name__ == "__main__":
    main()
