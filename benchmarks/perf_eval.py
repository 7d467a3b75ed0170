"""Performance of the evaluator, measured side by side in one run (lower ratios are better).

(a) the pruned PGD sweep over 9 eps values vs a naive per-eps torchattacks PGD loop on the same
    model and samples (the naive flags with the nesting rule must equal the pruned ones);
(b) the pruned APGD-CE sweep (the paper's metric, 10 steps) over the same grid vs a naive per-eps
    APGD-CE loop (torchattacks' APGD loop in full at every eps on every sample, from the same
    per-sample seeded starts): identical flags after the nesting rule required;
(c) rftbench's AutoAttack evaluation (``run_pyautoattack``: one attack at a time with a
    per-attack breakdown) vs calling pyautoattack's ``run_standard_evaluation`` directly
    (identical robust accuracy and per-sample flags required).

The model is the embedded pretrained small CNN, adversarially fine-tuned briefly on digits 5-9
(so that some samples survive), built once through ``rftbench.task.build_task``. Each side
runs ``--repeats`` times, alternating, and the best time counts. Torch runs on ``--threads``
threads (default 1) and the ratios compare the CPU time of this process (with one thread: the
work done, not the time other processes held the cores; wall times are printed beside). The
last line printed is one JSON object ``{"<what>": {"ratio": r, "target": t}, ...}``.

    python benchmarks/perf_eval.py [--repeats 2] [--aa-samples 24] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchattacks  # noqa: E402


def briefly_trained_model(workdir: Path):
    """small_cnn pretrained on digits 0-4, PGD-AT fine-tuned 4 epochs on digits 5-9 at eps 0.1."""
    from rftbench.config import parse_config
    from rftbench.task import build_task
    from rftbench.training import train

    cfg = parse_config({"name": "perf-eval", "seed": 0, "model": {"name": "small_cnn", "pretrained": True},
                        "data": {"name": "digits", "batch_size": 32}, "threat": {"eps": 0.1},
                        "attack": {"steps": 5},
                        "schedule": {"name": "linear", "params": {"warmup": 0.25}},
                        "train": {"epochs": 4, "lr": 0.02, "val_samples": 32, "device": "cpu",
                                  "progress": "off"}}, "perf_eval")
    task = build_task(cfg)  # the model is built (its weights read) once
    result = train(cfg, run_dir=workdir / "run", task=task)
    return result.model.eval(), task.splits.test


def timed(fn):
    """(wall s, CPU s of this process, result). With one torch thread the CPU time is the work
    done, unaffected by other processes competing for the cores; the ratios use it."""
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return (time.perf_counter() - t, time.process_time() - c), out


def side_by_side(first, second, repeats: int):
    """Time ``first`` then ``second`` alternately ``repeats`` times.
    Returns (first's times, second's times, first's last result, second's last result)."""
    t_first, t_second = [], []
    for _ in range(repeats):
        tf, out_first = timed(first)
        ts, out_second = timed(second)
        t_first.append(tf)
        t_second.append(ts)
    return t_first, t_second, out_first, out_second


def best(times):
    """Best wall and best CPU time over the repeats."""
    return min(w for w, _ in times), min(c for _, c in times)


def time_pruned_vs_naive(pruned, naive, repeats: int, attack: str):
    """Time both sweeps side by side ``repeats`` times; stop unless the pruned flags equal the
    naive flags with the nesting rule. Returns (pruned times, naive times, pruned flags)."""
    from rftbench.attacks.pruned import apply_nesting

    t_pruned, t_naive, flags_pruned, flags_naive = side_by_side(pruned, naive, repeats)
    if not np.array_equal(flags_pruned, apply_nesting(flags_naive)):
        raise SystemExit(f"pruned {attack} sweep flags differ from the naive {attack} loop with the nesting rule")
    return t_pruned, t_naive, flags_pruned


def bench_sweep(model, test, repeats: int) -> dict:
    from rftbench.attacks import SweepSettings
    from rftbench.attacks.pruned import pruned_sweep

    x, y = test.images, test.labels
    idx = np.arange(len(y))
    grid = [0.2 * i / 8 for i in range(9)]  # 9 eps values, 0 .. 0.2 (twice the training eps)
    steps, ratio, bs = 10, 0.25, 256
    settings = SweepSettings("pgd", "Linf", steps=steps, step_ratio=ratio)

    def batches():
        for i in range(0, len(y), bs):
            yield x[i:i + bs], y[i:i + bs], idx[i:i + bs]

    def pruned():
        return pruned_sweep(model, batches(), grid, settings)

    def naive():  # torchattacks alone: every eps attacks every sample
        cols = []
        for eps in grid:
            col = []
            for i in range(0, len(y), bs):
                xb, yb = x[i:i + bs], y[i:i + bs]
                adv = xb if eps == 0 else torchattacks.PGD(model, eps=eps, alpha=ratio * eps, steps=steps,
                                                           random_start=False)(xb, yb)
                with torch.no_grad():
                    col.append(model(adv).argmax(1) == yb)
            cols.append(torch.cat(col))
        return torch.stack(cols, 1).numpy()

    t_pruned, t_naive, flags_pruned = time_pruned_vs_naive(pruned, naive, repeats, "PGD")
    acc = flags_pruned.mean(0)
    attacked = flags_pruned[:, :-1].sum() / (len(y) * (len(grid) - 1))
    print(f"(a) {len(y)} samples, PGD-{steps}, eps grid 0..0.2 in 9 points; accuracy "
          f"{' '.join(f'{a:.3f}' for a in acc)} (identical, naive + nesting)")
    (wn, cn), (wp, cp) = best(t_naive), best(t_pruned)
    print(f"    naive torchattacks loop {wn:.2f} s wall / {cn:.2f} s CPU, pruned sweep {wp:.2f} s wall / {cp:.2f} s "
          f"CPU; the pruned sweep attacks {attacked:.1%} of the naive (sample, eps) pairs")
    return {"ratio": cp / cn, "target": 0.5}


def bench_apgd_sweep(model, test, repeats: int) -> dict:
    """(b): the pruned APGD-CE sweep vs a naive per-eps APGD-CE loop with identical flags."""
    from rftbench.attacks import SweepSettings
    from rftbench.attacks.pruned import pruned_sweep
    from rftbench.attacks.startable import apgd_starts, make_apgd

    x, y = test.images, test.labels
    idx = np.arange(len(y))
    grid = [0.2 * i / 8 for i in range(9)]
    steps, bs = 10, 256
    settings = SweepSettings("apgd-ce", "Linf", steps=steps, seed=0)

    def pruned():
        return pruned_sweep(model, ((x[i:i + bs], y[i:i + bs], idx[i:i + bs]) for i in range(0, len(y), bs)), grid,
                            settings)

    def naive():  # torchattacks' APGD loop in full: every eps attacks every sample (same per-sample starts)
        cols = []
        for eps in grid:
            col = []
            for i in range(0, len(y), bs):
                xb, yb = x[i:i + bs], y[i:i + bs]
                if eps == 0:
                    with torch.no_grad():
                        col.append(model(xb).argmax(1) == yb)
                else:
                    init = apgd_starts(idx[i:i + bs], xb.shape[1:], norm="Linf", eps=eps, restart=0, seed=0)
                    col.append(make_apgd(model, "Linf", eps, steps).run_from(xb, yb, init)[0])  # no iterate fooled
            cols.append(torch.cat(col))
        return torch.stack(cols, 1).numpy()

    t_pruned, t_naive, flags_pruned = time_pruned_vs_naive(pruned, naive, repeats, "APGD-CE")
    attacked = flags_pruned[:, :-1].sum() / (len(y) * (len(grid) - 1))
    print(f"(b) {len(y)} samples, APGD-CE-{steps}, same grid; accuracy "
          f"{' '.join(f'{a:.3f}' for a in flags_pruned.mean(0))} (identical, naive + nesting)")
    (wn, cn), (wp, cp) = best(t_naive), best(t_pruned)
    print(f"    naive APGD-CE loop {wn:.2f} s wall / {cn:.2f} s CPU, pruned sweep {wp:.2f} s wall / {cp:.2f} s CPU; "
          f"the pruned sweep attacks {attacked:.1%} of the naive (sample, eps) pairs")
    return {"ratio": cp / cn, "target": 0.5}


def bench_autoattack(model, test, n: int, repeats: int) -> dict:
    from pyautoattack import AutoAttack

    from rftbench.attacks.autoattack import run_pyautoattack

    x, y = test.images[:n], test.labels[:n]
    eps, classes = 0.1, 5

    def direct():
        aa = AutoAttack(model, norm="Linf", eps=eps, version="standard", device="cpu", seed=0)
        aa.apgd_targeted.n_target_classes = classes - 1  # as rftbench does for < 10 classes
        aa.fab.n_target_classes = classes - 1
        _, y_adv = aa.run_standard_evaluation(x, y, batch_size=n)
        return (y_adv == y).numpy()

    def ours():
        res = run_pyautoattack(model, x, y, eps=eps, norm="Linf", version="standard", num_classes=classes, seed=0,
                               batch_size=n)
        return res

    t_direct, t_ours, flags_direct, res = side_by_side(direct, ours, repeats)
    flags_ours = res.broken_by == 0
    if not np.array_equal(flags_ours, flags_direct):
        raise SystemExit("rftbench's AutoAttack flags differ from pyautoattack's")
    breakdown = {a: int(np.sum(res.broken_by == 2 + k)) for k, a in enumerate(res.attacks)}
    print(f"(c) pyautoattack standard at eps 0.1 on {n} samples: robust accuracy {flags_direct.mean():.3f} "
          f"(identical); broken by {breakdown}")
    (wd, cd), (wo, co) = best(t_direct), best(t_ours)
    print(f"    direct pyautoattack {wd:.2f} s wall / {cd:.2f} s CPU, rftbench {wo:.2f} s wall / {co:.2f} s CPU")
    return {"ratio": co / cd, "target": 1.05}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--aa-samples", type=int, default=24)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import logging

    logging.getLogger("auto-attack").setLevel(logging.ERROR)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        model, test = briefly_trained_model(Path(d))
        for p in model.parameters():
            p.requires_grad_(False)  # the same for both sides: attacks need input gradients only
        print(f"model trained in {time.perf_counter() - t0:.0f} s")
        out = {"pruned_sweep_vs_naive_torchattacks": bench_sweep(model, test, args.repeats),
               "pruned_apgd_sweep_vs_naive": bench_apgd_sweep(model, test, args.repeats),
               "autoattack_vs_direct_pyautoattack": bench_autoattack(model, test, args.aa_samples, args.repeats)}
    print(f"total {time.perf_counter() - t0:.0f} s")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
