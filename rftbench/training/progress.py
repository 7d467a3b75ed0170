"""Training progress display: a rich progress bar on a terminal, plain log lines otherwise (CI).

The trainer, through :class:`rftbench.training.callbacks.ProgressCallback`, calls
:meth:`TrainProgress.advance` on every batch (host-side counters only, no device sync) and
:meth:`TrainProgress.update` on logging steps with the window's statistics (``eps``, ``lr``,
``loss``, ``acc_clean``, ``acc_adv``, ``acc_clean_attacked``, ``attacked_frac``, ``images_per_s``:
host floats, the names of :meth:`rftbench.training.step.BatchMeter.values`; an accuracy may be
missing).
Everything goes to stderr, so ``--json`` output on stdout stays clean.
"""
from __future__ import annotations

import sys
import time
from typing import IO, Any, Mapping

from ..progress import resolve_mode, rich_bar



class TrainProgress:
    """The progress hook interface; this base class shows nothing."""

    def start(self, *, name: str, epochs: int, steps_per_epoch: int, done_steps: int) -> None:
        """Training starts (or resumes after ``done_steps`` batches) for ``epochs`` epochs."""

    def advance(self, done_steps: int) -> None:
        """``done_steps`` batches (over all epochs) are done. Called on every batch."""

    def update(self, stats: Mapping[str, float]) -> None:
        """Window statistics on a logging step (``epoch``, ``step``, ``eps``, ``lr``, ``loss``, ...)."""

    def epoch_end(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Epoch ``epoch`` (0-based) finished with these per-epoch metrics (train/..., val/...)."""

    def close(self) -> None:
        """Training ended (normally or not)."""


def format_stats(stats: Mapping[str, float]) -> str:
    """``eps 0.0500  lr 0.0200  loss 0.8123  acc clean 0.812 adv 0.433  1234 img/s``.

    ``acc clean`` covers every batch, ``adv`` the attacked ones; where only some were attacked,
    the clean accuracy on those same batches and their share follow:
    ``acc clean 0.902 adv 0.433 (40% of samples attacked; clean on them 0.871)``.
    """
    parts = []
    if "eps" in stats:
        parts.append(f"eps {stats['eps']:.4f}")
    if "lr" in stats:
        parts.append(f"lr {stats['lr']:.3g}")
    if "loss" in stats:
        parts.append(f"loss {stats['loss']:.4f}")
    accs = [f"{k} {stats['acc_' + k]:.3f}" for k in ("clean", "adv") if stats.get("acc_" + k) is not None]
    if accs:
        parts.append("acc " + " ".join(accs) + _partial_attack(stats))
    if "images_per_s" in stats:
        parts.append(f"{stats['images_per_s']:.0f} img/s")
    return "  ".join(parts)


def _partial_attack(stats: Mapping[str, float]) -> str:
    frac, clean_there = stats.get("attacked_frac"), stats.get("acc_clean_attacked")
    if frac is None or frac >= 1 or stats.get("acc_adv") is None:
        return ""
    there = f"; clean on them {clean_there:.3f}" if clean_there is not None else ""
    return f" ({frac:.0%} of samples attacked{there})"


def _epoch_summary(metrics: Mapping[str, float]) -> dict[str, float]:
    out = {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("train/")}
    keys = ("eps", "lr", "loss", "acc_clean", "acc_adv", "attacked_frac", "acc_clean_attacked", "images_per_s")
    return {k: out.get(k) for k in keys}


def _val_summary(metrics: Mapping[str, float]) -> str:
    names = {"val/acc_clean": "clean", "val/acc_pgd": "pgd", "val/expected_robustness": "ER"}
    vals = [f"{short} {metrics[k]:.3f}" for k, short in names.items() if k in metrics]
    return ("  val " + " ".join(vals)) if vals else ""


class PlainProgress(TrainProgress):
    """One line per logging step and per epoch, for logs and CI (no terminal control codes)."""

    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream
        self.name, self.epochs, self.spe, self.total = "train", 1, 1, 1
        self._t_epoch = time.perf_counter()

    def _write(self, line: str) -> None:
        stream = self.stream or sys.stderr
        stream.write(line + "\n")
        stream.flush()

    def start(self, *, name, epochs, steps_per_epoch, done_steps):
        self.name, self.epochs, self.spe = name, epochs, steps_per_epoch
        self.total = epochs * steps_per_epoch
        what = f"resuming after {done_steps} of" if done_steps else "starting"
        self._write(f"[{self.name}] {what} {self.total} steps ({epochs} epochs x {steps_per_epoch} batches)")

    def update(self, stats):
        step = int(stats.get("step", 0))
        self._write(f"[{self.name}] epoch {int(stats.get('epoch', 0)) + 1}/{self.epochs} "
                    f"step {step}/{self.total}  {format_stats(stats)}")

    def epoch_end(self, epoch, metrics):
        dt = metrics.get("train/epoch_time_s")
        took = f" in {dt:.1f} s" if dt is not None else ""
        stats = {k: v for k, v in _epoch_summary(metrics).items() if v is not None}
        self._write(f"[{self.name}] epoch {epoch + 1}/{self.epochs} done{took}:  {format_stats(stats)}"
                    f"{_val_summary(metrics)}")


class RichProgress(TrainProgress):
    """A rich progress bar over all training steps, with the latest window statistics."""

    def __init__(self, console: Any = None):
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self._progress = None
        self._task = None
        self.name, self.epochs, self.spe, self._epoch = "train", 1, 1, 1

    def start(self, *, name, epochs, steps_per_epoch, done_steps):
        self.name, self.epochs, self.spe = name, epochs, steps_per_epoch
        self._epoch = done_steps // steps_per_epoch + 1
        self._progress = rich_bar(self.console, "stats")
        self._progress.start()
        self._task = self._progress.add_task(f"{name} epoch {done_steps // steps_per_epoch + 1}/{epochs}",
                                             total=epochs * steps_per_epoch, completed=done_steps, stats="")

    def advance(self, done_steps):
        if self._progress is None:
            return
        epoch = min(done_steps // self.spe + 1, self.epochs)
        if epoch != self._epoch:
            self._epoch = epoch
            self._progress.update(self._task, completed=done_steps,
                                  description=f"{self.name} epoch {epoch}/{self.epochs}")
        else:
            self._progress.update(self._task, completed=done_steps)

    def update(self, stats):
        if self._progress is not None:
            self._progress.update(self._task, stats=format_stats(stats))

    def epoch_end(self, epoch, metrics):
        if self._progress is not None:
            stats = {k: v for k, v in _epoch_summary(metrics).items() if v is not None}
            self._progress.console.print(f"epoch {epoch + 1}/{self.epochs}: {format_stats(stats)}"
                                         f"{_val_summary(metrics)}", highlight=False)

    def close(self):
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def make_progress(mode: str = "auto", stream: IO[str] | None = None) -> TrainProgress:
    """The progress display for ``train.progress``: ``auto`` is ``rich`` when ``stream`` (default
    stderr) is a terminal and ``plain`` otherwise; ``off`` shows nothing."""
    mode = resolve_mode(mode, stream)
    if mode == "off":
        return TrainProgress()
    if mode == "rich":
        from rich.console import Console

        return RichProgress(Console(file=stream) if stream is not None else None)
    return PlainProgress(stream)
