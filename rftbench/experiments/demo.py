"""The demo on the embedded default: one robust fine-tuning run per schedule, then a leaderboard.

Digits 0-4 pretrain a small CNN plainly (the non-robust "pretrained" model, cached); digits
5-9 are the fine-tuning target. At target eps 0.2 a constant eps costs clean accuracy
(suboptimal transfer) and ramps win it back at equal robustness.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from ..config import ExperimentConfig, parse_config
from .experiment import ExperimentResult, run_experiment
from ..results.export import render
from ..results.leaderboard import Leaderboard, build_leaderboard
from ..plots import plot_robustness_curves

DEMO_SCHEDULES: dict[str, dict[str, float]] = {
    "none": {},
    "constant": {},
    "linear": {"warmup": 0.5},
    "epsilon_scheduling": {"start": 0.24, "end": 0.74},
}


def demo_config(schedule: str, params: dict[str, float], *, epochs: int = 20, aa_samples: int = 100,
                target_eps: float = 0.2, experiment: str = "rftbench-demo", output_dir: str = "rftbench-runs",
                seed: int = 0) -> ExperimentConfig:
    """The embedded default experiment for one schedule (digits 5-9, small CNN, PGD-7 AT)."""
    return parse_config({
        "name": f"demo-{schedule}", "experiment": experiment, "seed": seed, "output_dir": output_dir,
        "model": {"name": "small_cnn", "pretrained": True},
        "data": {"name": "digits", "options": {"task": "target"}, "batch_size": 32},
        "threat": {"norm": "Linf", "eps": target_eps},
        "attack": {"name": "pgd", "steps": 7},
        "schedule": {"name": schedule, "params": params},
        "train": {"epochs": epochs, "optimizer": "sgd", "lr": 0.02, "weight_decay": 5e-4},
        "eval": {"num_points": 5, "sweep_attack": "pgd", "sweep_steps": 10, "n_samples": 1000,
                 "autoattack": {"version": "standard", "n_samples": aa_samples}},
    }, source="demo")


@dataclass
class DemoResult:
    results: dict[str, ExperimentResult]
    leaderboard: Leaderboard
    figure: Path
    wall_time_s: float
    report: Path


def run_demo(*, workdir: str | Path = ".", epochs: int = 20, aa_samples: int = 100,
             schedules: dict[str, dict[str, float]] | None = None, tracking_uri: str | None = None,
             experiment: str = "rftbench-demo", console: Console | None = None, quiet: bool = False) -> DemoResult:
    """Fine-tune the embedded pretrained CNN once per schedule; evaluate; print the leaderboard."""
    console = console or Console(quiet=quiet, width=None if sys.stdout.isatty() else 140)
    t0 = time.perf_counter()
    workdir = Path(workdir)
    out_dir = workdir / "rftbench-runs"
    results: dict[str, ExperimentResult] = {}
    for name, params in (schedules or DEMO_SCHEDULES).items():
        cfg = demo_config(name, params, epochs=epochs, aa_samples=aa_samples, experiment=experiment,
                          output_dir=str(out_dir))
        shape = ", ".join(f"{k}={v:g}" for k, v in params.items())
        console.print(f"[bold cyan]▶ {cfg.name}[/bold cyan]: schedule {name}{f' ({shape})' if shape else ''}, "
                      f"target eps {cfg.threat.eps}, {epochs} epochs of PGD-{cfg.attack.steps} AT")
        t = time.perf_counter()
        res = run_experiment(cfg, tracking_uri=tracking_uri)
        rec = res.record
        aa = rec["autoattack"]["accuracy"] if rec["autoattack"] else float("nan")
        console.print(f"  clean {rec['clean_accuracy']:.3f}  PGD@target {rec['sweep']['accuracy'][-1]:.3f}  "
                      f"AutoAttack {aa:.3f}  ER {rec['expected_robustness']['value']:.3f}  "
                      f"({time.perf_counter() - t:.0f} s, run {res.run_id[:8]})")
        results[name] = res
    figure = plot_robustness_curves(
        {n: (r.record["sweep"]["eps_grid"], r.record["sweep"]["accuracy"]) for n, r in results.items()},
        out_dir / "demo_robustness_curves.png", title="Demo: PGD-10 accuracy against eps")
    lb, report = _leaderboard_and_report(experiment, results, tracking_uri, workdir)
    render(lb, console, title=f"rftbench demo leaderboard (from MLflow, experiment {experiment!r})")
    wall = time.perf_counter() - t0
    console.print(f"Figures: {figure} and rftbench-runs/<run id>/robustness_curve.png; "
                  f"evaluation records: rftbench-runs/<run id>/evaluation.json.")
    console.print("Browse every run: [bold]mlflow ui --backend-store-uri sqlite:///mlflow.db[/bold] "
                  "(then open http://127.0.0.1:5000).")
    console.print(f"Demo wall time: {wall:.0f} s.")
    console.print(f"Report (one self-contained HTML page): {report.resolve()}")
    return DemoResult(results, lb, figure, wall, report)


def _leaderboard_and_report(experiment: str, results: dict[str, ExperimentResult], tracking_uri: str | None,
                            workdir: Path) -> tuple[Leaderboard, Path]:
    """The leaderboard of this demo's runs (the experiment may hold older ones) and its report.html."""
    from ..results.report import write_report

    ids = "|".join(r.run_id for r in results.values())
    lb = build_leaderboard(experiment, uri=tracking_uri)
    keep = lb.runs["run_id"].isin(ids.split("|"))
    if not keep.all():
        from ..results.stats import aggregate

        runs = lb.runs[keep].reset_index(drop=True)
        lb = Leaderboard(aggregate(runs, lb.group_keys, lb.samples), runs, lb.group_keys, lb.samples,
                         lb.experiments, lb.uri)
    return lb, write_report(lb, workdir / "report.html")
