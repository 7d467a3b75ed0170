"""One experiment end to end: train, evaluate, and record everything in MLflow.

This is the library function behind ``rftbench train``; the demo, the tuner and sweeps call
it too. Nothing is created in MLflow before the config's names, the data and the weights are
known good (:func:`rftbench.experiments.validation.validate_names`, then :func:`rftbench.task.build_task`).
"""
from __future__ import annotations

import csv
import hashlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from ..config import ExperimentConfig, dump_config
from ..errors import RecordError
from ..evaluation.evaluate import EvaluationRecord, evaluate_model
from ..tracking.conventions import (example_batch, leaderboard_tags, log_dataset_inputs, log_pytorch_model,
                                    log_record_metrics, split_prefix)
from ..models import weights_sha256
from ..plots import plot_robustness_curves
from ..task import Task, build_task
from ..errors import CheckpointError, ConfigError, RunFinishedError
from ..tracking.spool import check_store, start_spooled_run
from ..tracking.store import Tracker, check_tracking_uri, default_tracking_uri, start_run
from ..training import Callback, TrainResult, train
from .validation import load_plugins, validate_names

__all__ = ["ExperimentResult", "run_experiment", "run_dir_for", "evaluate_config", "log_evaluation_record",
           "load_plugins"]


@dataclass
class ExperimentResult:
    run_id: str
    train: TrainResult
    record: Optional[EvaluationRecord]
    run_dir: Path


def write_curve_csv(record: EvaluationRecord, path: Path) -> Path:
    """The robustness curve (accuracy under the sweep attack at each eps) as CSV."""
    import io

    from ..atomic import atomic_write_text

    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(["eps", "eps_x255", "accuracy"])
    for e, a in zip(record["sweep"]["eps_grid"], record["sweep"]["accuracy"]):
        w.writerow([f"{e:.8f}", f"{e * 255:.4f}", f"{a:.6f}"])
    return atomic_write_text(path, buf.getvalue())


def run_experiment(cfg: ExperimentConfig, *, tracking_uri: str | None = None, run_dir: str | Path | None = None,
                   resume_run_id: str | None = None, evaluate: bool = True, parent_run_id: str | None = None,
                   callbacks: Iterable[Callback] = (), progress: Any = None,
                   extra_tags: dict[str, Any] | None = None, claimed_run_id: str | None = None) -> ExperimentResult:
    """Train ``cfg`` and (unless ``evaluate=False``) evaluate it on ``cfg.eval.split``; log all to MLflow.

    ``resume_run_id`` reopens that MLflow run and resumes training from its last checkpoint in
    ``run_dir`` (default: the directory recorded on the run); it refuses while a live process on
    this host still trains that run (see :mod:`rftbench.tracking.recovery`). ``callbacks`` are extra
    :class:`rftbench.training.Callback` objects (e.g. Optuna pruning). ``claimed_run_id``: an
    MLflow run created (and claimed) beforehand by :mod:`rftbench.experiments.gridrun` to train in afresh.
    """
    validate_names(cfg)
    check_output_dir(cfg.output_dir)
    check_tracking_uri(tracking_uri or default_tracking_uri())
    check_store(tracking_uri or default_tracking_uri(), offline_ok=cfg.tracking.offline_ok)

    from ..training.distributed import announce_run, init_distributed, send_to_ranks

    dist_info = init_distributed(cfg.train.device)
    if dist_info.active:
        from ..tracking.recovery import exit_with_launcher

        exit_with_launcher()  # a rank never outlives a killed torchrun
    if not dist_info.is_main:  # torchrun: ranks > 0 train, rank 0 records
        return _train_follower(cfg, resume_run_id is not None, callbacks)
    if resume_run_id is not None:
        run_dir = _resumable_run_dir(cfg, resume_run_id, run_dir, tracking_uri)
    task = build_task(cfg)
    tags = _run_tags(cfg, run_dir, extra_tags)
    with start_spooled_run(cfg.experiment, cfg.name, tags=tags, uri=tracking_uri, parent_run_id=parent_run_id,
                           run_id=resume_run_id or claimed_run_id, offline_ok=cfg.tracking.offline_ok,
                           sync_wait_s=cfg.tracking.sync_wait_s,
                           max_bytes=int(cfg.tracking.spool_max_mb * 2**20)) as tracker:
        if claimed_run_id is not None:
            tracker.set_tags(tags)
        rdir = run_dir_for(cfg, tracker.run_id, run_dir)
        rdir.mkdir(parents=True, exist_ok=True)
        tracker.attach(rdir)
        announce_run(tracker.run_id)  # to `rftbench train --nproc`, which ends it should rank 0 die
        if dist_info.active:
            send_to_ranks(str(rdir))  # where every rank finds the state it resumes from
        if resume_run_id is None:
            _log_run_inputs(tracker, cfg, task, rdir)
        result = train(cfg, run_dir=rdir, task=task, tracker=tracker, resume=resume_run_id is not None,
                       callbacks=callbacks, progress=progress)
        _log_training(tracker, result)
        if cfg.train.log_mlflow_model:
            _best_effort(log_pytorch_model, tracker, result.model, example_batch(task.splits.test))
        record = _evaluate_and_log(tracker, cfg, task, result, rdir, resume_run_id is not None) if evaluate else None
        return ExperimentResult(tracker.run_id, result, record, rdir)


def run_dir_for(cfg: ExperimentConfig, run_id: str, recorded: str | Path | None = None) -> Path:
    """A run's directory (checkpoint, tracking spool), absolute: ``recorded`` (the run's
    ``rftbench.run_dir`` tag, or ``--run-dir``) or else ``output_dir/RUN_ID``, which is also where
    a run killed before that tag reached the store keeps them."""
    return Path(recorded or Path(cfg.output_dir) / run_id).resolve()


def check_output_dir(output_dir: str | Path) -> None:
    """Refuse an ``output_dir`` that cannot be a directory (it, or a parent, is a file)."""
    p = Path(output_dir).expanduser()
    for q in (p, *p.parents):
        if q.exists():
            if not q.is_dir():
                raise ConfigError(f"output_dir {str(output_dir)!r} cannot be created: {q} is a file. "
                                  f"Set output_dir to a directory path.")
            return


def _run_tags(cfg: ExperimentConfig, run_dir: str | Path | None, extra: dict[str, Any] | None) -> dict[str, Any]:
    """The tags a run is created (or reopened) with. A run directory given explicitly
    (``--run-dir``) is among them, so it is in the store as soon as the run is, however early
    the run dies (it is not where a resume would look otherwise)."""
    tags = {"rftbench.schedule": cfg.schedule.name, "rftbench.model": cfg.model.name,
            "rftbench.dataset": cfg.data.name, "rftbench.kind": "experiment", **(extra or {})}
    if run_dir is not None:
        tags["rftbench.run_dir"] = str(Path(run_dir).resolve())
    return tags


def _resumable_run_dir(cfg: ExperimentConfig, run_id: str, run_dir: str | Path | None,
                       uri: str | None) -> str | Path | None:
    """The checkpoint directory of run ``run_id`` (``run_dir`` when given, else the one recorded
    on the run, else None: the default one) after checking it may be resumed: a FINISHED run is
    refused (:class:`RunFinishedError`, its status untouched), and so is a run that records no
    directory while its default one does not exist (:class:`CheckpointError`): it was started
    with ``--run-dir`` and killed before that reached the store, and resuming it anywhere else
    would silently train it from scratch."""
    from ..tracking.recovery import check_resumable, run_dir_of

    run = check_resumable(run_id, uri=uri)
    if run.info.status == "FINISHED":
        raise RunFinishedError(f"run {run_id} ({run.info.run_name}) is FINISHED already: there is nothing to "
                               f"resume, and it is left as it is. Start a new run to train again.")
    run_dir = run_dir or run_dir_of(run)
    default = run_dir_for(cfg, run_id)
    if run_dir is None and not default.is_dir():
        raise CheckpointError(
            f"run {run_id} ({run.info.run_name}) records no run directory (it was killed before its "
            f"rftbench.run_dir tag reached the tracking store) and its default one, {default}, does not exist: it "
            f"was started with --run-dir. Resume it with `rftbench train --resume {run_id} --run-dir DIR`, DIR "
            f"being that directory (the one holding its state.pt); nothing was trained again.")
    return run_dir


def _train_follower(cfg: ExperimentConfig, resume: bool, callbacks: Iterable[Callback]) -> ExperimentResult:
    """A rank > 0 of a torchrun job: the same training, nothing logged or written. Its run
    directory is rank 0's (sent once rank 0 knows it), so on resume every rank reads the same
    ``state.pt`` (across machines the directory must be on a shared file system)."""
    from ..training.distributed import RankLost, receive_from_main

    task = build_task(cfg)
    try:
        rdir = Path(receive_from_main())
    except RuntimeError as exc:
        raise RankLost("rank 0 stopped before training started; its output says why") from exc
    result = train(cfg, run_dir=rdir, task=task, resume=resume, callbacks=callbacks)
    return ExperimentResult("", result, None, rdir)


def _log_run_inputs(tracker: Tracker, cfg: ExperimentConfig, task: Task, rdir: Path) -> None:
    splits = task.splits
    tracker.log_params(cfg.flat())
    tracker.log_params({"data.n_train": len(splits.train), "data.n_val": len(splits.val),
                        "data.n_test": len(splits.test), "data.num_classes": splits.num_classes})
    tracker.log_text(dump_config(cfg), "config.yaml")
    tracker.log_dict(splits.info, "splits.json")
    augment = splits.info.get("augment")
    if augment:  # the resolved training augmentation (data.augment may say only `true`)
        tracker.log_params({"data.augment_preset": augment["preset"]})
        tracker.set_tags({"rftbench.augment": str(augment["transform"])[:5000]})
    _best_effort(log_dataset_inputs, tracker, cfg, splits)
    tracker.set_tags({"rftbench.run_dir": str(rdir.resolve())})


def _best_effort(fn: Any, tracker: Any, *args: Any) -> None:
    """The MLflow model and the dataset inputs: extras that go through the spool like the rest,
    but whose preparation (saving the model with MLflow) may fail without costing the run."""
    try:
        fn(tracker, *args)
    except Exception as exc:  # noqa: BLE001 - an extra must not stop a trained run
        import logging

        logging.getLogger(__name__).warning("%s not logged to MLflow (%s: %s)", fn.__name__,
                                            type(exc).__name__, str(exc)[:300])


def _log_training(tracker: Tracker, result: TrainResult) -> None:
    tracker.log_metrics({"train/wall_time_s": result.wall_time_s, "train/attack_steps": result.attack_steps,
                         "train/total_steps": result.total_steps,
                         "train/attack_fraction": result.attack_steps / max(1, result.total_steps)})
    info = result.info
    tracker.set_tags({"rftbench.weights_sha256": weights_sha256(result.model), "rftbench.weights": info["weights"],
                      "rftbench.regime": info["regime"], "rftbench.trainable_params": info["trainable_params"]})
    tracker.log_artifact(result.checkpoint, "model")
    tracker.log_artifact(Path(str(result.checkpoint) + ".json"), "model")
    if info.get("other_checkpoint") is not None:  # the EMA's or the raw weights, whichever was not scored
        tracker.log_artifact(info["other_checkpoint"], "model")
        tracker.log_artifact(Path(str(info["other_checkpoint"]) + ".json"), "model")


def _evaluate_and_log(tracker: Tracker, cfg: ExperimentConfig, task: Task, result: TrainResult,
                      rdir: Path, resume: bool = False) -> EvaluationRecord:
    split = cfg.eval.split
    state = rdir / "evaluation.state.json"  # finished blocks of an interrupted evaluation; resumed with the run
    if not resume:
        state.unlink(missing_ok=True)
    record = evaluate_model(result.model, task.splits.split(split), cfg, device=task.device,
                            dataset_name=cfg.data.name, split=split, state_path=state)
    info = result.info
    record.data["train"] = {"wall_time_s": result.wall_time_s, "attack_steps": result.attack_steps,
                            "total_steps": result.total_steps, "schedule": info["schedule"], "regime": info["regime"],
                            "trainable_params": info["trainable_params"], "weights": info["weights"]}
    if info.get("other_model") is not None:  # train.ema.evaluate: both
        other = evaluate_model(info["other_model"], task.splits.split(split), cfg, device=task.device,
                               dataset_name=cfg.data.name, split=split)
        record.data["also_scored"] = {"weights": info["other_weights"], "clean_accuracy": other["clean_accuracy"],
                                      "expected_robustness": other["expected_robustness"],
                                      "autoattack": other["autoattack"]}
    record.data["mlflow_run_id"] = tracker.run_id
    log_record_metrics(tracker, record, step=cfg.train.epochs if split != "test" else 0)
    tracker.set_tags({**_record_tags(record), **leaderboard_tags(record)})
    rec_path = record.save(rdir / "evaluation.json")
    csv_path = write_curve_csv(record, rdir / "robustness_curve.csv")
    png_path = plot_robustness_curves({cfg.name: (record["sweep"]["eps_grid"], record["sweep"]["accuracy"])},
                                      rdir / "robustness_curve.png",
                                      title=f"{cfg.name}: {record['sweep'].get('attack', 'sweep')} sweep")
    for p in (rec_path, csv_path, png_path):
        tracker.log_artifact(p, "evaluation")
    return record


def _record_tags(record: EvaluationRecord) -> dict[str, Any]:
    return {"rftbench.certified": record["certified"], "rftbench.flagged": bool(record.data.get("flagged", False)),
            "rftbench.er_name": record["expected_robustness"]["name"],
            "rftbench.warnings": " | ".join(record["warnings"])[:5000]}


def evaluation_state_path(cfg: ExperimentConfig, out: str | Path | None = None,
                          shard: tuple[int, int] | None = None) -> Path:
    """Where ``rftbench evaluate`` keeps the resumable state of an evaluation: beside ``out``
    (``OUT.state.json``), else ``output_dir/evaluations/<name>-<config hash>[-shard-i-of-N].state.json``."""
    if out is not None:
        return Path(str(out) + ".state.json")
    digest = hashlib.sha256(dump_config(cfg).encode()).hexdigest()[:10]
    suffix = f"-shard-{shard[0]}-of-{shard[1]}" if shard else ""
    return Path(cfg.output_dir) / "evaluations" / f"{cfg.name}-{digest}{suffix}.state.json"


def evaluate_config(cfg: ExperimentConfig, *, tracking_uri: str | None = None, log: bool = True,
                    out: str | Path | None = None, shard: tuple[int, int] | None = None,
                    reference: EvaluationRecord | None = None, resume: bool = False,
                    on_block: Any = None, allow_fresh_head: bool = False) -> tuple[EvaluationRecord, Optional[str]]:
    """Evaluate ``cfg.model`` as it is (no training) on ``cfg.eval.split`` of ``cfg.data``.

    Works on any registry model (``file:``, ``timm:``, ...); a ``file:`` checkpoint keeps its own
    head. With ``log`` the record goes to a new MLflow run tagged ``rftbench.kind=evaluation``
    (``evaluation-shard`` for ``shard=(i, N)``: merge the shard records with ``rftbench evaluate
    merge``); returns the record and the run id. ``reference``: a stored record whose clean
    results must reproduce.

    The finished blocks are kept in :func:`evaluation_state_path`: SIGTERM / SIGINT stop the
    evaluation at a block boundary (an MLflow run then records it as KILLED) and ``resume``
    continues from them with the numbers of an uninterrupted evaluation.
    """
    load_plugins(cfg)
    state = evaluation_state_path(cfg, out, shard)
    if resume and not state.is_file():
        raise RecordError(f"no saved evaluation state at {state} to resume from; evaluate without --resume "
                          f"(with the same config, --out and --shard as the interrupted evaluation).")
    if not resume:
        state.unlink(missing_ok=True)
    task = build_task(cfg, keep_head=True)
    if not allow_fresh_head:
        check_trained_head(cfg, task.model)
    split = cfg.eval.split
    name = f"eval:{cfg.name}" + (f" shard {shard[0]}/{shard[1]}" if shard else "")
    tags = {"rftbench.model": cfg.model.name, "rftbench.dataset": cfg.data.name,
            "rftbench.eval_state": str(state.resolve())}
    # the run is created before the evaluation starts, so that MLflow's start and end times are the
    # evaluation's own; an interruption ends it KILLED (its tag says where the state to resume is)
    with _evaluation_run(cfg.experiment, name, shard, tags, tracking_uri, log) as tracker:
        if tracker is not None:
            tracker.log_params(cfg.flat())
        record = evaluate_model(task.model, task.splits.split(split), cfg, device=task.device,
                                dataset_name=cfg.data.name, split=split, shard=shard, reference=reference,
                                state_path=state, on_block=on_block)
        record.data["experiment"] = cfg.experiment
        if tracker is not None:
            _log_record(tracker, record)
    if out is not None:
        record.save(out)
    return record, tracker.run_id if tracker is not None else None


@contextmanager
def _evaluation_run(experiment: str, run_name: str, shard: Any, tags: dict[str, Any], uri: str | None,
                    log: bool = True) -> Iterator[Optional[Tracker]]:
    """A RUNNING MLflow run of kind ``evaluation`` (``evaluation-shard`` when ``shard`` is set) for
    the length of the block, ended FINISHED, FAILED or KILLED as the block ends; None without ``log``."""
    if not log:
        yield None
        return
    all_tags = {"rftbench.kind": "evaluation-shard" if shard else "evaluation", "rftbench.schedule": "(as given)",
                **tags}
    with start_run(experiment, run_name, tags=all_tags, uri=uri) as tracker:
        yield tracker


def check_trained_head(cfg: ExperimentConfig, model: Any) -> None:
    """Refuse to evaluate a model whose classifier head was never trained for ``cfg.data`` (its
    families mark a head they replaced or initialised: ``model.fresh_head``): its accuracy would
    be meaningless (chance level)."""
    head_task = getattr(model, "head_task", None)  # the dataset (and options) the head was trained on
    same_task = head_task is None or (head_task["name"] == cfg.data.name and all(
        cfg.data.options.get(k) == v for k, v in head_task["options"].items()))
    if not getattr(model, "fresh_head", False) and same_task:
        return
    raise ConfigError(f"{cfg.model.name} has no classifier head trained for dataset {cfg.data.name!r}: evaluating "
                      f"it would score a freshly initialised head (chance-level numbers). Evaluate a fine-tuned "
                      f"checkpoint (--model file:RUN_DIR/model.safetensors, written by `rftbench train`), or pass "
                      f"--allow-fresh-head if that is really what you want.")


def log_evaluation_record(record: EvaluationRecord, *, experiment: str, run_name: str,
                          params: dict[str, Any] | None = None, tags: dict[str, Any] | None = None,
                          uri: str | None = None) -> str:
    """Log one evaluation record (e.g. a merge of shard records) to a new MLflow run: see
    :func:`_log_record`; ``params`` and ``tags`` go on the run too. Returns the run id."""
    shard = record.data.get("shard")
    arch = (record["model"].get("arch") or {}).get("name", "?")
    with _evaluation_run(experiment, run_name, shard, {"rftbench.model": arch, **(tags or {})}, uri) as tracker:
        if params:
            tracker.log_params(params)
        _log_record(tracker, record)
        return tracker.run_id


def _log_record(tracker: Tracker, record: EvaluationRecord) -> None:
    """The record as artifact, its numbers as ``eval/*`` metrics (a shard logs only its
    ``eval/time_s``: the leaderboard sees whole evaluations alone), its certification, ER name and
    warnings as tags."""
    shard = record.data.get("shard")
    if shard:
        tracker.log_metrics({f"{split_prefix(record['split'])}/time_s": record["timings"]["total_s"]})
    else:
        log_record_metrics(tracker, record)
    tracker.set_tags({"rftbench.dataset": record["dataset"], **_record_tags(record),
                      **({} if shard else leaderboard_tags(record)),
                      "rftbench.weights_sha256": record["model"]["weights_sha256"],
                      "rftbench.shard": f"{shard['index']}/{shard['count']}" if shard else ""})
    tracker.log_dict(record.data, "evaluation.json", "evaluation")
