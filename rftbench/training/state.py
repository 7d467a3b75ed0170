"""The resumable training state (``state.pt``): a dataclass written atomically, read weights-only.

It holds model, optimizer, LR-schedule, grad-scaler, RNG (torch, CUDA, numpy, python) and
data-order state (epoch and next batch; the order itself is a function of (seed, epoch)), plus
the config keys that change training, so that a run resumed with a different config is refused
instead of silently training something else. On disk it is a plain dict of tensors, numbers
and strings (``torch.save``), so loading never needs ``weights_only=False``.
"""
from __future__ import annotations

import ast
import json
import random
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ..config import ExperimentConfig
from ..atomic import atomic_write
from ..errors import CheckpointError

STATE_FORMAT = 2
STATE_FILE = "state.pt"  # in the run directory
# Config keys that may change between a run and its resumption (they do not change the weights).
RESUME_MAY_DIFFER = ("name", "experiment", "output_dir", "plugins", "eval.", "tracking.", "train.device", "train.progress",
                     "train.log_every", "train.checkpoint_every", "train.checkpoint_every_steps",
                     "train.val_every", "train.val_samples", "data.num_workers", "data.eval_batch_size")


def rng_state() -> dict[str, Any]:
    """The global RNG states (torch CPU, CUDA if initialised, numpy, python) as saveable values."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": repr(random.getstate()),
             "numpy": torch.from_numpy(keys.astype(np.int64)), "numpy_pos": int(pos),
             "numpy_gauss": (int(has_gauss), float(gauss))}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    py = ast.literal_eval(state["python"])
    random.setstate((py[0], tuple(py[1]), py[2]))
    has_gauss, gauss = state["numpy_gauss"]
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def config_without(cfg: ExperimentConfig, excluded: tuple[str, ...]) -> dict[str, Any]:
    """``cfg.flat()`` without the keys in ``excluded`` (an entry ending in "." excludes a section)."""
    return {k: v for k, v in cfg.flat().items()
            if not any(k == p or (p.endswith(".") and k.startswith(p)) for p in excluded)}


def resume_config(cfg: ExperimentConfig) -> dict[str, str]:
    """The config keys that change training (all but :data:`RESUME_MAY_DIFFER`), as JSON strings."""
    return {k: json.dumps(v, sort_keys=True, default=str) for k, v in config_without(cfg, RESUME_MAY_DIFFER).items()}


def check_resume_config(saved: dict[str, str], cfg: ExperimentConfig, path: Path) -> None:
    """Raise :class:`CheckpointError` if ``cfg`` differs from the config that wrote ``path`` in a
    key that changes training (anything but :data:`RESUME_MAY_DIFFER`)."""
    now = resume_config(cfg)
    diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if diff:
        shown = ", ".join(f"{k}: {saved.get(k, '(unset)')} -> {now.get(k, '(unset)')}" for k in diff[:8])
        raise CheckpointError(f"cannot resume from {path}: it was written with a different config ({shown}). "
                              f"Resume with the run's own config (the MLflow artifact config.yaml), "
                              f"or start a new run.")


def _nbytes(obj: Any) -> int:
    """Bytes of the tensors inside ``obj`` (the size of a saved state, near enough)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(v) for v in obj)
    return 8


@dataclass
class TrainingState:
    """Everything a run needs to continue exactly where it stopped.

    ``epoch`` (0-based) and ``batch`` are the position to continue from: the next batch of that
    epoch (0: the epoch starts afresh, its meter and clock then start at zero). ``opt_steps`` is
    the optimizer steps taken so far (None in old files: the trainer derives it from ``epoch``).
    ``epoch_meter`` holds the running batch statistics of a half-done epoch (see
    :meth:`rftbench.training.step.BatchMeter.state`); ``epoch_time_s`` and ``elapsed_s`` are
    seconds of training in that epoch and in the whole run. ``config`` is the JSON of
    :func:`resume_config` ("" when unknown: not checked).
    """

    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    lr_schedule: dict[str, Any]
    rng: dict[str, Any]
    epoch: int
    batch: int = 0
    opt_steps: Optional[int] = None
    scaler: dict[str, Any] | None = None
    epoch_meter: dict[str, Any] | None = None
    epoch_time_s: float = 0.0
    history: list[dict[str, float]] | None = None
    attack_steps: int = 0
    elapsed_s: float = 0.0
    config: str = ""
    ema: dict[str, torch.Tensor] | None = None  # the weights' moving average (train.ema)
    format: int = STATE_FORMAT

    def save(self, path: str | Path) -> Path:
        """Write atomically: a temporary file, fsync, then a rename (a crash never leaves a torn file)."""
        raw = asdict(self)
        return atomic_write(path, lambda f: torch.save(raw, f), size_hint=_nbytes(raw))

    @classmethod
    def load(cls, path: str | Path, cfg: ExperimentConfig | None = None) -> "TrainingState":
        """Read ``path`` weights-only; with ``cfg``, refuse a state written by a config that
        trains differently. A corrupt or foreign file is a :class:`CheckpointError`."""
        path = Path(path)
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"cannot read training checkpoint {path}: {type(exc).__name__}: {exc}. "
                                  f"Delete it to start the run from scratch.") from None
        names = {f.name for f in fields(cls)}
        missing = {"model", "optimizer", "lr_schedule", "rng", "epoch"} - set(raw if isinstance(raw, dict) else ())
        if missing:
            raise CheckpointError(f"{path} is not an rftbench training state (it lacks {', '.join(sorted(missing))}). "
                                  f"Delete it to start the run from scratch.")
        state = cls(**{k: v for k, v in raw.items() if k in names})
        if cfg is not None and state.config:
            check_resume_config(json.loads(state.config), cfg, path)
        return state
