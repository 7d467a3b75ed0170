"""CPU threads beside other work: a 2-epoch training of the embedded default (small CNN on the
8x8 digits, PGD-7, the paper's schedule) with rftbench's default thread count and with torch's,
each beside one busy process, against the same training on one thread.

Every training runs in a fresh process (so torch starts from its own default each time), with
the pretrained checkpoint built beforehand; timed: building the trainer (rftbench's rule samples
the CPUs there) and the 2 epochs, without validation or tracking. "Busy" is one more process
spinning on a core (``while True: pass``), started 0.5 s before and killed after the training.
Variants are interleaved over ``--reps`` repetitions; medians are reported. ``OMP_NUM_THREADS``
is removed from the children's environment (torch's default is then all cores).

- ``threads_default_vs_one_busy``: rftbench's default (``train.threads`` unset, the rule of
  :func:`rftbench.training.threads.set_torch_threads`) beside a busy process over one thread beside it
  (target <= 1.2, issue #25);
- ``torch_default_threads_vs_one_busy``: torch's own default (all cores) beside a busy process
  over one thread beside it: what the rule avoids (no target);
- ``threads_default_vs_torch_default_idle``: rftbench's default over torch's with no busy process
  (target <= 1.2: the rule must not give up the cores of an idle machine).

The last line printed is one JSON object ``{"<what>": {"ratio": r, "target": t}, ...}``.

    python benchmarks/perf_threads.py [--reps 3] [--epochs 2]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {  # name: (train.threads for the child: "torch" = torch's own count, None = rftbench's rule; busy)
    "torch_default_idle": ("torch", False), "rftbench_default_idle": (None, False), "one_thread_idle": (1, False),
    "torch_default_busy": ("torch", True), "rftbench_default_busy": (None, True), "one_thread_busy": (1, True),
}


def child(threads: str, epochs: int) -> None:
    """One timed training in this fresh process; prints {"wall_s", "threads", "why"}."""
    sys.path.insert(0, str(ROOT))
    import torch

    from rftbench.config import parse_config
    from rftbench.task import build_task
    from rftbench.training import Trainer

    n = torch.get_num_threads() if threads == "torch" else (None if threads == "none" else int(threads))
    cfg = parse_config({"train": {"epochs": epochs, "progress": "off", "threads": n}}, "perf_threads")
    task = build_task(cfg)
    t0 = time.perf_counter()
    trainer = Trainer(cfg, task, validate=False)
    trainer.run()
    print(json.dumps({"wall_s": time.perf_counter() - t0, "threads": trainer.threads, "why": trainer.threads_why}))


def run_variant(threads, busy: bool, epochs: int) -> dict:
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        if burner is not None:
            time.sleep(0.5)
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        out = subprocess.run([sys.executable, __file__, "--child", str(threads).lower(), "--epochs", str(epochs)],
                             capture_output=True, text=True, check=True, env={**env, "PYTHONPATH": str(ROOT)})
    finally:
        if burner is not None:
            burner.kill()
            burner.wait()
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=3, help="interleaved repetitions (medians are reported)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child, args.epochs)
        return {}
    sys.path.insert(0, str(ROOT))
    from rftbench.embedded import pretrained_checkpoint

    pretrained_checkpoint()  # built once, before anything is timed
    results: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    names = list(VARIANTS)
    for rep in range(args.reps):
        for name in names[rep % len(names):] + names[:rep % len(names)]:  # rotate: no variant always first
            threads, busy = VARIANTS[name]
            results[name].append(run_variant(threads, busy, args.epochs))
    med = {name: statistics.median(r["wall_s"] for r in runs) for name, runs in results.items()}
    print(f"{os.cpu_count()} CPUs, {args.epochs}-epoch embedded-default training, {args.reps} interleaved "
          f"repetitions (wall s: median, range; threads used)", file=sys.stderr)
    for name, runs in results.items():
        walls = [r["wall_s"] for r in runs]
        used = sorted({r["threads"] for r in runs})
        print(f"  {name:<22} {med[name]:7.2f} s  ({min(walls):.2f}-{max(walls):.2f})  threads {used}  "
              f"[{runs[-1]['why']}]", file=sys.stderr)
    ratios = {
        "threads_default_vs_one_busy": (med["rftbench_default_busy"] / med["one_thread_busy"], 1.2),
        "torch_default_threads_vs_one_busy": (med["torch_default_busy"] / med["one_thread_busy"], None),
        "threads_default_vs_torch_default_idle": (med["rftbench_default_idle"] / med["torch_default_idle"], 1.2),
    }
    result = {key: {"ratio": round(r, 4), "target": t} for key, (r, t) in ratios.items()}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
