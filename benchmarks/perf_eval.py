"""Performance of the evaluator, measured side by side in one run (lower ratios are better).

(a) the pruned PGD sweep over 9 eps values vs a naive per-eps torchattacks PGD loop on the same
    model and samples (the naive flags with the nesting rule must equal the pruned ones);
(b) the pruned APGD-CE sweep (the paper's metric, 10 steps) over the same grid vs a naive per-eps
    APGD-CE loop (torchattacks' APGD loop in full at every eps on every sample, from the same
    per-sample seeded starts): identical flags after the nesting rule required;
(c) rftbench's AutoAttack evaluation (``run_pyautoattack``: one attack at a time with a
    per-attack breakdown) vs calling pyautoattack's ``run_standard_evaluation`` directly
    (identical robust accuracy and per-sample flags required);
(d) ``threats_pruned_vs_naive``: the norm sweeps of a threats record (Linf PGD-10, L2 PGD-10, L1
    APGD-CE-10, 5 eps each) pruned vs the libraries per eps on every sample (torchattacks' PGD /
    PGDL2, pyautoattack's L1 APGD from the same per-sample starts): identical flags required;
(e) ``corruption_cache_hit_vs_miss``: 15 corruptions at severity 3 read from the corruption cache
    vs computed by imagecorruptions-imaug (same content hashes required).

The model is the embedded pretrained small CNN, adversarially fine-tuned briefly on digits 5-9
(so that some samples survive), built once through ``rftbench.task.build_task``. Each side
runs ``--repeats`` times, alternating, and the best time counts. Torch runs on ``--threads``
threads (default 1) and the ratios compare the CPU time of this process (with one thread: the
work done, not the time other processes held the cores; wall times are printed beside). The
last line printed is one JSON object ``{"<what>": {"ratio": r, "target": t}, ...}``.

    python benchmarks/perf_eval.py [--repeats 2] [--aa-samples 24] [--threads 1] [--threat-samples 64] [--only KEY,..]
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


def _naive_threat_sweep(model, x, y, idx, norm: str, grid, steps: int, ratio: float):
    """Every eps attacks every sample with the library itself: torchattacks' PGD / PGDL2 (Linf, L2)
    or pyautoattack's L1 APGD-CE from the sweep's per-sample starts (L1); raw flags (n, grid)."""
    from rftbench.attacks.l1 import PyAutoAttackAPGDL1, l1_starts

    with torch.no_grad():
        clean = model(x).argmax(1) == y
    cols = [clean]
    for eps in grid[1:]:
        if norm == "L1":
            t = l1_starts(idx, x.shape[1:], eps=eps, restart=0, seed=0)
            cols.append(PyAutoAttackAPGDL1(model, eps, steps).run_from(x, y, t) & clean)
            continue
        cls = torchattacks.PGD if norm == "Linf" else torchattacks.PGDL2
        adv = cls(model, eps=eps, alpha=ratio * eps, steps=steps, random_start=False)(x, y)
        with torch.no_grad():
            cols.append((model(adv).argmax(1) == y) & clean)
    return torch.stack(cols, 1).numpy()


THREATS = (("Linf", "pgd", [0.1 * i / 4 for i in range(5)]), ("L2", "pgd", [1.5 * i / 4 for i in range(5)]),
           ("L1", "apgd-ce", [8.0 * i / 4 for i in range(5)]))


def bench_threats(model, test, n: int, repeats: int) -> dict:
    """(d): every norm sweep of a threats record (Linf PGD, L2 PGD, L1 APGD-CE; 5 eps each), pruned,
    vs the libraries called per eps on every sample; identical flags after the nesting rule."""
    from rftbench.attacks import SweepSettings
    from rftbench.attacks.pruned import pruned_sweep

    x, y, idx = test.images[:n], test.labels[:n], np.arange(n)
    steps, ratio = 10, 0.25
    sets = [(norm, SweepSettings(a, norm, steps=steps, step_ratio=ratio if a == "pgd" else None), g)
            for norm, a, g in THREATS]

    def pruned():
        return np.concatenate([pruned_sweep(model, [(x, y, idx)], g, st) for _, st, g in sets], 1)

    def naive():
        return np.concatenate([_naive_threat_sweep(model, x, y, idx, norm, g, steps, ratio) for norm, _, g in sets], 1)

    from rftbench.attacks.pruned import apply_nesting

    t_pruned, t_naive, fp, fn = side_by_side(pruned, naive, repeats)
    nested = np.concatenate([apply_nesting(fn[:, 5 * k:5 * k + 5]) for k in range(len(sets))], 1)
    if not np.array_equal(fp, nested):
        raise SystemExit("pruned threat sweeps differ from the naive per-eps library loops with the nesting rule")
    for k, (norm, st, g) in enumerate(sets):
        print(f"(d) {norm} {st.describe()} on {n} samples: accuracy "
              f"{' '.join(f'{a:.3f}' for a in fp[:, 5 * k:5 * k + 5].mean(0))} (identical, naive + nesting)")
    (wn, cn), (wp, cp) = best(t_naive), best(t_pruned)
    print(f"    naive library loops {wn:.2f} s wall / {cn:.2f} s CPU, pruned sweeps {wp:.2f} s wall / {cp:.2f} s CPU")
    return {"ratio": cp / cn, "target": 0.5}


def bench_corruption_cache(test, n: int) -> dict:
    """(e): corrupted copies of ``n`` samples (15 corruptions at severity 3) from the cache vs computing
    them (a cold cache); the hit returns the same images (same content hashes)."""
    from rftbench.evaluation.corruptions import CorruptionCache, corruption_names

    x, idx = test.images[:n], np.arange(n)
    names = corruption_names("all")
    with tempfile.TemporaryDirectory() as d:
        cache = CorruptionCache(Path(d))
        CorruptionCache(None).get(x[:1], idx[:1], "glass_blur", 3, 0)  # numba compiles glass_blur once: not timed
        (wm, cm), miss = timed(lambda: [cache.get(x, idx, c, 3, 0)[1] for c in names])
        (wh, ch), hit = timed(lambda: [cache.get(x, idx, c, 3, 0)[1] for c in names])
    if miss != hit or cache.hits != len(names):
        raise SystemExit("the corruption cache returned other images than it stored")
    print(f"(e) {len(names)} corruptions x {n} samples at severity 3: computed {wm:.2f} s wall / {cm:.2f} s CPU, "
          f"from the cache {wh:.3f} s wall / {ch:.3f} s CPU")
    return {"ratio": ch / cm, "target": 0.1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--aa-samples", type=int, default=24)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--threat-samples", type=int, default=64, help="samples of (d) and (e)")
    ap.add_argument("--only", default=None, help="run these benchmarks only (comma-separated JSON keys)")
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
        benches = {"pruned_sweep_vs_naive_torchattacks": lambda: bench_sweep(model, test, args.repeats),
                   "pruned_apgd_sweep_vs_naive": lambda: bench_apgd_sweep(model, test, args.repeats),
                   "autoattack_vs_direct_pyautoattack": lambda: bench_autoattack(model, test, args.aa_samples,
                                                                                 args.repeats),
                   "threats_pruned_vs_naive": lambda: bench_threats(model, test, args.threat_samples, args.repeats),
                   "corruption_cache_hit_vs_miss": lambda: bench_corruption_cache(test, args.threat_samples)}
        only = set(args.only.split(",")) if args.only else set(benches)
        out = {k: run() for k, run in benches.items() if k in only}
    print(f"total {time.perf_counter() - t0:.0f} s")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
