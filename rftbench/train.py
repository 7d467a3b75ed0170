"""The robust fine-tuning trainer.

At every step (or epoch, ``schedule.granularity``) the schedule plugin sets eps; at eps = 0 the
attack is skipped entirely, so that phase costs what plain fine-tuning costs. One batch is one
:class:`TrainStep` call (attack, objective, backward, optimizer step), the code path that
``benchmarks/perf_train.py`` times.

Records: per-epoch metrics (``train/...``, ``val/...`` at step = epoch) and, every
``train.log_every`` batches, window metrics (``train_step/...`` at step = batches done) go to
MLflow. Batch statistics are accumulated on the device and read back only on logging steps,
checkpoints and epoch ends (on CPU the loss is also checked after every batch, which costs
nothing there).

Recovery: ``state.pt`` in the run directory (see :mod:`rftbench.training_state`) holds model,
optimizer, LR-schedule, grad-scaler, RNG and data-order state (epoch and next batch; the order
itself is a function of (seed, epoch)). It is written atomically at epoch ends
(``train.checkpoint_every`` epochs), every ``train.checkpoint_every_steps`` optimizer steps
mid-epoch, and when SIGTERM or SIGINT arrives (at the next optimizer step; the run then ends
KILLED). Validation runs under a forked RNG, so neither it nor logging changes the trained
weights. On CPU with ``data.num_workers: 0`` a resumed run ends with weights bit-identical to
an uninterrupted one. A non-finite loss raises :class:`TrainingDivergedError` before any later
checkpoint is written, so ``state.pt`` stays the last good one. A SIGKILLed run cannot end its
MLflow run; :mod:`rftbench.recovery` finds and marks such stale runs.
"""
from __future__ import annotations

import json
import logging
import math
import random
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from .attacks import TrainAttack
from .config import ExperimentConfig
from .data import EpochSampler, Splits, build_splits
from .errors import ConfigError, TrainingDivergedError
from .models import PixelModel, create_model, save_checkpoint
from .objectives import Objective, create_objective
from .progress import TrainProgress, make_progress
from .scheduling import Schedule, create_schedule
from .training_state import (STATE_FORMAT, check_resume_config, load_training_state, resume_config, rng_state,
                             save_training_state, set_rng_state)

log = logging.getLogger(__name__)

EpochCallback = Callable[[int, dict[str, float]], None]



class TrainingInterrupted(KeyboardInterrupt):
    """SIGTERM or SIGINT stopped training after checkpointing at the next optimizer step (a
    KeyboardInterrupt, so that the MLflow run ends KILLED, not FAILED)."""


@contextmanager
def _stop_requests() -> Iterator[dict[str, Any]]:
    """Turn SIGTERM / SIGINT into a request to stop at the next optimizer step (a second one
    interrupts at once). Only in the main thread, where Python delivers signals."""
    request: dict[str, Any] = {"signal": None}
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum, frame):
        if request["signal"] is not None:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}")
        request["signal"] = signal.Signals(signum).name

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield request
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@dataclass
class TrainResult:
    model: PixelModel
    history: list[dict[str, float]]
    checkpoint: Path  # final model weights (safetensors + arch json)
    wall_time_s: float
    attack_steps: int  # batches on which the attack ran
    total_steps: int  # batches in the whole run
    info: dict[str, Any] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA if available, else Apple MPS, else CPU; any other name as torch spells it."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device {name!r} is not a device; use auto, cpu, cuda, cuda:1 or mps.") from None


def build_model(cfg: ExperimentConfig, num_classes: int) -> PixelModel:
    mc = cfg.model
    return create_model(mc.name, num_classes, pretrained=mc.pretrained, weights=mc.weights, kwargs=mc.kwargs)


# ---------------------------------------------------------------- optimizer and LR schedule
def param_groups(model: PixelModel, cfg: ExperimentConfig) -> list[dict[str, Any]]:
    """Backbone and head parameter groups: the head's LR is ``model.head_lr_scale`` times the
    backbone's; in ``linear_probe`` mode the backbone is frozen (requires_grad False, not in any
    group); no weight decay on biases and norm weights (parameters with ndim <= 1)."""
    head_ids = {id(p) for p in model.head_parameters()}
    groups: dict[tuple[bool, bool], list] = {}
    for _, p in model.named_parameters():
        is_head = id(p) in head_ids
        if cfg.model.finetune == "linear_probe" and not is_head:
            p.requires_grad_(False)
            continue
        no_decay = p.ndim <= 1
        groups.setdefault((is_head, no_decay), []).append(p)
    out = []
    for (is_head, no_decay), params in groups.items():
        out.append({"params": params, "lr_scale": cfg.model.head_lr_scale if is_head else 1.0,
                    "weight_decay": 0.0 if no_decay else (cfg.model.head_weight_decay if is_head and
                                                          cfg.model.head_weight_decay is not None
                                                          else cfg.train.weight_decay),
                    "name": ("head" if is_head else "backbone") + ("_nodecay" if no_decay else "")})
    return out


def make_optimizer(model: PixelModel, cfg: ExperimentConfig) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov when ``train.nesterov``) or AdamW over :func:`param_groups`."""
    tc = cfg.train
    groups = param_groups(model, cfg)
    for g in groups:
        g["lr"] = tc.lr * g["lr_scale"]
    if tc.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=tc.lr, momentum=tc.momentum, nesterov=tc.nesterov and tc.momentum > 0)
    return torch.optim.AdamW(groups, lr=tc.lr)


def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """LR multiplier at optimizer step ``step``: linear warm-up over ``warmup_steps``, then
    cosine decay to 0 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def make_lr_schedule(opt: torch.optim.Optimizer, total_steps: int, warmup_steps: int):
    """Linear warm-up for ``warmup_steps`` optimizer steps, then cosine decay to 0."""
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, total_steps, warmup_steps))


def group_lr(opt: torch.optim.Optimizer, kind: str) -> Optional[float]:
    """The current LR of the ``backbone`` or ``head`` parameter groups (None if there are none)."""
    for g in opt.param_groups:
        if str(g.get("name", "")).startswith(kind):
            return float(g["lr"])
    return None


@contextmanager
def _modules_in_eval(model: nn.Module) -> Iterator[None]:
    """Eval mode inside, then every module's own train/eval flag restored."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


@contextmanager
def _closing(progress: TrainProgress) -> Iterator[TrainProgress]:
    try:
        yield progress
    finally:
        progress.close()


def set_train_mode(model: PixelModel, cfg: ExperimentConfig) -> None:
    """Training mode; in ``linear_probe`` mode the frozen backbone stays in eval mode (its
    BatchNorm statistics and dropout do not change either), only the head trains."""
    if cfg.model.finetune == "linear_probe":
        model.eval()
        head_ids = {id(p) for p in model.head_parameters()}
        for m in model.modules():
            if any(id(p) in head_ids for p in m.parameters(recurse=False)):
                m.train()
    else:
        model.train()


# ---------------------------------------------------------------- one step
class BatchMeter:
    """Sums of batch statistics, kept on the device (no sync) until :meth:`values` reads them."""

    def __init__(self, device: torch.device):
        self.device = device
        self.reset()

    def reset(self) -> None:
        dtype = torch.float32 if self.device.type == "mps" else torch.float64  # MPS has no float64
        z = lambda: torch.zeros((), dtype=dtype, device=self.device)  # noqa: E731
        self.loss_sum, self.correct_clean, self.correct_adv = z(), z(), z()
        self.n = self.n_clean = self.n_adv = 0
        self.eps_sum = 0.0
        self.t0 = time.perf_counter()

    def add(self, loss: torch.Tensor, y: torch.Tensor, eps: float, logits_clean: Optional[torch.Tensor],
            logits_adv: Optional[torch.Tensor]) -> None:
        n = len(y)
        self.loss_sum += loss.detach() * n
        self.n += n
        self.eps_sum += eps * n
        if logits_clean is not None:
            self.add_clean(logits_clean, y)
        if logits_adv is not None:
            self.correct_adv += (logits_adv.detach().argmax(1) == y).sum()
            self.n_adv += n

    def add_clean(self, logits_clean: torch.Tensor, y: torch.Tensor) -> None:
        self.correct_clean += (logits_clean.detach().argmax(1) == y).sum()
        self.n_clean += len(y)

    def values(self) -> dict[str, float]:
        """Means since the last reset (one device sync): loss, eps, acc_clean, acc_adv (if any)."""
        loss, cc, ca = torch.stack([self.loss_sum, self.correct_clean, self.correct_adv]).tolist()
        out = {"loss": loss / max(1, self.n), "eps": self.eps_sum / max(1, self.n)}
        if self.n_clean:
            out["acc_clean"] = cc / self.n_clean
        if self.n_adv:
            out["acc_adv"] = ca / self.n_adv
        return out

    def state(self) -> dict[str, Any]:
        return {"sums": torch.stack([self.loss_sum, self.correct_clean, self.correct_adv]).cpu(),
                "counts": [self.n, self.n_clean, self.n_adv], "eps_sum": self.eps_sum}

    def load(self, state: dict[str, Any]) -> None:
        sums = state["sums"].to(self.device)
        self.loss_sum, self.correct_clean, self.correct_adv = sums[0].clone(), sums[1].clone(), sums[2].clone()
        self.n, self.n_clean, self.n_adv = (int(c) for c in state["counts"])
        self.eps_sum = float(state["eps_sum"])


class TrainStep:
    """One training step on a batch: attack (skipped at eps = 0), objective, backward and, on
    the last micro-batch of an accumulation group, the optimizer and LR-schedule steps.

    ``x``: (N, C, H, W) images in [0, 1] on the model's device; ``y``: (N,) labels; ``eps`` in
    pixel units. Non-finite losses are recorded on the device (:meth:`diverged_at` reads them).
    ``train()`` uses it for every batch; ``benchmarks/perf_train.py`` times it.
    """

    def __init__(self, model: nn.Module, objective: Objective, attack: Optional[TrainAttack],
                 optimizer: torch.optim.Optimizer, lr_schedule: Any = None, *, device: torch.device,
                 amp_dtype: Optional[torch.dtype] = None, scaler: Any = None, grad_clip: Optional[float] = None,
                 channels_last: bool = False):
        self.model, self.objective, self.attack = model, objective, attack
        self.opt, self.lr_schedule, self.device = optimizer, lr_schedule, device
        self.amp_dtype, self.scaler, self.grad_clip, self.channels_last = amp_dtype, scaler, grad_clip, channels_last
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        self.opt_steps = 0
        self.attack_calls = 0
        self._bad_step = torch.full((), -1, dtype=torch.long, device=device)
        self._bad_loss = torch.zeros((), dtype=torch.float32, device=device)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, eps: float, *, step_index: int = 0,
                 loss_weight: Optional[float] = None, optimizer_step: bool = True, measure_clean: bool = False,
                 meters: Sequence[BatchMeter] = ()) -> torch.Tensor:
        """Train on one batch; return the (detached) loss. ``loss_weight`` scales the loss for
        gradient accumulation; ``measure_clean`` adds a no-grad eval-mode forward on the clean
        batch when the objective gives no clean logits (for the clean batch accuracy)."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x_adv = None
        attacked = self.attack is not None and eps > 0
        if attacked and measure_clean and not self.objective.clean_logits_when_attacked and meters:
            with torch.no_grad(), _modules_in_eval(self.model), self._autocast():
                probe = self.model(x)
            for m in meters:
                m.add_clean(probe, y)
        if attacked:
            self.attack.set_eps(eps)
            with self._autocast():
                x_adv = self.attack(x, y)
            self.attack_calls += 1
        with self._autocast():
            out = self.objective(self.model, x, y, x_adv)
        loss = out.loss
        bad = ~torch.isfinite(loss.detach())
        first = bad & (self._bad_step < 0)
        self._bad_step = torch.where(first, step_index, self._bad_step)
        self._bad_loss = torch.where(first, loss.detach().float(), self._bad_loss)
        scaled = loss if loss_weight is None else loss * loss_weight
        (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
        if optimizer_step:
            self.optimizer_step()
        for m in meters:
            m.add(loss, y, eps, out.logits_clean, out.logits_adv)
        return loss.detach()

    def optimizer_step(self) -> None:
        if self.grad_clip:
            if self.scaler is not None:
                self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        if self.lr_schedule is not None:
            self.lr_schedule.step()
        self.opt_steps += 1

    def diverged_at(self) -> Optional[tuple[int, float]]:
        """(step index, loss value) of the first non-finite loss so far, or None (one sync)."""
        step, value = int(self._bad_step), float(self._bad_loss)
        return None if step < 0 else (step, value)


class EpsController:
    """Maps the trainer's position to eps through the schedule, per step or per epoch."""

    def __init__(self, schedule: Schedule, target_eps: float, granularity: str, steps_per_epoch: int, epochs: int):
        self.schedule, self.target = schedule, target_eps
        self.granularity, self.spe, self.epochs = granularity, steps_per_epoch, epochs

    def eps(self, epoch: int, batch: int) -> float:
        if self.granularity == "epoch":
            return self.schedule.eps_at(epoch, self.epochs, self.target)
        return self.schedule.eps_at(epoch * self.spe + batch, self.epochs * self.spe, self.target)


def amp_setup(precision: str, device: torch.device) -> tuple[Optional[torch.dtype], Any]:
    """The autocast dtype (None for fp32) and, for fp16, a CUDA gradient scaler."""
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(f"train.precision fp16 needs a CUDA device (it trains with a gradient scaler); "
                          f"on {device.type} use bf16 or fp32.")
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    return amp_dtype, scaler


def _rng_devices(device: torch.device) -> list[int]:
    return [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []


# ---------------------------------------------------------------- the training loop
def train(cfg: ExperimentConfig, *, run_dir: str | Path, splits: Splits | None = None,
          tracker: Any = None, resume: bool = False, on_epoch_end: Optional[EpochCallback] = None,
          progress: Optional[TrainProgress] = None) -> TrainResult:
    """Robustly fine-tune ``cfg.model`` on ``cfg.data`` with ``cfg.schedule``; log to ``tracker``.

    ``run_dir`` holds ``state.pt`` (the resumable training state) and ``model.safetensors``.
    With ``resume`` training continues from ``state.pt`` when there is one (else from scratch).
    ``on_epoch_end(epoch, metrics)`` is called after each epoch's validation and checkpoint (the
    tuner uses it to report and prune); it may raise to stop the run. ``progress`` shows
    progress (default: ``make_progress(cfg.train.progress)``).
    """
    from .evaluate import quick_robustness  # evaluate imports train's helpers lazily too
    from .recovery import heartbeat_tags, process_tags

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tc, ac = cfg.train, cfg.attack
    device = resolve_device(tc.device)
    amp_dtype, scaler = amp_setup(tc.precision, device)
    schedule = create_schedule(cfg.schedule.name, cfg.schedule.params)
    objective = create_objective(tc.objective, tc.trades_beta)
    if splits is None:
        # built before seeding: a first build may pretrain and cache the embedded checkpoint
        probe = build_model(cfg, num_classes=2)
        splits = build_splits(cfg.data, probe.spec, cfg.seed)
        del probe
    seed_everything(cfg.seed)
    model = build_model(cfg, splits.num_classes).to(device)
    if tc.channels_last:
        model.to(memory_format=torch.channels_last)
    attack = TrainAttack(model, objective.attack or ac.name, ac.norm, ac.steps, ac.step_ratio,
                         ac.random_start, ac.bn_mode) if objective.uses_attack else None

    n_train, bs = len(splits.train), cfg.data.batch_size
    if n_train == 0:
        raise ConfigError(f"dataset {cfg.data.name!r} has an empty training split.")
    drop_last = n_train > bs and n_train % bs == 1  # a last batch of 1 breaks BatchNorm in training mode
    steps_per_epoch = n_train // bs if drop_last else math.ceil(n_train / bs)
    last_batch = bs if drop_last else n_train - bs * (steps_per_epoch - 1)

    def batch_size_of(b: int) -> int:
        return bs if b < steps_per_epoch - 1 else last_batch

    accum = tc.accum_steps
    sampler = EpochSampler(n_train, cfg.seed)
    loader_gen = torch.Generator()  # worker seeds come from here, not from the training RNG stream
    loader = DataLoader(splits.train, batch_size=bs, sampler=sampler, num_workers=cfg.data.num_workers,
                        drop_last=drop_last, pin_memory=device.type == "cuda", generator=loader_gen)
    opt_steps_per_epoch = math.ceil(steps_per_epoch / accum)
    opt = make_optimizer(model, cfg)
    warmup_steps = round(tc.warmup_epochs * opt_steps_per_epoch)
    lr_sched = make_lr_schedule(opt, tc.epochs * opt_steps_per_epoch, warmup_steps)
    eps_ctl = EpsController(schedule, ac.target_eps, cfg.schedule.granularity, steps_per_epoch, tc.epochs)
    step = TrainStep(model, objective, attack, opt, lr_sched, device=device, amp_dtype=amp_dtype, scaler=scaler,
                     grad_clip=tc.grad_clip, channels_last=tc.channels_last)
    epoch_meter, window = BatchMeter(device), BatchMeter(device)
    set_train_mode(model, cfg)

    state_path = run_dir / "state.pt"
    start_epoch, start_batch, history, attack_steps, elapsed, epoch_time = 0, 0, [], 0, 0.0, 0.0
    resumed_from = None
    if resume and state_path.is_file():
        st = load_training_state(state_path)
        if "config" in st:
            check_resume_config(json.loads(st["config"]), cfg, state_path)
        model.net.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        lr_sched.load_state_dict(st["lr_schedule"])
        if scaler is not None and st.get("scaler"):
            scaler.load_state_dict(st["scaler"])
        set_rng_state(st["rng"])
        start_epoch, start_batch = int(st["epoch"]), int(st.get("batch", 0))
        history, attack_steps, elapsed = list(st["history"]), int(st["attack_steps"]), float(st["elapsed_s"])
        step.opt_steps = int(st.get("opt_steps", start_epoch * opt_steps_per_epoch))
        if start_batch:
            epoch_meter.load(st["epoch_meter"])
            epoch_time = float(st.get("epoch_time_s", 0.0))
        resumed_from = {"epoch": start_epoch, "batch": start_batch}
    elif resume:
        log.warning("no checkpoint %s to resume from: training starts from scratch", state_path)

    cfg_json = json.dumps(resume_config(cfg))

    def save_state(epoch: int, next_batch: int) -> None:
        _raise_if_diverged()  # never overwrite the last good checkpoint with a diverged state
        save_training_state(state_path, format=STATE_FORMAT, model=model.net.state_dict(), optimizer=opt.state_dict(),
                            lr_schedule=lr_sched.state_dict(), scaler=scaler.state_dict() if scaler else {},
                            rng=rng_state(), epoch=epoch, batch=next_batch, opt_steps=step.opt_steps,
                            epoch_meter=epoch_meter.state(), epoch_time_s=epoch_time, history=history,
                            attack_steps=attack_steps, elapsed_s=time.perf_counter() - t_start, config=cfg_json)

    def _raise_if_diverged() -> None:
        bad = step.diverged_at()
        if bad is None:
            return
        g, value = bad
        e, b = divmod(g, steps_per_epoch)
        kept = (f"The last good checkpoint is kept at {state_path}" if state_path.is_file()
                else "No checkpoint was written before it")
        lr = tc.lr * lr_factor(e * opt_steps_per_epoch + b // accum, tc.epochs * opt_steps_per_epoch, warmup_steps)
        raise TrainingDivergedError(
            f"the training loss became {value} at epoch {e}, batch {b} (eps={eps_ctl.eps(e, b):.4g}, lr={lr:.3g}). "
            f"Lower train.lr, set train.grad_clip, or use train.precision: fp32. {kept}.")

    if progress is None:
        progress = make_progress(tc.progress)
    if tracker is not None:
        tracker.set_tags(process_tags())
        if resumed_from:
            tracker.set_tags({"rftbench.resumed_from": json.dumps(resumed_from)})
    val_ds = splits.val if len(splits.val) else splits.test
    val_every = tc.val_every or tc.epochs
    sync_every_step = device.type == "cpu"  # a sync is free on CPU: stop at the first bad loss
    t_start = time.perf_counter() - elapsed
    progress.start(name=cfg.name, epochs=tc.epochs, steps_per_epoch=steps_per_epoch,
                   done_steps=start_epoch * steps_per_epoch + start_batch)

    def stop_if_requested(epoch: int, next_batch: int, saved: bool = False) -> None:
        if stop["signal"] is None:
            return
        if not saved:
            save_state(epoch, next_batch)
        raise TrainingInterrupted(f"{stop['signal']} received: training stopped with its state saved at epoch "
                                  f"{epoch}, batch {next_batch} in {state_path}; resume with "
                                  f"`rftbench train CONFIG --resume RUN_ID`.")

    with _stop_requests() as stop, _closing(progress):
        for epoch in range(start_epoch, tc.epochs):
            first_batch = start_batch if epoch == start_epoch else 0
            if first_batch == 0:
                epoch_meter.reset()
                epoch_time = 0.0
            sampler.set_epoch(epoch, skip=first_batch * bs)
            loader_gen.manual_seed(cfg.seed * 1_000_003 + epoch)
            window.reset()
            t_epoch = time.perf_counter()
            for b, (x, y) in enumerate(loader, start=first_batch):
                g = epoch * steps_per_epoch + b
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                eps = eps_ctl.eps(epoch, b)
                log_now = bool(tc.log_every) and (g + 1) % tc.log_every == 0
                group_end = (b + 1) % accum == 0 or b + 1 == steps_per_epoch
                weight = None
                if accum > 1:
                    first_in_group = b - b % accum
                    group = range(first_in_group, min(first_in_group + accum, steps_per_epoch))
                    weight = batch_size_of(b) / sum(batch_size_of(i) for i in group)
                step(x, y, eps, step_index=g, loss_weight=weight, optimizer_step=group_end, measure_clean=log_now,
                     meters=(epoch_meter, window))
                if attack is not None and eps > 0:
                    attack_steps += 1
                if sync_every_step:
                    _raise_if_diverged()
                progress.advance(g + 1)
                if log_now:
                    _raise_if_diverged()
                    stats = window.values()
                    stats["images_per_s"] = window.n / max(time.perf_counter() - window.t0, 1e-9)
                    stats["eps"] = eps
                    stats["lr"] = group_lr(opt, "backbone") or group_lr(opt, "head") or 0.0
                    if tracker is not None:
                        tracker.log_metrics({f"train_step/{k}": v for k, v in stats.items()}, step=g + 1)
                        tracker.set_tags(heartbeat_tags())
                    progress.update({"epoch": epoch, "step": g + 1, **stats})
                    window.reset()
                if (tc.checkpoint_every_steps and group_end and b + 1 < steps_per_epoch
                        and step.opt_steps % tc.checkpoint_every_steps == 0):
                    epoch_time += time.perf_counter() - t_epoch
                    t_epoch = time.perf_counter()
                    save_state(epoch, b + 1)
                if group_end and stop["signal"] is not None:
                    epoch_time += time.perf_counter() - t_epoch
                    stop_if_requested(epoch, b + 1)
            _raise_if_diverged()
            epoch_time += time.perf_counter() - t_epoch
            vals = epoch_meter.values()
            metrics = {f"train/{k}": v for k, v in vals.items()}
            metrics.update({"train/lr": group_lr(opt, "backbone") or group_lr(opt, "head") or 0.0,
                            "train/images_per_s": epoch_meter.n / max(epoch_time, 1e-9),
                            "train/epoch_time_s": epoch_time})
            if group_lr(opt, "head") is not None:
                metrics["train/lr_head"] = group_lr(opt, "head")
            if (epoch + 1) % val_every == 0 or epoch + 1 == tc.epochs:
                # a forked RNG: validating (or not) never changes the training run
                with torch.random.fork_rng(devices=_rng_devices(device), device_type=device.type):
                    metrics.update(quick_robustness(model, val_ds, cfg, device, prefix="val/"))
                set_train_mode(model, cfg)
            history.append({"epoch": epoch, **metrics})
            if tracker is not None:
                tracker.log_metrics(metrics, step=epoch)
                tracker.set_tags(heartbeat_tags())
            saved = (epoch + 1) % tc.checkpoint_every == 0 or epoch + 1 == tc.epochs
            if saved:
                save_state(epoch + 1, 0)
            progress.epoch_end(epoch, metrics)
            stop_if_requested(epoch + 1, 0, saved)
            if on_epoch_end is not None:
                on_epoch_end(epoch, metrics)
    wall = time.perf_counter() - t_start
    model.eval()
    ckpt = save_checkpoint(model, run_dir / "model.safetensors")
    return TrainResult(model, history, ckpt, wall, attack_steps, tc.epochs * steps_per_epoch,
                       info={"steps_per_epoch": steps_per_epoch, "schedule": repr(schedule), "device": str(device),
                             "resumed_from": resumed_from, "dropped_last_sample": drop_last,
                             "optimizer_steps": step.opt_steps})
