"""One experiment end to end: train, evaluate, and record everything in MLflow.

This is the library function behind ``rftbench train``; the demo, the tuner and sweeps call
it too. Nothing is created in MLflow before the config's names, the data and the weights are
known good (:func:`rftbench.validation.validate_names`, then :func:`rftbench.setup.build_task`).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

from .config import ExperimentConfig, dump_config
from .evaluate import EvaluationRecord, evaluate_model
from .models import weights_sha256
from .plots import plot_robustness_curves
from .setup import Task, build_task
from .tracking import Tracker, start_run
from .training import Callback, TrainResult, train
from .validation import load_plugins, validate_names

__all__ = ["ExperimentResult", "run_experiment", "evaluate_config", "log_evaluation_record", "load_plugins"]


@dataclass
class ExperimentResult:
    run_id: str
    train: TrainResult
    record: Optional[EvaluationRecord]
    run_dir: Path


def write_curve_csv(record: EvaluationRecord, path: Path) -> Path:
    """The robustness curve (accuracy under the sweep attack at each eps) as CSV."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["eps", "eps_x255", "accuracy"])
        for e, a in zip(record["sweep"]["eps_grid"], record["sweep"]["accuracy"]):
            w.writerow([f"{e:.8f}", f"{e * 255:.4f}", f"{a:.6f}"])
    return path


def run_experiment(cfg: ExperimentConfig, *, tracking_uri: str | None = None, run_dir: str | Path | None = None,
                   resume_run_id: str | None = None, evaluate: bool = True, parent_run_id: str | None = None,
                   callbacks: Iterable[Callback] = (), progress: Any = None,
                   extra_tags: dict[str, Any] | None = None, claimed_run_id: str | None = None) -> ExperimentResult:
    """Train ``cfg`` and (unless ``evaluate=False``) evaluate it on ``cfg.eval.split``; log all to MLflow.

    ``resume_run_id`` reopens that MLflow run and resumes training from its last checkpoint in
    ``run_dir`` (default: the directory recorded on the run); it refuses while a live process on
    this host still trains that run (see :mod:`rftbench.recovery`). ``callbacks`` are extra
    :class:`rftbench.training.Callback` objects (e.g. Optuna pruning). ``claimed_run_id``: an
    MLflow run created (and claimed) beforehand by :mod:`rftbench.gridrun` to train in afresh.
    """
    validate_names(cfg)
    from .training.distributed import init_distributed

    if not init_distributed(cfg.train.device).is_main:  # torchrun: ranks > 0 train, rank 0 records
        return _train_follower(cfg, resume_run_id, run_dir, tracking_uri, callbacks)
    if resume_run_id is not None:
        from .recovery import check_resumable, run_dir_of

        run_dir = run_dir or run_dir_of(check_resumable(resume_run_id, uri=tracking_uri))
    task = build_task(cfg)
    tags = {"rftbench.schedule": cfg.schedule.name, "rftbench.model": cfg.model.name,
            "rftbench.dataset": cfg.data.name, "rftbench.kind": "experiment", **(extra_tags or {})}
    with start_run(cfg.experiment, cfg.name, tags=tags, uri=tracking_uri, parent_run_id=parent_run_id,
                   run_id=resume_run_id or claimed_run_id) as tracker:
        if claimed_run_id is not None:
            tracker.set_tags(tags)
        rdir = Path(run_dir or Path(cfg.output_dir) / tracker.run_id)
        rdir.mkdir(parents=True, exist_ok=True)
        if resume_run_id is None:
            _log_run_inputs(tracker, cfg, task, rdir)
        result = train(cfg, run_dir=rdir, task=task, tracker=tracker, resume=resume_run_id is not None,
                       callbacks=callbacks, progress=progress)
        _log_training(tracker, result)
        record = _evaluate_and_log(tracker, cfg, task, result, rdir) if evaluate else None
        return ExperimentResult(tracker.run_id, result, record, rdir)


def _train_follower(cfg: ExperimentConfig, resume_run_id: str | None, run_dir: str | Path | None,
                    tracking_uri: str | None, callbacks: Iterable[Callback]) -> ExperimentResult:
    """A rank > 0 of a torchrun job: the same training, nothing logged or written (rank 0's
    checkpoint in the run's directory is read on resume)."""
    import tempfile

    if resume_run_id is not None and run_dir is None:
        from .recovery import run_dir_of
        from .tracking import client_for

        run_dir = run_dir_of(client_for(tracking_uri).get_run(resume_run_id))
    task = build_task(cfg)
    rdir = Path(run_dir) if run_dir else Path(tempfile.mkdtemp(prefix="rftbench-rank-"))
    result = train(cfg, run_dir=rdir, task=task, resume=resume_run_id is not None, callbacks=callbacks)
    return ExperimentResult("", result, None, rdir)


def _log_run_inputs(tracker: Tracker, cfg: ExperimentConfig, task: Task, rdir: Path) -> None:
    splits = task.splits
    tracker.log_params(cfg.flat())
    tracker.log_params({"data.n_train": len(splits.train), "data.n_val": len(splits.val),
                        "data.n_test": len(splits.test), "data.num_classes": splits.num_classes})
    tracker.log_text(dump_config(cfg), "config.yaml")
    tracker.log_dict(splits.info, "splits.json")
    tracker.set_tags({"rftbench.run_dir": str(rdir.resolve())})


def _log_training(tracker: Tracker, result: TrainResult) -> None:
    tracker.log_metrics({"train/wall_time_s": result.wall_time_s, "train/attack_steps": result.attack_steps,
                         "train/total_steps": result.total_steps,
                         "train/attack_fraction": result.attack_steps / max(1, result.total_steps)})
    tracker.set_tags({"rftbench.weights_sha256": weights_sha256(result.model)})
    tracker.log_artifact(result.checkpoint, "model")
    tracker.log_artifact(Path(str(result.checkpoint) + ".json"), "model")


def _evaluate_and_log(tracker: Tracker, cfg: ExperimentConfig, task: Task, result: TrainResult,
                      rdir: Path) -> EvaluationRecord:
    split = cfg.eval.split
    record = evaluate_model(result.model, task.splits.split(split), cfg, device=task.device,
                            dataset_name=cfg.data.name, split=split)
    record.data["train"] = {"wall_time_s": result.wall_time_s, "attack_steps": result.attack_steps,
                            "total_steps": result.total_steps, "schedule": result.info["schedule"]}
    record.data["mlflow_run_id"] = tracker.run_id
    tracker.log_metrics(record.metrics())
    tracker.set_tags(_record_tags(record))
    rec_path = record.save(rdir / "evaluation.json")
    csv_path = write_curve_csv(record, rdir / "robustness_curve.csv")
    png_path = plot_robustness_curves({cfg.name: (record["sweep"]["eps_grid"], record["sweep"]["accuracy"])},
                                      rdir / "robustness_curve.png",
                                      title=f"{cfg.name}: {record['sweep'].get('attack', 'sweep')} sweep")
    for p in (rec_path, csv_path, png_path):
        tracker.log_artifact(p, "evaluation")
    return record


def _record_tags(record: EvaluationRecord) -> dict[str, Any]:
    return {"rftbench.certified": record["certified"], "rftbench.er_name": record["expected_robustness"]["name"],
            "rftbench.warnings": " | ".join(record["warnings"])[:5000]}


def evaluate_config(cfg: ExperimentConfig, *, tracking_uri: str | None = None, log: bool = True,
                    out: str | Path | None = None, shard: tuple[int, int] | None = None,
                    reference: EvaluationRecord | None = None) -> tuple[EvaluationRecord, Optional[str]]:
    """Evaluate ``cfg.model`` as it is (no training) on ``cfg.eval.split`` of ``cfg.data``.

    Works on any registry model (``file:``, ``timm:``, ...); a ``file:`` checkpoint keeps its own
    head. With ``log`` the record goes to a new MLflow run tagged ``rftbench.kind=evaluation``
    (``evaluation-shard`` for ``shard=(i, N)``: merge the shard records with ``rftbench evaluate
    merge``); returns the record and the run id. ``reference``: a stored record whose clean
    results must reproduce.
    """
    load_plugins(cfg)
    task = build_task(cfg, keep_head=True)
    split = cfg.eval.split
    record = evaluate_model(task.model, task.splits.split(split), cfg, device=task.device,
                            dataset_name=cfg.data.name, split=split, shard=shard, reference=reference)
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
        tracker.set_tags({**_record_tags(record), "rftbench.weights_sha256": record["model"]["weights_sha256"],
                          "rftbench.shard": f"{shard['index']}/{shard['count']}" if shard else ""})
        tracker.log_dict(record.data, "evaluation.json", "evaluation")
        return tracker.run_id
