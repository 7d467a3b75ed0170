"""One experiment end to end: train, evaluate, and record everything in MLflow.

This is the library function behind ``rftbench train``; the demo, the tuner and sweeps call
it too.
"""
from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .config import ExperimentConfig, dump_config
from .data import build_splits
from .evaluate import EvaluationRecord, evaluate_model
from .errors import ConfigError
from .models import split_name, weights_sha256
from .plots import plot_robustness_curves
from .registry import load_plugin_file
from .tracking import start_run
from .train import EpochCallback, TrainResult, build_model, resolve_device, train


@dataclass
class ExperimentResult:
    run_id: str
    train: TrainResult
    record: Optional[EvaluationRecord]
    run_dir: Path


def load_plugins(cfg: ExperimentConfig) -> None:
    for p in cfg.plugins:
        load_plugin_file(p)


def write_curve_csv(record: EvaluationRecord, path: Path) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["eps", "eps_x255", "accuracy"])
        for e, a in zip(record["pgd"]["eps_grid"], record["pgd"]["accuracy"]):
            w.writerow([f"{e:.8f}", f"{e * 255:.4f}", f"{a:.6f}"])
    return path


def run_experiment(cfg: ExperimentConfig, *, tracking_uri: str | None = None, run_dir: str | Path | None = None,
                   resume_run_id: str | None = None, evaluate: bool = True, parent_run_id: str | None = None,
                   on_epoch_end: Optional[EpochCallback] = None, progress: Any = None,
                   extra_tags: dict[str, Any] | None = None) -> ExperimentResult:
    """Train ``cfg`` and (unless ``evaluate=False``) evaluate it on the test split; log all to MLflow.

    ``resume_run_id`` reopens that MLflow run and resumes training from its last checkpoint in
    ``run_dir`` (default: the directory recorded on the run); it refuses while a live process on
    this host still trains that run (see :mod:`rftbench.recovery`).
    """
    load_plugins(cfg)
    # fail on bad names before any work is done
    from .scheduling import create_schedule
    from .objectives import OBJECTIVES

    create_schedule(cfg.schedule.name, cfg.schedule.params)
    OBJECTIVES.get(cfg.train.objective)
    device = resolve_device(cfg.train.device)
    if resume_run_id is not None:
        from .recovery import check_resumable, run_dir_of

        resumed = check_resumable(resume_run_id, uri=tracking_uri)
        run_dir = run_dir or run_dir_of(resumed)
    probe = build_model(cfg, num_classes=2)
    splits = build_splits(cfg.data, probe.spec, cfg.seed)
    del probe
    tags = {"rftbench.schedule": cfg.schedule.name, "rftbench.model": cfg.model.name,
            "rftbench.dataset": cfg.data.name, "rftbench.kind": "experiment", **(extra_tags or {})}
    with start_run(cfg.experiment, cfg.name, tags=tags, uri=tracking_uri, parent_run_id=parent_run_id,
                   run_id=resume_run_id) as tracker:
        rdir = Path(run_dir or Path(cfg.output_dir) / tracker.run_id)
        rdir.mkdir(parents=True, exist_ok=True)
        if resume_run_id is None:
            tracker.log_params(cfg.flat())
            tracker.log_params({"data.n_train": len(splits.train), "data.n_val": len(splits.val),
                                "data.n_test": len(splits.test), "data.num_classes": splits.num_classes})
            tracker.log_text(dump_config(cfg), "config.yaml")
            tracker.log_dict(splits.info, "splits.json")
            tracker.set_tags({"rftbench.run_dir": str(rdir.resolve())})
        result = train(cfg, run_dir=rdir, splits=splits, tracker=tracker, resume=resume_run_id is not None,
                       on_epoch_end=on_epoch_end, progress=progress)
        tracker.log_metrics({"train/wall_time_s": result.wall_time_s, "train/attack_steps": result.attack_steps,
                             "train/total_steps": result.total_steps,
                             "train/attack_fraction": result.attack_steps / max(1, result.total_steps)})
        tracker.set_tags({"rftbench.weights_sha256": weights_sha256(result.model)})
        tracker.log_artifact(result.checkpoint, "model")
        tracker.log_artifact(Path(str(result.checkpoint) + ".json"), "model")
        record = None
        if evaluate:
            split = cfg.eval.split
            record = evaluate_model(result.model, splits.split(split), cfg, device=device,
                                    dataset_name=cfg.data.name, split=split)
            record.data["train"] = {"wall_time_s": result.wall_time_s, "attack_steps": result.attack_steps,
                                    "total_steps": result.total_steps, "schedule": result.info["schedule"]}
            record.data["mlflow_run_id"] = tracker.run_id
            tracker.log_metrics(record.metrics())
            tracker.set_tags({"rftbench.certified": record["certified"],
                              "rftbench.er_name": record["expected_robustness"]["name"],
                              "rftbench.warnings": " | ".join(record["warnings"])[:5000]})
            rec_path = record.save(rdir / "evaluation.json")
            csv_path = write_curve_csv(record, rdir / "robustness_curve.csv")
            png_path = plot_robustness_curves({cfg.name: (record["pgd"]["eps_grid"], record["pgd"]["accuracy"])},
                                              rdir / "robustness_curve.png", title=f"{cfg.name}: PGD sweep")
            for p in (rec_path, csv_path, png_path):
                tracker.log_artifact(p, "evaluation")
        return ExperimentResult(tracker.run_id, result, record, rdir)


def evaluate_config(cfg: ExperimentConfig, *, tracking_uri: str | None = None, log: bool = True,
                    out: str | Path | None = None, shard: tuple[int, int] | None = None,
                    reference: EvaluationRecord | None = None) -> tuple[EvaluationRecord, Optional[str]]:
    """Evaluate ``cfg.model`` as it is (no training) on ``cfg.eval.split`` of ``cfg.data``.

    Works on any registry model (``file:``, ``timm:``, ...). With ``log`` the record goes to a
    new MLflow run tagged ``rftbench.kind=evaluation`` (``evaluation-shard`` for ``shard=(i, N)``:
    merge the shard records with ``rftbench evaluate merge``); returns the record and the run id.
    ``reference``: a stored record whose clean results must reproduce.
    """
    load_plugins(cfg)
    device = resolve_device(cfg.train.device)
    if split_name(cfg.model.name)[0] == "file":
        # a checkpoint is evaluated with its own head: a replaced head would be untrained
        model = build_model(cfg, 0)
        splits = build_splits(cfg.data, model.spec, cfg.seed)
        if model.num_classes != splits.num_classes:
            raise ConfigError(
                f"{cfg.model.name} has {model.num_classes} outputs but dataset {cfg.data.name!r} has "
                f"{splits.num_classes} classes: its head was not trained for this task. Evaluate it on the "
                f"dataset it was fine-tuned on, or fine-tune it first (rftbench train).")
    else:
        probe = build_model(cfg, num_classes=2)
        splits = build_splits(cfg.data, probe.spec, cfg.seed)
        model = build_model(cfg, splits.num_classes)
    model.to(device)
    split = cfg.eval.split
    record = evaluate_model(model, splits.split(split), cfg, device=device, dataset_name=cfg.data.name, split=split,
                            shard=shard, reference=reference)
    run_id = None
    if log:
        name = f"eval:{cfg.name}" + (f" shard {shard[0]}/{shard[1]}" if shard else "")
        run_id = log_evaluation_record(record, experiment=cfg.experiment, run_name=name, params=cfg.flat(),
                                       tags={"rftbench.model": cfg.model.name}, uri=tracking_uri)
    if out is not None:
        record.save(out)
    return record, run_id


def log_evaluation_record(record: EvaluationRecord, *, experiment: str, run_name: str,
                          params: dict[str, Any] | None = None, tags: dict[str, Any] | None = None,
                          uri: str | None = None) -> str:
    """Log one evaluation record to a new MLflow run: the record as artifact, its numbers as
    ``eval/*`` metrics (not for a shard, so that the leaderboard sees only whole evaluations) and
    its certification, ER name and warnings as tags. Returns the run id."""
    shard = record.data.get("shard")
    arch = (record["model"].get("arch") or {}).get("name", "?")
    all_tags = {"rftbench.kind": "evaluation-shard" if shard else "evaluation", "rftbench.model": arch,
                "rftbench.dataset": record["dataset"], "rftbench.schedule": "(as given)", **(tags or {})}
    with start_run(experiment, run_name, tags=all_tags, uri=uri) as tracker:
        if params:
            tracker.log_params(params)
        if not shard:
            tracker.log_metrics(record.metrics())
        tracker.set_tags({"rftbench.certified": record["certified"],
                          "rftbench.er_name": record["expected_robustness"]["name"],
                          "rftbench.weights_sha256": record["model"]["weights_sha256"],
                          "rftbench.shard": f"{shard['index']}/{shard['count']}" if shard else "",
                          "rftbench.warnings": " | ".join(record["warnings"])[:5000]})
        tracker.log_dict(record.data, "evaluation.json", "evaluation")
        return tracker.run_id
