"""The resumable training state (``state.pt``): written atomically, read weights-only.

It holds model, optimizer, LR-schedule, grad-scaler, RNG (torch, CUDA, numpy, python) and
data-order state (epoch and next batch), plus the config keys that change training, so that a
run resumed with a different config is refused instead of silently training something else.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import ExperimentConfig
from .errors import CheckpointError

STATE_FORMAT = 2
# Config keys that may change between a run and its resumption (they do not change the weights).
RESUME_MAY_DIFFER = ("name", "experiment", "output_dir", "plugins", "eval.", "train.device", "train.progress",
                     "train.log_every", "train.checkpoint_every", "train.checkpoint_every_steps",
                     "train.val_every", "train.val_samples", "data.num_workers", "data.eval_batch_size")


def rng_state() -> dict[str, Any]:
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": repr(random.getstate()),
             "numpy": torch.from_numpy(keys.astype(np.int64)), "numpy_pos": int(pos),
             "numpy_gauss": (int(has_gauss), float(gauss))}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import ast

    torch.set_rng_state(state["torch"])
    py = ast.literal_eval(state["python"])
    random.setstate((py[0], tuple(py[1]), py[2]))
    has_gauss, gauss = state["numpy_gauss"]
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_state(path: Path, **state: Any) -> None:
    """Write the training state atomically: a temporary file, fsync, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def load_training_state(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read training checkpoint {path}: {type(exc).__name__}: {exc}. "
                              f"Delete it to start the run from scratch.") from None


def resume_config(cfg: ExperimentConfig) -> dict[str, str]:
    return {k: json.dumps(v, sort_keys=True, default=str) for k, v in cfg.flat().items()
            if not any(k == p or (p.endswith(".") and k.startswith(p)) for p in RESUME_MAY_DIFFER)}


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
