"""The hot path: one training step (:class:`TrainStep`), batch statistics kept on the device
(:class:`BatchMeter`) and mixed-precision setup (:func:`amp_setup`).

``benchmarks/perf_train.py`` times :class:`TrainStep` against hand-written loops; nothing here
synchronises with the device except :meth:`BatchMeter.values` and :meth:`TrainStep.diverged_at`.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Iterator, Optional, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from ..objectives import Objective


def amp_setup(precision: str, device: torch.device) -> tuple[Optional[torch.dtype], Any]:
    """The autocast dtype (None for fp32) and, for fp16, a CUDA gradient scaler."""
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(f"train.precision fp16 needs a CUDA device (it trains with a gradient scaler); "
                          f"on {device.type} use bf16 or fp32.")
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    return amp_dtype, scaler


@contextmanager
def modules_in_eval(model: nn.Module) -> Iterator[None]:
    """Eval mode inside, then every module's own train/eval flag restored."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


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
    pixel units. ``attack`` is a :class:`rftbench.attacks.TrainAttack` (or None: never attack).
    Non-finite losses are recorded on the device (:meth:`diverged_at` reads them). The
    :class:`~rftbench.training.trainer.Trainer` calls it for every batch;
    ``benchmarks/perf_train.py`` times it.
    """

    def __init__(self, model: nn.Module, objective: Objective, attack: Any, optimizer: torch.optim.Optimizer,
                 lr_schedule: Any = None, *, device: torch.device, amp_dtype: Optional[torch.dtype] = None,
                 scaler: Any = None, grad_clip: Optional[float] = None, channels_last: bool = False):
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
                 meters: Sequence[BatchMeter] = (), rows: Optional[tuple[int, int]] = None) -> torch.Tensor:
        """Train on one batch; return the (detached) loss. ``loss_weight`` scales the loss for
        gradient accumulation (and a DDP rank's share); ``measure_clean`` adds a no-grad eval-mode
        forward on the clean batch when the objective gives no clean logits (for the clean batch
        accuracy); ``rows=(first, total)``: ``x`` is a DDP rank's rows of a global batch of
        ``total`` samples (the attack's random start is drawn for all of it)."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x_adv = None
        attacked = self.attack is not None and eps > 0
        if attacked and measure_clean and not self.objective.clean_logits_when_attacked and meters:
            with torch.no_grad(), modules_in_eval(self.model), self._autocast():
                probe = self.model(x)
            for m in meters:
                m.add_clean(probe, y)
        if attacked:
            self.attack.set_eps(eps)
            with self._autocast():
                x_adv = self.attack(x, y) if rows is None else self.attack(x, y, rows=rows)
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
