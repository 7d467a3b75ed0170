"""The robust fine-tuning trainer: :class:`Trainer` (run / epoch / batch) and :func:`train`.

At every step (or epoch, ``schedule.granularity``) the schedule plugin sets eps, scaled to
``threat.eps``; at eps = 0 the attack is skipped entirely, so that phase costs what plain
fine-tuning costs. One batch is one :class:`~rftbench.training.step.TrainStep` call (attack,
objective, backward, optimizer step), the code path ``benchmarks/perf_train.py`` times.
Side jobs (MLflow, progress, checkpoints, signals, pruning) are callbacks
(:mod:`rftbench.training.callbacks`).

Training accuracies are those of the model as it trains (its training mode, the weights
before the batch's step): ``train/acc_clean`` on the clean images of every batch (from the
objective's clean forward, else one extra no-grad forward), ``train/acc_adv`` on the
adversarial examples of the attacked batches, ``train/acc_clean_attacked`` the clean accuracy
on those same batches and ``train/attacked_frac`` their share; ``val/acc_clean`` is the
eval-mode one. Batch statistics are accumulated on the device and read back only on logging steps,
checkpoints and epoch ends (on CPU the loss is also checked after every batch, which costs
nothing there). Validation runs under a forked RNG, so neither it nor logging changes the
trained weights. On CPU with ``data.num_workers: 0`` a run resumed from ``state.pt`` ends with
weights bit-identical to an uninterrupted one. A non-finite loss raises
:class:`TrainingDivergedError` before any later checkpoint is written, so ``state.pt`` stays the
last good one.
"""
from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

import torch
from torch.utils.data import DataLoader

from ..config import ExperimentConfig
from ..data import EpochSampler
from ..errors import CheckpointError, ConfigError, RankFailedError, RftbenchError, TrainingDivergedError
from .threads import set_torch_threads
from ..models import PixelModel, save_checkpoint
from ..objectives import create_objective
from ..regimes import Regime, create_regime, set_trainable
from ..scheduling import create_schedule
from .callbacks import BatchEnd, Callback, CheckpointCallback, MlflowCallback, ProgressCallback, SignalStop
from . import distributed as ddp
from .optim import current_lr, group_lr, lr_factor, make_lr_schedule, make_optimizer
from .ema import WeightsEma
from .phases import RegimePhases
from .plan import BatchPlan, EpsController
from .progress import TrainProgress, make_progress
from .state import STATE_FILE, TrainingState, resume_config, rng_state, set_rng_state
from .step import BatchMeter, TrainStep, amp_setup

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    model: PixelModel
    history: list[dict[str, float]]  # per epoch: {"epoch", "train/...", "val/..."}
    checkpoint: Optional[Path]  # final weights (safetensors + arch json); None without a run_dir
    wall_time_s: float
    attack_steps: int  # batches on which the attack ran
    total_steps: int  # batches in the whole run
    info: dict[str, Any] = field(default_factory=dict)


def _rng_devices(device: torch.device) -> list[int]:
    return [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []


class Trainer:
    """Robustly fine-tunes ``task.model`` (on ``task.device``) on ``task.splits.train`` as
    ``cfg.train`` / ``cfg.attack`` / ``cfg.schedule`` / ``cfg.threat`` say.

    ``task``: anything with ``model`` (a :class:`PixelModel` already on ``device``), ``splits``
    and ``device`` (:class:`rftbench.task.Task`). ``run_dir`` holds ``state.pt`` and the final
    ``model.safetensors`` (None: nothing is written). ``callbacks`` run in order (see
    :mod:`rftbench.training.callbacks`). ``validate``: run :func:`rftbench.evaluation.evaluate.quick_robustness`
    on the validation split (the test split if there is none) every ``train.val_every`` epochs
    and at the last one. ``distributed``: train with the torchrun job's other ranks (DDP) when
    this process is one of them; False: alone in this process (e.g. a one-off pretraining).
    Construction sets torch's CPU threads (``train.threads``, else rftbench's rule:
    :func:`rftbench.training.threads.set_torch_threads`); ``threads`` holds the count.
    """

    def __init__(self, cfg: ExperimentConfig, task: Any, *, run_dir: str | Path | None = None,
                 callbacks: Iterable[Callback] = (), validate: bool = True, distributed: bool = True):
        self.cfg, self.task, self.validate, self.distributed = cfg, task, validate, distributed
        self.threads, self.threads_why = set_torch_threads(cfg.train.threads)  # (count, why): the run's tags
        self.model, self.device, self.splits = task.model, task.device, task.splits
        self.callbacks = list(callbacks)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.state_path = self.run_dir / STATE_FILE if self.run_dir is not None else None
        self._build()
        self.history: list[dict[str, float]] = []
        self.attack_steps, self.epoch_time, self.elapsed = 0, 0.0, 0.0
        self.epochs_reused = 0  # epochs restored from a callback's stored state instead of trained
        self.start_epoch, self.start_batch = 0, 0
        self.resumed_from: Optional[dict[str, int]] = None
        self.saved_at: Optional[tuple[int, int]] = None
        self._t_start = self._t_epoch = time.perf_counter()
        self._cfg_json = None

    def _build(self) -> None:
        cfg, tc, ac, device = self.cfg, self.cfg.train, self.cfg.attack, self.device
        amp_dtype, scaler = amp_setup(tc.precision, device)
        self.schedule = create_schedule(cfg.schedule.name, cfg.schedule.params)
        self.objective = create_objective(tc.objective)
        self.regime = create_regime(cfg.model.regime)
        self.regime.prepare(self.model)  # a regime that does not fit the model fails before any work
        if len(self.splits.train) == 0:
            raise ConfigError(f"dataset {cfg.data.name!r} has an empty training split.")
        if tc.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.dist = ddp.current() if self.distributed else ddp.DistInfo()
        plan = self.plan = BatchPlan(len(self.splits.train), cfg.data.batch_size, cfg.accum_steps(), tc.epochs)
        if self.dist.active:
            ddp.check_batches(plan, self.dist.world)
        # DDP registers the parameters that require a gradient when it wraps: every one the regime ever trains
        set_trainable(self.model, self.regime.in_optimizer(self.model))
        train_model = (ddp.wrap_model(self.model, device, tc.batchnorm == "sync", bool(self.regime.boundaries()))
                       if self.dist.active else self.model)
        attack = None
        if self.objective.uses_attack:
            from ..attacks import TrainAttack

            attack = TrainAttack(self.model, self.objective.attack or ac.name, cfg.threat.norm, ac.steps,
                                 ac.step_ratio, ac.random_start, ac.bn_mode)
        self.sampler = EpochSampler(plan.n_train, cfg.seed)
        self.loader_gen = torch.Generator()  # worker seeds come from here, not from the training RNG stream
        if self.dist.active:  # each rank: its slice of every global batch
            self.batch_sampler = ddp.ShardedBatchSampler(self.sampler, plan, self.dist.rank, self.dist.world)
            self.loader = DataLoader(self.splits.train, batch_sampler=self.batch_sampler,
                                     num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda",
                                     generator=self.loader_gen)
        else:
            self.loader = DataLoader(self.splits.train, batch_size=plan.batch_size, sampler=self.sampler,
                                     num_workers=cfg.data.num_workers, drop_last=plan.drop_last,
                                     pin_memory=device.type == "cuda", generator=self.loader_gen)
        self.phases = RegimePhases(self.regime, self.model, plan, cfg)
        self.optimizer = make_optimizer(self.model, cfg, self.regime)
        self.warmup_steps = round(tc.warmup_epochs * plan.opt_steps_per_epoch)
        self.lr_schedule = make_lr_schedule(self.optimizer, plan.epochs * plan.opt_steps_per_epoch, self.warmup_steps,
                                            self.phases.restart_steps())
        moved = self.regime.eps_progress if type(self.regime).eps_progress is not Regime.eps_progress else None
        self.eps_ctl = EpsController(self.schedule, cfg.threat.eps, cfg.schedule.granularity,
                                     plan.steps_per_epoch, plan.epochs, moved)
        self.step = TrainStep(train_model, self.objective, attack, self.optimizer, self.lr_schedule, device=device,
                              amp_dtype=amp_dtype, scaler=scaler, grad_clip=tc.grad_clip,
                              channels_last=tc.channels_last)
        self.ema = WeightsEma(self.model.net, tc.ema) if tc.ema is not None else None
        self.epoch_meter, self.window = BatchMeter(device), BatchMeter(device)
        self._sync_every_step = device.type == "cpu"  # a sync is free on CPU: stop at the first bad loss
        self.phases.enter(0)

    # ------------------------------------------------------------ the loop
    def run(self, resume: bool = False) -> TrainResult:
        """Train all ``train.epochs`` epochs (with ``resume``, from ``state.pt`` if there is one)."""
        self._resume_if_asked(resume)
        ddp.clear_failure(self.run_dir, self.dist.rank, self.dist.world)  # (a DDP run resumed by one process too)
        self._t_start = time.perf_counter() - self.elapsed
        try:
            self._emit("on_run_start")
            for epoch in range(self.start_epoch, self.plan.epochs):
                first_batch = self.start_batch if epoch == self.start_epoch else 0
                if not (first_batch == 0 and self.reuse_epoch(epoch)):
                    self.epoch(epoch, first_batch)
            result = self._result()
            self._emit("on_run_end", result)
        except BaseException as exc:
            stop = self._peer_stop(exc) if self.dist.active else None
            self._emit_exception(stop or exc)
            if stop is not None:
                raise stop from exc
            raise
        return result

    def _peer_stop(self, exc: BaseException) -> Optional[BaseException]:
        """Under DDP, what ``exc`` means for the run: :class:`~rftbench.errors.RankFailedError` when
        another rank recorded an error of its own (read first, also when ``exc`` is a stop: the
        SIGTERM torchrun sends once that rank exited), :class:`~.distributed.RankLost` when a
        collective failed because another rank is gone (killed); else None (``exc`` is this
        rank's own failure, recorded for the others, or a stop)."""
        if isinstance(exc, RftbenchError):  # this rank's own error
            ddp.record_failure(self.run_dir, self.dist.rank, exc)
            return None
        failed = ddp.peer_failures(self.run_dir, self.dist.world)
        if failed:
            return RankFailedError(f"{'; '.join(failed)[:1500]}. This rank stopped with it (here: "
                                   f"{type(exc).__name__}); fix the cause, then resume with "
                                   f"`rftbench train CONFIG --resume RUN_ID`.")
        if isinstance(exc, KeyboardInterrupt):
            return None
        lost = ddp.lost_peers()
        if lost:  # a collective failed because another rank died: the run was killed, not failed
            return ddp.RankLost(f"{', '.join(lost)} of this DDP job was killed, so this rank stopped too; resume "
                                f"with `rftbench train CONFIG --resume RUN_ID` (any number of processes). Here: "
                                f"{type(exc).__name__}: {str(exc)[:120]}")
        ddp.record_failure(self.run_dir, self.dist.rank, exc)
        return None

    def epoch(self, epoch: int, first_batch: int = 0) -> dict[str, float]:
        """Train epoch ``epoch`` from batch ``first_batch`` on; return its metrics (``train/*``,
        and ``val/*`` on a validation epoch)."""
        if first_batch == 0:
            self.epoch_meter.reset()
            self.epoch_time = 0.0
        if self.dist.active:
            self.batch_sampler.set_epoch(epoch, first_batch)
        else:
            self.sampler.set_epoch(epoch, skip=first_batch * self.plan.batch_size)
        self.loader_gen.manual_seed(self.cfg.seed * 1_000_003 + epoch)
        self.window.reset()
        self._t_epoch = time.perf_counter()
        for b, (x, y) in enumerate(self.loader, start=first_batch):
            done = self.batch(epoch, b, x, y)
            self._emit("on_batch_end", done)
            if done.stats is not None:
                self.window.reset()
        self.raise_if_diverged()
        self._clock()
        metrics = self._epoch_metrics(epoch)
        self.history.append({"epoch": epoch, **metrics})
        self._emit("on_epoch_end", epoch, metrics)
        return metrics

    def reuse_epoch(self, epoch: int) -> bool:
        """Restore epoch ``epoch``'s end from the first callback that offers it (``reuse_epoch``
        hook) instead of training it, then run ``on_epoch_end`` with its recorded metrics; False
        when none does."""
        for cb in self.callbacks:
            st = cb.reuse_epoch(self, epoch)
            if st is None:
                continue
            if int(st.epoch) != epoch + 1 or int(st.batch) != 0 or not st.history:
                raise CheckpointError(f"{type(cb).__name__} offered a state at epoch {st.epoch}, batch {st.batch} "
                                      f"for the end of epoch {epoch}.")
            self._load_training(st)  # this run's clock and resumed_from stay its own
            self.epochs_reused += 1
            metrics = {k: v for k, v in self.history[-1].items() if k != "epoch"}
            self._emit("on_epoch_end", epoch, metrics)
            return True
        return False

    def batch(self, epoch: int, b: int, x: torch.Tensor, y: torch.Tensor) -> BatchEnd:
        """Train on batch ``b`` of epoch ``epoch`` (images ``x`` (N, C, H, W) in [0, 1], labels ``y``)."""
        plan, log_every = self.plan, self.cfg.train.log_every
        g = epoch * plan.steps_per_epoch + b
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        eps = self.eps_ctl.eps(epoch, b)
        log_now = bool(log_every) and (g + 1) % log_every == 0
        group_end = plan.group_end(b)
        weight, rows = plan.loss_weight(b), None
        phase = self.phases.phase_of(epoch, b)
        if phase != self.phases.current:  # e.g. LP-FT unfreezes the backbone
            self.phases.enter(phase)
        if self.dist.active:  # this rank's rows of the global batch, and their share of its loss
            n = plan.size_of(b)
            rows = (ddp.rank_rows(n, self.dist.rank, self.dist.world)[0], n)
            share = ddp.loss_share(len(y), n, self.dist.world)
            weight = weight if share == 1 else share * (1.0 if weight is None else weight)
        self.step(x, y, eps, step_index=g, loss_weight=weight, optimizer_step=group_end,
                  meters=(self.epoch_meter, self.window), rows=rows)
        if self.step.attack is not None and eps > 0:
            self.attack_steps += 1
        if group_end and self.ema is not None:
            self.ema.update(self.model.net, self.step.opt_steps)
        if self._sync_every_step or log_now:
            self.raise_if_diverged()
        stats = self._window_stats(eps) if log_now else None
        return BatchEnd(epoch, b, g + 1, eps, group_end, b + 1 == plan.steps_per_epoch, stats)

    # ------------------------------------------------------------ metrics
    def _window_stats(self, eps: float) -> dict[str, float]:
        if self.dist.active:
            _reduce(self.window)
        stats = self.window.values()
        stats["images_per_s"] = self.window.n / max(time.perf_counter() - self.window.t0, 1e-9)
        stats["eps"] = eps
        stats["lr"] = current_lr(self.optimizer)
        return stats

    def _epoch_metrics(self, epoch: int) -> dict[str, float]:
        if self.dist.active:
            _reduce(self.epoch_meter)
        metrics = {f"train/{k}": v for k, v in self.epoch_meter.values().items()}
        metrics.update({"train/lr": current_lr(self.optimizer),
                        "train/images_per_s": self.epoch_meter.n / max(self.epoch_time, 1e-9),
                        "train/epoch_time_s": self.epoch_time})
        head_lr = group_lr(self.optimizer, "head")
        if head_lr is not None:
            metrics["train/lr_head"] = head_lr
        val_every = self.cfg.train.val_every or self.plan.epochs
        if self.validate and self.dist.is_main and ((epoch + 1) % val_every == 0 or epoch + 1 == self.plan.epochs):
            metrics.update(self.validation_metrics())
        return metrics

    def validation_metrics(self) -> dict[str, float]:
        """``val/acc_clean``, ``val/acc_pgd``, ``val/expected_robustness`` on a fixed validation
        subset, under a forked RNG: validating (or not) never changes the training run."""
        from ..evaluation.evaluate import quick_robustness

        val_ds = self.splits.val if len(self.splits.val) else self.splits.test
        with torch.random.fork_rng(devices=_rng_devices(self.device), device_type=self.device.type):
            out = quick_robustness(self.model, val_ds, self.cfg, self.device, prefix="val/")
        self.phases.train_mode()
        return out

    def _clock(self) -> None:
        now = time.perf_counter()
        self.epoch_time += now - self._t_epoch
        self._t_epoch = now

    # ------------------------------------------------------------ state
    def raise_if_diverged(self) -> None:
        """Raise :class:`TrainingDivergedError` if any loss so far was not finite (one sync; under
        DDP on any rank, one all-gather: every rank calls this at the same points)."""
        bad = self.step.diverged_at()
        if self.dist.active:
            bad = ddp.earliest_bad(bad)
        if bad is None:
            return
        plan, tc = self.plan, self.cfg.train
        e, b = divmod(bad[0], plan.steps_per_epoch)
        kept = (f"The last good checkpoint is kept at {self.state_path}"
                if self.state_path is not None and self.state_path.is_file() else "No checkpoint was written before it")
        total = plan.epochs * plan.opt_steps_per_epoch
        lr = tc.lr * lr_factor(e * plan.opt_steps_per_epoch + b // plan.accum, total, self.warmup_steps)
        raise TrainingDivergedError(
            f"the training loss became {bad[1]} at epoch {e}, batch {b} (eps={self.eps_ctl.eps(e, b):.4g}, "
            f"lr={lr:.3g}). Lower train.lr, set train.grad_clip, or use train.precision: fp32. {kept}.")

    def capture_state(self, epoch: int, next_batch: int, meter: Optional[BatchMeter] = None) -> TrainingState:
        """The resumable state at position (``epoch``, ``next_batch``) (``meter``: the epoch's
        statistics, default this rank's)."""
        if self._cfg_json is None:
            self._cfg_json = json.dumps(resume_config(self.cfg))
        scaler = self.step.scaler
        return TrainingState(
            model=self.model.net.state_dict(), optimizer=self.optimizer.state_dict(),
            lr_schedule=self.lr_schedule.state_dict(), scaler=scaler.state_dict() if scaler else {}, rng=rng_state(),
            epoch=epoch, batch=next_batch, opt_steps=self.step.opt_steps, epoch_meter=(meter or self.epoch_meter).state(),
            epoch_time_s=self.epoch_time, history=self.history, attack_steps=self.attack_steps,
            elapsed_s=time.perf_counter() - self._t_start, config=self._cfg_json,
            ema=self.ema.state_dict() if self.ema is not None else None)

    def save_state(self, epoch: int, next_batch: int) -> Path:
        """Write ``state.pt`` for a run to continue at (``epoch``, ``next_batch``); never after a
        non-finite loss (the last good checkpoint stays)."""
        meter = None
        if self.dist.active:  # every rank reaches here; the epoch's statistics of all ranks, written by rank 0
            meter = copy.copy(self.epoch_meter)
            _reduce(meter)
        self.raise_if_diverged()  # under DDP a collective too: before the ranks part
        if not self.dist.is_main:
            self.saved_at = (epoch, next_batch)
            return self.state_path
        if self.state_path is None:
            raise ConfigError("this Trainer has no run_dir, so it cannot write a training state.")
        if next_batch:
            self._clock()  # mid-epoch: the epoch's time so far goes with the state
        self.capture_state(epoch, next_batch, meter).save(self.state_path)
        self.saved_at = (epoch, next_batch)
        self._emit("on_checkpoint", self.state_path)
        return self.state_path

    def restore_state(self, st: TrainingState) -> None:
        """Continue from ``st``: weights, optimizer, LR schedule, scaler, RNG, position, counters,
        clock and a half-done epoch's statistics (``resumed_from`` says where)."""
        self._load_training(st)
        self.elapsed = float(st.elapsed_s)
        if self.start_batch and self.dist.is_main:  # the saved statistics are those of all ranks
            self.epoch_meter.load(st.epoch_meter)
            self.epoch_time = float(st.epoch_time_s)
        self.resumed_from = {"epoch": self.start_epoch, "batch": self.start_batch}

    def _load_training(self, st: TrainingState) -> None:
        """What ``st`` holds of the training itself: weights, optimizer, LR schedule, scaler, RNG,
        position, history and counters."""
        self.model.net.load_state_dict(st.model)
        self.optimizer.load_state_dict(st.optimizer)
        self.lr_schedule.load_state_dict(st.lr_schedule)
        if self.step.scaler is not None and st.scaler:
            self.step.scaler.load_state_dict(st.scaler)
        if self.ema is not None:
            if not st.ema:
                raise KeyError("ema")
            self.ema.load_state_dict(st.ema)
        set_rng_state(st.rng)
        self.start_epoch, self.start_batch = int(st.epoch), int(st.batch)
        self.history, self.attack_steps = list(st.history or []), int(st.attack_steps)
        self.step.opt_steps = int(st.opt_steps if st.opt_steps is not None
                                  else self.start_epoch * self.plan.opt_steps_per_epoch)

    def _resume_if_asked(self, resume: bool) -> None:
        if not resume:
            return
        if self.state_path is not None and self.state_path.is_file():
            st = TrainingState.load(self.state_path, self.cfg)
            try:
                self.restore_state(st)
            except (RuntimeError, KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:
                raise CheckpointError(f"cannot resume from {self.state_path}: {_what_is_wrong(exc)}. The file does "
                                      f"not fit this run's model/optimizer; delete it to start the run from "
                                      f"scratch.") from None
        else:
            log.warning("no checkpoint %s to resume from: training starts from scratch", self.state_path)

    def _result(self) -> TrainResult:
        wall = time.perf_counter() - self._t_start
        self.model.eval()
        write = self.run_dir is not None and self.dist.is_main
        trainable = self.phases.trainable_count()
        if self.ema is not None:
            weights = self.ema.finish(self.model, self.run_dir if write else None, self.regime.finish)
        else:  # (LoRA's finish merges the adapters: the saved model is a plain one of its family)
            weights = {"weights": "raw"}
            self.regime.finish(self.model)
        ckpt = save_checkpoint(self.model, self.run_dir / "model.safetensors") if write else None
        plan = self.plan
        return TrainResult(self.model, self.history, ckpt, wall, self.attack_steps, plan.total_steps,
                           info={**weights, "regime": repr(self.regime), "trainable_params": trainable,
                                 "steps_per_epoch": plan.steps_per_epoch, "schedule": repr(self.schedule),
                                 "device": str(self.device), "resumed_from": self.resumed_from,
                                 "dropped_last_sample": plan.drop_last, "optimizer_steps": self.step.opt_steps,
                                 "epochs_reused": self.epochs_reused, "torch_threads": self.threads})

    # ------------------------------------------------------------ callbacks
    def _emit(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)

    def _emit_exception(self, exc: BaseException) -> None:
        """Every callback's ``on_exception``, even when one of them fails (it is logged)."""
        for cb in self.callbacks:
            try:
                cb.on_exception(self, exc)
            except Exception:  # noqa: BLE001 - cleanup must reach every callback
                log.exception("callback %s failed in on_exception", type(cb).__name__)


def _reduce(meter: BatchMeter) -> None:
    """Sum ``meter`` and its attacked-batches child over all DDP ranks, in place."""
    ddp.reduce_meter(meter)
    if meter.attacked is not None:
        ddp.reduce_meter(meter.attacked)


def _what_is_wrong(exc: BaseException) -> str:
    """The first line of a restore error (PyTorch's size-mismatch lists can run to pages)."""
    text = str(exc).strip().splitlines()
    first = next((line.strip() for line in text if "size mismatch" in line or "Missing key" in line), None)
    what = first or (text[0] if text else "")
    if isinstance(exc, KeyError):
        what = f"entry {exc} is missing"
    return f"{type(exc).__name__}: {what[:300]}"


def default_callbacks(cfg: ExperimentConfig, *, tracker: Any = None,
                      progress: Optional[TrainProgress] = None) -> list[Callback]:
    """What :func:`train` runs: MLflow (with a ``tracker``), checkpoints as ``cfg.train`` says,
    the progress display (default ``make_progress(cfg.train.progress)``) and signal stop."""
    out: list[Callback] = [MlflowCallback(tracker)] if tracker is not None else []
    out.append(CheckpointCallback(cfg.train.checkpoint_every, cfg.train.checkpoint_every_steps))
    info = ddp.current()
    shown = cfg.train.progress if info.is_main else "off"
    out.append(ProgressCallback(progress if progress is not None else make_progress(shown)))
    out.append(ddp.DistributedSignalStop() if info.active else SignalStop())
    return out


def train(cfg: ExperimentConfig, *, run_dir: str | Path, task: Any = None, tracker: Any = None, resume: bool = False,
          callbacks: Iterable[Callback] = (), progress: Optional[TrainProgress] = None) -> TrainResult:
    """Robustly fine-tune ``cfg.model`` on ``cfg.data`` with ``cfg.schedule``; log to ``tracker``.

    ``task``: the :class:`rftbench.task.Task` (model on its device, splits) to train; built
    with :func:`rftbench.task.build_task` when None. ``run_dir`` holds ``state.pt`` (the
    resumable state) and ``model.safetensors``; with ``resume`` training continues from
    ``state.pt`` when there is one (else from scratch). ``callbacks`` run after the default ones
    (:func:`default_callbacks`), e.g. :class:`~rftbench.training.callbacks.OptunaPruning`;
    ``progress`` replaces the default display.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if task is None:
        task = _build_task(cfg)
    all_callbacks = default_callbacks(cfg, tracker=tracker, progress=progress) + list(callbacks)
    return Trainer(cfg, task, run_dir=run_dir, callbacks=all_callbacks).run(resume=resume)


def _build_task(cfg: ExperimentConfig) -> Any:
    from ..task import build_task, resolve_device

    amp_setup(cfg.train.precision, resolve_device(cfg.train.device))  # fail before any weights are read
    return build_task(cfg)
