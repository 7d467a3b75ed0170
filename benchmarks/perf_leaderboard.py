"""Performance of the leaderboard against paging the same runs with a bare MLflow search.

Builds a SQLite MLflow store with ``--runs`` (default 2,000) synthetic finished runs shaped like
rftbench's: the params of a resolved config, the ``eval/*`` and ``train/*`` metrics, the tags an
evaluation sets (ER name, split, subset hash, certification) and the per-sample summary tag
``rftbench.per_sample`` (bit-packed sweep flags of ``--samples`` test samples on a 5-point grid,
AutoAttack flags of 100, ER weights: what the bootstrap needs, read with the runs themselves,
so no artifact is downloaded). The bootstrap CIs are computed afresh in every timed build (an
empty CI cache); a rebuild with the cache warm is printed beside. Runs are created with ``MlflowClient.log_batch`` (one call per
run). 4 settings x 50 schedules x 10 seeds.

Then, alternating ``--repeats`` times (best time counts): (a) ``build_leaderboard`` (grouped,
seed aggregates, 95% bootstrap CIs over test samples with ``--resamples`` resamples, t-intervals
over seeds) and (b) paging every finished run with a bare ``MlflowClient.search_runs``. The last
line is ``{"leaderboard_vs_search_runs": {"ratio": a/b, "target": 3.0}}``.

    python benchmarks/perf_leaderboard.py [--runs 2000] [--samples 500] [--repeats 2]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.filterwarnings("ignore", category=DeprecationWarning)

import numpy as np  # noqa: E402


def build_store(uri: str, n_runs: int, n_samples: int) -> None:
    from mlflow.entities import Metric, Param, RunTag

    from rftbench.evaluation.sample_summary import SampleSummary, encode, er_weights
    from rftbench.tracking.store import client_for, get_or_create_experiment

    client = client_for(uri)
    exp = get_or_create_experiment(client, "bench")
    rng = np.random.default_rng(0)
    grid = [0.0, 0.05, 0.1, 0.15, 0.2]
    w = er_weights(grid, "uniform")
    settings = [(m, e) for m in ("vit", "resnet") for e in (4 / 255, 8 / 255)]
    ts = int(time.time() * 1000)
    for i in range(n_runs):
        model, eps = settings[i % 4]
        sched, seed = (i // 4) % 50, i // 200
        p = rng.uniform(0.3, 0.9)
        sweep = np.cumprod(rng.random((n_samples, len(grid))) < np.array([p, 0.9, 0.8, 0.7, 0.6]), axis=1) > 0
        aa = sweep[:100, -1] & (rng.random(100) < 0.8)
        er = float((sweep.astype(float) @ w).mean())
        params = {"seed": seed, "threat.eps": eps, "threat.norm": "Linf", "model.name": model,
                  "schedule.name": "epsilon_scheduling", "schedule.params.start": sched / 100,
                  "train.objective.name": "pgd_at", "attack.steps": 7, "data.batch_size": 32, "name": f"r{i}"}
        metrics = {"eval/acc_clean": sweep[:, 0].mean(), "eval/acc_sweep": sweep[:, -1].mean(),
                   "eval/acc_autoattack": aa.mean(), "eval/expected_robustness": er, "eval/n_warnings": 0,
                   "eval/n_samples": n_samples, "train/wall_time_s": 100 + sched, "train/attack_steps": 900,
                   "train/total_steps": 1000, "train/attack_fraction": 0.9}
        tags = {"rftbench.kind": "experiment", "rftbench.model": model, "rftbench.dataset": "cars",
                "rftbench.schedule": "epsilon_scheduling", "rftbench.split": "test", "rftbench.certified": "True",
                "rftbench.er_name": "ER[uniform(0,eps),5pts,APGD-CE-10]", "rftbench.subset_sha256": "ab" * 32,
                "rftbench.weights_sha256": f"{i:064x}", "rftbench.n_aa": 100,
                "rftbench.per_sample": encode(SampleSummary(sweep, aa, w))}
        run = client.create_run(exp, run_name=f"r{i}")
        client.log_batch(run.info.run_id, metrics=[Metric(k, float(v), ts, 0) for k, v in metrics.items()],
                         params=[Param(k, str(v)) for k, v in params.items()],
                         tags=[RunTag(k, str(v)) for k, v in tags.items()])
        client.set_terminated(run.info.run_id, "FINISHED")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None  # SQLite commits on tmpfs: the store builds in seconds
    with tempfile.TemporaryDirectory(dir=shm) as d:
        uri = f"sqlite:///{d}/mlflow.db"
        os.environ["MLFLOW_TRACKING_URI"] = uri
        t = time.perf_counter()
        build_store(uri, args.runs, args.samples)
        print(f"store with {args.runs} runs built in {time.perf_counter() - t:.1f} s")
        from rftbench.results.leaderboard import build_leaderboard, search_all
        from rftbench.tracking.store import client_for

        client = client_for(uri)
        exp_id = client.get_experiment_by_name("bench").experiment_id
        build_leaderboard("bench", uri=uri, n_resamples=10)  # imports (pandas, scipy) once, outside the timing
        best = {"lb": [float("inf")] * 2, "search": [float("inf")] * 2}
        for rep in range(args.repeats):
            for side in ("search", "lb"):
                # a fresh bootstrap-CI cache each time: every CI is computed (the cold case)
                os.environ["RFTBENCH_CACHE"] = str(Path(d) / f"cache{rep}")
                t, c = time.perf_counter(), time.process_time()
                if side == "search":
                    runs = search_all(client_for(uri), [exp_id])
                else:
                    lb = build_leaderboard("bench", uri=uri, n_resamples=args.resamples)
                took = (time.perf_counter() - t, time.process_time() - c)
                best[side] = [min(a, b) for a, b in zip(best[side], took)]
        c = time.process_time()
        build_leaderboard("bench", uri=uri, n_resamples=args.resamples)
        print(f"leaderboard again with the CI cache warm: {time.process_time() - c:.2f} s CPU")
        assert len(runs) == args.runs and int(lb.table["n_seeds"].sum()) == args.runs
        (lb_wall, lb_cpu), (s_wall, s_cpu) = best["lb"], best["search"]
        print(f"bare MlflowClient.search_runs paging: {s_cpu:.2f} s CPU ({s_wall:.2f} s wall); leaderboard "
              f"({len(lb.table)} rows in {lb.table.groupby(lb.group_keys).ngroups} groups, bootstrap CIs with "
              f"{args.resamples} resamples): {lb_cpu:.2f} s CPU ({lb_wall:.2f} s wall)")
        print(f"ratio on wall time: {lb_wall / s_wall:.3f}; the ratio below is on this process's CPU time "
              f"(both sides run in-process against SQLite; CPU time is robust to other load on the machine)")
        print(json.dumps({"leaderboard_vs_search_runs": {"ratio": round(lb_cpu / s_cpu, 3), "target": 3.0}}))


if __name__ == "__main__":
    main()
