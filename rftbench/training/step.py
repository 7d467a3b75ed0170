"""The hot path: one training step (:class:`TrainStep`), batch statistics kept on the device
(:class:`BatchMeter`) and mixed-precision setup (:func:`amp_setup`).

``benchmarks/perf_train.py`` times :class:`TrainStep` against hand-written loops; nothing here
synchronises with the device except :meth:`BatchMeter.values` and :meth:`TrainStep.diverged_at`.
"""
from __future__ import annotations

import copy
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
def running_stats_kept(model: nn.Module) -> Iterator[None]:
    """Forward passes inside leave every buffer as it was, each module staying in its own mode:
    BatchNorm layers in training mode still normalise with the batch's statistics but skip the
    running-statistics update (``track_running_stats`` off for the duration), and the buffers of
    any other module in training mode are put back afterwards."""
    paused, saved = [], []
    for m in model.modules():
        if not m.training:
            continue
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if m.track_running_stats:
                paused.append(m)
        else:
            saved.extend((b, b.clone()) for b in m.buffers(recurse=False))
    for m in paused:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in paused:
            m.track_running_stats = True
        with torch.no_grad():
            for b, before in saved:
                b.copy_(before)


class BatchMeter:
    """Sums of batch statistics, kept on the device (no sync) until :meth:`values` reads them.

    Every batch adds its loss, eps and clean accuracy (``acc_clean``: every sample); attacked
    batches (eps > 0 with an attack) also add their adversarial accuracy (``acc_adv``). The child
    meter ``attacked`` (None in a child) sums the attacked batches alone, so that
    ``acc_clean_attacked`` is the clean accuracy on exactly the batches of ``acc_adv``.
    """

    def __init__(self, device: torch.device, *, split_attacked: bool = True):
        self.device = device
        self.attacked: Optional[BatchMeter] = BatchMeter(device, split_attacked=False) if split_attacked else None
        self.reset()

    def reset(self) -> None:
        dtype = torch.float32 if self.device.type == "mps" else torch.float64  # MPS has no float64
        z = lambda: torch.zeros((), dtype=dtype, device=self.device)  # noqa: E731
        self.loss_sum, self.correct_clean, self.correct_adv = z(), z(), z()
        self.n = self.n_clean = self.n_adv = 0
        self.eps_sum = 0.0
        self.t0 = time.perf_counter()
        if self.attacked is not None:
            self.attacked.reset()

    def __copy__(self) -> "BatchMeter":
        """A copy whose sums (and child meter) can be replaced without touching this one's."""
        new = object.__new__(BatchMeter)
        new.__dict__.update(self.__dict__)
        if self.attacked is not None:
            new.attacked = copy.copy(self.attacked)
        return new

    def add(self, loss: torch.Tensor, y: torch.Tensor, eps: float, logits_clean: Optional[torch.Tensor],
            logits_adv: Optional[torch.Tensor]) -> None:
        n = len(y)
        self.loss_sum += loss.detach() * n
        self.n += n
        self.eps_sum += eps * n
        if logits_clean is not None:
            self.correct_clean += (logits_clean.detach().argmax(1) == y).sum()
            self.n_clean += n
        if logits_adv is not None:
            self.correct_adv += (logits_adv.detach().argmax(1) == y).sum()
            self.n_adv += n
            if self.attacked is not None:
                self.attacked.add(loss, y, eps, logits_clean, logits_adv)

    def values(self) -> dict[str, float]:
        """Means since the last reset (one device sync): ``loss``, ``eps`` and ``acc_clean`` over
        every batch; with attacked batches, ``acc_adv`` and ``acc_clean_attacked`` over those
        alone and ``attacked_frac`` (their share of the samples)."""
        parts = [self.loss_sum, self.correct_clean, self.correct_adv]
        if self.attacked is not None:
            parts.append(self.attacked.correct_clean)
        sums = torch.stack(parts).tolist()
        loss, cc, ca = sums[:3]
        out = {"loss": loss / max(1, self.n), "eps": self.eps_sum / max(1, self.n)}
        if self.n_clean:
            out["acc_clean"] = cc / self.n_clean
        if self.n_adv:
            out["acc_adv"] = ca / self.n_adv
            out["attacked_frac"] = self.n_adv / max(1, self.n)
            if self.attacked is not None and self.attacked.n_clean:
                out["acc_clean_attacked"] = sums[3] / self.attacked.n_clean
        return out

    def state(self) -> dict[str, Any]:
        out = {"sums": torch.stack([self.loss_sum, self.correct_clean, self.correct_adv]).cpu(),
               "counts": [self.n, self.n_clean, self.n_adv], "eps_sum": self.eps_sum}
        if self.attacked is not None:
            out["attacked"] = self.attacked.state()
        return out

    def load(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state` (one written before the ``attacked`` child: it starts at zero)."""
        sums = state["sums"].to(self.device)
        self.loss_sum, self.correct_clean, self.correct_adv = sums[0].clone(), sums[1].clone(), sums[2].clone()
        self.n, self.n_clean, self.n_adv = (int(c) for c in state["counts"])
        self.eps_sum = float(state["eps_sum"])
        if self.attacked is not None:
            if "attacked" in state:
                self.attacked.load(state["attacked"])
            else:
                self.attacked.reset()


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
                 loss_weight: Optional[float] = None, optimizer_step: bool = True,
                 meters: Sequence[BatchMeter] = (), rows: Optional[tuple[int, int]] = None) -> torch.Tensor:
        """Train on one batch; return the (detached) loss. ``loss_weight`` scales the loss for
        gradient accumulation (and a DDP rank's share); ``meters`` get the batch's statistics
        (with them, a batch whose objective gave no clean logits, e.g. PGD-AT's, gets a clean
        forward: :meth:`clean_logits`); ``rows=(first, total)``: ``x`` is a DDP rank's rows of a
        global batch of ``total`` samples (the attack's random start is drawn for all of it)."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x_adv = None
        if self.attack is not None and eps > 0:
            self.attack.set_eps(eps)
            with self._autocast():
                x_adv = self.attack(x, y) if rows is None else self.attack(x, y, rows=rows)
            self.attack_calls += 1
        with self._autocast():
            out = self.objective(self.model, x, y, x_adv)
        loss = out.loss
        logits_clean = out.logits_clean
        if logits_clean is None and meters:
            logits_clean = self.clean_logits(x)
        bad = ~torch.isfinite(loss.detach())
        first = bad & (self._bad_step < 0)
        self._bad_step = torch.where(first, step_index, self._bad_step)
        self._bad_loss = torch.where(first, loss.detach().float(), self._bad_loss)
        scaled = loss if loss_weight is None else loss * loss_weight
        (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
        if optimizer_step:
            self.optimizer_step()
        for m in meters:
            m.add(loss, y, eps, logits_clean, out.logits_adv)
        return loss.detach()

    def clean_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, classes) of the clean batch ``x`` from the weights the objective just used
        and the model in the same (training) mode, as TRADES's own clean forward gives them: no
        gradient, BatchNorm on the batch's statistics without a running-statistics update, and
        the RNG (dropout) put back, so training goes on exactly as without it. Under DDP the
        wrapped module runs directly (no buffer broadcast)."""
        net = self.model.module if isinstance(self.model, torch.nn.parallel.DistributedDataParallel) else self.model
        devices = [x.device.index if x.device.index is not None else torch.cuda.current_device()] \
            if x.device.type == "cuda" else []
        with torch.no_grad(), running_stats_kept(net), self._autocast(), \
                torch.random.fork_rng(devices=devices, device_type=x.device.type):
            return net(x)

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
