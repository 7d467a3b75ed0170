"""The trainer's side jobs as callbacks: MLflow metrics and heartbeat, progress display,
checkpointing, stop on SIGTERM/SIGINT, Optuna pruning and per-epoch user functions.

A :class:`Callback` overrides any of its hooks (after Lightning's). The trainer calls every
callback's hook in list order:

- ``on_run_start(trainer)``: once, after a resumed state is restored (``trainer.resumed_from``);
- ``reuse_epoch(trainer, epoch)``: before an epoch is trained from its first batch; a callback
  may return the :class:`~rftbench.training.state.TrainingState` an identical run reached at the
  epoch's end (:class:`~rftbench.training.prefix.SharedPrefix`): the trainer restores it instead
  of training the epoch, then calls ``on_epoch_end`` with the metrics recorded in it;
- ``on_batch_end(trainer, batch)``: after every batch (:class:`BatchEnd`; ``batch.stats`` holds
  the window statistics on logging steps, every ``train.log_every`` batches);
- ``on_checkpoint(trainer, path)``: after ``state.pt`` was written (by any callback);
- ``on_epoch_end(trainer, epoch, metrics)``: after the epoch's metrics and validation;
- ``on_run_end(trainer, result)``: after training finished (final weights saved);
- ``on_exception(trainer, exc)``: when anything raised, a callback included (then the run
  stops: the exception propagates after every callback's ``on_exception``).

A hook may raise to stop the run (an Optuna ``TrialPruned``, :class:`TrainingInterrupted`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional

from .progress import TrainProgress

if TYPE_CHECKING:
    from .state import TrainingState
    from .trainer import TrainResult, Trainer

EpochCallback = Callable[[int, dict[str, float]], None]


class TrainingInterrupted(KeyboardInterrupt):
    """SIGTERM or SIGINT stopped training after checkpointing at the next optimizer step (a
    KeyboardInterrupt, so that the MLflow run ends KILLED, not FAILED)."""


@dataclass(frozen=True)
class BatchEnd:
    """What happened on one batch. ``batch`` is its index in the epoch (0-based), ``step`` the
    batches done in the whole run (1-based, the MLflow step of ``train_step/*``), ``eps`` its eps
    (pixel units); ``optimizer_step``: it ended an accumulation group; ``stats``: the window
    statistics (``loss``, ``eps``, ``lr``, ``images_per_s``, ``acc_clean``, ``acc_adv``,
    ``acc_clean_attacked``, ``attacked_frac``: :meth:`~rftbench.training.step.BatchMeter.values`)
    on logging steps, else None."""

    epoch: int
    batch: int
    step: int
    eps: float
    optimizer_step: bool
    last_in_epoch: bool
    stats: Optional[dict[str, float]] = None


class Callback:
    """Base class: every hook does nothing. See the module docstring for when each is called."""

    def on_run_start(self, trainer: "Trainer") -> None:
        pass

    def reuse_epoch(self, trainer: "Trainer", epoch: int) -> Optional["TrainingState"]:
        return None

    def on_batch_end(self, trainer: "Trainer", batch: BatchEnd) -> None:
        pass

    def on_checkpoint(self, trainer: "Trainer", path: Any) -> None:
        pass

    def on_epoch_end(self, trainer: "Trainer", epoch: int, metrics: Mapping[str, float]) -> None:
        pass

    def on_run_end(self, trainer: "Trainer", result: "TrainResult") -> None:
        pass

    def on_exception(self, trainer: "Trainer", exc: BaseException) -> None:
        pass


class MlflowCallback(Callback):
    """Metrics and liveness tags into one MLflow run (a :class:`rftbench.tracking.store.Tracker`).

    ``train_step/*`` window metrics at step = batches done, ``train/*`` and ``val/*`` epoch metrics
    at step = epoch; the process tags, the torch thread count (``rftbench.torch_threads``, with
    ``rftbench.torch_threads_why``) and a heartbeat (:mod:`rftbench.tracking.recovery`) at the start, on
    every logging step and epoch end; ``rftbench.resumed_from`` on a resumed run. The per-step
    calls are marked ``per_step`` (what a full tracking spool drops first).
    """

    def __init__(self, tracker: Any):
        from ..tracking.recovery import heartbeat_tags, process_tags

        self.tracker, self._heartbeat, self._process_tags = tracker, heartbeat_tags, process_tags

    def on_run_start(self, trainer):
        self.tracker.set_tags({**self._process_tags(), "rftbench.torch_threads": str(trainer.threads),
                               "rftbench.torch_threads_why": trainer.threads_why})
        if trainer.resumed_from:
            self.tracker.set_tags({"rftbench.resumed_from": json.dumps(trainer.resumed_from)})

    def on_batch_end(self, trainer, batch):
        if batch.stats is not None:
            self.tracker.log_metrics({f"train_step/{k}": v for k, v in batch.stats.items()}, step=batch.step,
                                     per_step=True)
            self.tracker.set_tags(self._heartbeat(), per_step=True)

    def on_epoch_end(self, trainer, epoch, metrics):
        self.tracker.log_metrics(metrics, step=epoch)
        self.tracker.set_tags(self._heartbeat())


class ProgressCallback(Callback):
    """Drives a :class:`~rftbench.training.progress.TrainProgress` (rich bar, plain lines or off)."""

    def __init__(self, progress: TrainProgress):
        self.progress = progress

    def on_run_start(self, trainer):
        plan = trainer.plan
        self.progress.start(name=trainer.cfg.name, epochs=plan.epochs, steps_per_epoch=plan.steps_per_epoch,
                            done_steps=trainer.start_epoch * plan.steps_per_epoch + trainer.start_batch)

    def on_batch_end(self, trainer, batch):
        self.progress.advance(batch.step)
        if batch.stats is not None:
            self.progress.update({"epoch": batch.epoch, "step": batch.step, **batch.stats})

    def on_epoch_end(self, trainer, epoch, metrics):
        self.progress.epoch_end(epoch, metrics)

    def on_run_end(self, trainer, result):
        self.progress.close()

    def on_exception(self, trainer, exc):
        self.progress.close()


class CheckpointCallback(Callback):
    """Writes ``state.pt`` (:meth:`Trainer.save_state`) every ``every_epochs`` epochs and at the
    last one, and every ``every_steps`` optimizer steps within an epoch (0: never mid-epoch)."""

    def __init__(self, every_epochs: int = 1, every_steps: int = 0):
        self.every_epochs, self.every_steps = every_epochs, every_steps

    def on_batch_end(self, trainer, batch):
        if (self.every_steps and batch.optimizer_step and not batch.last_in_epoch
                and trainer.step.opt_steps % self.every_steps == 0):
            trainer.save_state(batch.epoch, batch.batch + 1)

    def on_epoch_end(self, trainer, epoch, metrics):
        if (epoch + 1) % self.every_epochs == 0 or epoch + 1 == trainer.plan.epochs:
            trainer.save_state(epoch + 1, 0)


class SignalStop(Callback):
    """SIGTERM / SIGINT become a request to stop at the next optimizer step (or epoch end):
    the state is saved there (unless it just was) and :class:`TrainingInterrupted` raised. A
    second signal interrupts at once. Handlers are installed only in the main thread (where
    Python delivers signals) and restored when the run ends."""

    def __init__(self):
        from ..signals import StopRequest

        self._signals = StopRequest("training")

    @property
    def requested(self) -> Optional[str]:
        """The name of the signal that asked to stop (None: none yet)."""
        return self._signals.requested

    @requested.setter
    def requested(self, value: Optional[str]) -> None:
        self._signals.requested = value

    def on_run_start(self, trainer):
        self._signals.install()

    def _stop(self, trainer, epoch: int, next_batch: int) -> None:
        if trainer.saved_at != (epoch, next_batch):
            trainer.save_state(epoch, next_batch)
        raise TrainingInterrupted(f"{self.requested} received: training stopped with its state saved at epoch "
                                  f"{epoch}, batch {next_batch} in {trainer.state_path}; resume with "
                                  f"`rftbench train CONFIG --resume RUN_ID`.")

    def on_batch_end(self, trainer, batch):
        if self.requested is not None and batch.optimizer_step:
            self._stop(trainer, batch.epoch, batch.batch + 1)

    def on_epoch_end(self, trainer, epoch, metrics):
        if self.requested is not None:
            self._stop(trainer, epoch + 1, 0)

    def on_run_end(self, trainer, result):
        self._signals.restore()

    def on_exception(self, trainer, exc):
        self._signals.restore()


class PerEpochCallback(Callback):
    """Calls ``fn(epoch, metrics)`` after every epoch (``metrics``: ``train/*`` and, on
    validation epochs, ``val/*``); ``fn`` may raise to stop the run."""

    def __init__(self, fn: EpochCallback):
        self.fn = fn

    def on_epoch_end(self, trainer, epoch, metrics):
        self.fn(epoch, dict(metrics))


class OptunaPruning(Callback):
    """Reports ``monitor`` (default validation ER) to an Optuna ``trial`` after every epoch that
    has it, and raises ``optuna.TrialPruned`` when the study's pruner says so (the MLflow run
    then ends KILLED with an ``rftbench.pruned`` tag)."""

    def __init__(self, trial: Any, monitor: str = "val/expected_robustness"):
        self.trial, self.monitor = trial, monitor

    def on_epoch_end(self, trainer, epoch, metrics):
        value = metrics.get(self.monitor)
        if value is None:
            return
        self.trial.report(value, epoch)
        if self.trial.should_prune():
            import optuna

            short = self.monitor.split("/")[-1].replace("expected_robustness", "ER")
            raise optuna.TrialPruned(f"pruned at epoch {epoch} (val {short} {value:.4f})")
