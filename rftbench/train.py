"""The robust fine-tuning trainer.

At every step (or epoch, ``schedule.granularity``) the schedule plugin sets eps; at eps = 0 the
attack is skipped entirely, so that phase costs what plain fine-tuning costs. Checkpoints hold
model, optimizer, LR-scheduler, RNG and data-order state and are written atomically; a run
resumed from its last checkpoint gives the same weights as an uninterrupted one (on CPU).
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader

from .attacks import TrainAttack
from .config import ExperimentConfig
from .data import EpochSampler, Splits, build_splits
from .errors import CheckpointError, TrainingDivergedError
from .models import PixelModel, create_model, save_checkpoint
from .objectives import create_objective
from .scheduling import Schedule, create_schedule

EpochCallback = Callable[[int, dict[str, float]], None]


@dataclass
class TrainResult:
    model: PixelModel
    history: list[dict[str, float]]
    checkpoint: Path  # final model weights (safetensors + arch json)
    wall_time_s: float
    attack_steps: int  # optimizer steps on which the attack ran
    total_steps: int
    info: dict[str, Any] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


def build_model(cfg: ExperimentConfig, num_classes: int) -> PixelModel:
    mc = cfg.model
    return create_model(mc.name, num_classes, pretrained=mc.pretrained, weights=mc.weights, kwargs=mc.kwargs)


def param_groups(model: PixelModel, cfg: ExperimentConfig) -> list[dict[str, Any]]:
    """Backbone and head parameter groups (separate LR scale for the head; frozen backbone in
    linear-probe mode); no weight decay on biases and norm weights."""
    head_ids = {id(p) for p in model.head_parameters()}
    groups: dict[tuple[bool, bool], list] = {}
    for n, p in model.named_parameters():
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
    tc = cfg.train
    groups = param_groups(model, cfg)
    for g in groups:
        g["lr"] = tc.lr * g["lr_scale"]
    if tc.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=tc.lr, momentum=tc.momentum, nesterov=tc.momentum > 0)
    return torch.optim.AdamW(groups, lr=tc.lr)


def make_lr_schedule(opt: torch.optim.Optimizer, total_steps: int, warmup_steps: int):
    """Linear warm-up for ``warmup_steps`` optimizer steps, then cosine decay to 0."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _rng_state() -> dict[str, Any]:
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": repr(random.getstate()),
             "numpy": torch.from_numpy(keys.astype(np.int64)), "numpy_pos": int(pos),
             "numpy_gauss": (int(has_gauss), float(gauss))}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import ast

    torch.set_rng_state(state["torch"])
    py = ast.literal_eval(state["python"])
    random.setstate((py[0], tuple(py[1]), py[2]))
    has_gauss, gauss = state["numpy_gauss"]
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_state(path: Path, **state: Any) -> None:
    """Write the training state atomically: a temporary file, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_training_state(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read training checkpoint {path}: {type(exc).__name__}: {exc}. "
                              f"Delete it to start the run from scratch.") from None


class EpsController:
    """Maps the trainer's position to eps through the schedule, per step or per epoch."""

    def __init__(self, schedule: Schedule, target_eps: float, granularity: str, steps_per_epoch: int, epochs: int):
        self.schedule, self.target = schedule, target_eps
        self.granularity, self.spe, self.epochs = granularity, steps_per_epoch, epochs

    def eps(self, epoch: int, batch: int) -> float:
        if self.granularity == "epoch":
            return self.schedule.eps_at(epoch, self.epochs, self.target)
        return self.schedule.eps_at(epoch * self.spe + batch, self.epochs * self.spe, self.target)


def train(cfg: ExperimentConfig, *, run_dir: str | Path, splits: Splits | None = None,
          tracker: Any = None, resume: bool = False, on_epoch_end: Optional[EpochCallback] = None,
          progress: Any = None) -> TrainResult:
    """Robustly fine-tune ``cfg.model`` on ``cfg.data`` with ``cfg.schedule``; log to ``tracker``.

    ``run_dir`` holds ``state.pt`` (the resumable training state) and ``model.safetensors``.
    ``on_epoch_end(epoch, metrics)`` is called after each epoch's validation (the tuner uses it
    to report and prune); it may raise to stop the run.
    """
    from .evaluate import quick_robustness  # evaluate imports train's helpers lazily too

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tc, ac = cfg.train, cfg.attack
    device = resolve_device(tc.device)
    seed_everything(cfg.seed)
    probe = build_model(cfg, num_classes=2) if splits is None else None
    if splits is None:
        splits = build_splits(cfg.data, probe.spec, cfg.seed)
    model = build_model(cfg, splits.num_classes) if probe is None or probe.num_classes != splits.num_classes else probe
    if probe is not None and model is not probe:
        del probe
    model.to(device)
    if tc.channels_last:
        model.to(memory_format=torch.channels_last)
    schedule = create_schedule(cfg.schedule.name, cfg.schedule.params)
    objective = create_objective(tc.objective, tc.trades_beta)
    attack = TrainAttack(model, objective.attack or ac.name, ac.norm, ac.steps, ac.step_ratio,
                         ac.random_start, ac.bn_mode) if objective.uses_attack else None

    sampler = EpochSampler(len(splits.train), cfg.seed)
    loader = DataLoader(splits.train, batch_size=cfg.data.batch_size, sampler=sampler,
                        num_workers=cfg.data.num_workers, drop_last=False,
                        pin_memory=device.type == "cuda")
    steps_per_epoch = math.ceil(len(splits.train) / cfg.data.batch_size)
    opt_steps_per_epoch = math.ceil(steps_per_epoch / tc.accum_steps)
    opt = make_optimizer(model, cfg)
    lr_sched = make_lr_schedule(opt, tc.epochs * opt_steps_per_epoch, round(tc.warmup_epochs * opt_steps_per_epoch))
    eps_ctl = EpsController(schedule, ac.target_eps, cfg.schedule.granularity, steps_per_epoch, tc.epochs)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(tc.precision)
    scaler = torch.amp.GradScaler("cuda") if tc.precision == "fp16" and device.type == "cuda" else None

    state_path = run_dir / "state.pt"
    start_epoch, history, attack_steps, elapsed = 0, [], 0, 0.0
    if resume and state_path.is_file():
        st = load_training_state(state_path)
        model.net.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        lr_sched.load_state_dict(st["lr_schedule"])
        _set_rng_state(st["rng"])
        start_epoch, history = int(st["epoch"]), list(st["history"])
        attack_steps, elapsed = int(st["attack_steps"]), float(st["elapsed_s"])

    val_ds = splits.val if len(splits.val) else splits.test
    val_every = tc.val_every or tc.epochs
    t_start = time.perf_counter() - elapsed
    for epoch in range(start_epoch, tc.epochs):
        model.train()
        sampler.set_epoch(epoch)
        sums = {"loss": 0.0, "acc_clean": 0.0, "acc_adv": 0.0, "n_clean": 0, "n_adv": 0, "n": 0, "eps": 0.0}
        t_epoch = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        for b, (x, y) in enumerate(loader):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if tc.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            eps = eps_ctl.eps(epoch, b)
            x_adv = None
            if attack is not None and eps > 0:
                attack.set_eps(eps)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    x_adv = attack(x, y)
                attack_steps += 1
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                out = objective(model, x, y, x_adv)
            loss = out.loss
            if not torch.isfinite(loss):
                raise TrainingDivergedError(
                    f"the training loss became {loss.item()} at epoch {epoch}, batch {b} (eps={eps:.4g}). "
                    f"Lower train.lr, enable train.grad_clip, or use precision: fp32. "
                    f"The last good checkpoint is kept at {state_path}.")
            scaled = loss / tc.accum_steps
            (scaler.scale(scaled) if scaler else scaled).backward()
            if (b + 1) % tc.accum_steps == 0 or b + 1 == steps_per_epoch:
                if tc.grad_clip:
                    if scaler:
                        scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
                if scaler:
                    scaler.step(opt)
                    scaler.update()
                else:
                    opt.step()
                opt.zero_grad(set_to_none=True)
                lr_sched.step()
            n = len(y)
            sums["n"] += n
            sums["loss"] += loss.item() * n
            sums["eps"] += eps * n
            if out.logits_clean is not None:
                sums["acc_clean"] += (out.logits_clean.argmax(1) == y).sum().item()
                sums["n_clean"] += n
            if out.logits_adv is not None:
                sums["acc_adv"] += (out.logits_adv.argmax(1) == y).sum().item()
                sums["n_adv"] += n
            if progress is not None:
                progress(epoch, b, steps_per_epoch, eps, loss.item())
        dt = time.perf_counter() - t_epoch
        metrics = {"train/loss": sums["loss"] / sums["n"], "train/eps": sums["eps"] / sums["n"],
                   "train/lr": opt.param_groups[0]["lr"], "train/images_per_s": sums["n"] / max(dt, 1e-9),
                   "train/epoch_time_s": dt}
        if sums["n_clean"]:
            metrics["train/acc_clean"] = sums["acc_clean"] / sums["n_clean"]
        if sums["n_adv"]:
            metrics["train/acc_adv"] = sums["acc_adv"] / sums["n_adv"]
        if (epoch + 1) % val_every == 0 or epoch + 1 == tc.epochs:
            metrics.update(quick_robustness(model, val_ds, cfg, device, prefix="val/"))
        history.append({"epoch": epoch, **metrics})
        if tracker is not None:
            tracker.log_metrics(metrics, step=epoch)
        if (epoch + 1) % tc.checkpoint_every == 0 or epoch + 1 == tc.epochs:
            save_training_state(state_path, model=model.net.state_dict(), optimizer=opt.state_dict(),
                                lr_schedule=lr_sched.state_dict(), rng=_rng_state(), epoch=epoch + 1,
                                history=history, attack_steps=attack_steps,
                                elapsed_s=time.perf_counter() - t_start)
        if on_epoch_end is not None:
            on_epoch_end(epoch, metrics)
    wall = time.perf_counter() - t_start
    model.eval()
    ckpt = save_checkpoint(model, run_dir / "model.safetensors")
    return TrainResult(model, history, ckpt, wall, attack_steps, tc.epochs * steps_per_epoch,
                       info={"steps_per_epoch": steps_per_epoch, "schedule": repr(schedule), "device": str(device)})
