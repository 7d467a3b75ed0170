"""The embedded default: scikit-learn's 8x8 digits and a non-robust pretrained small CNN.

No network is needed. The *source* task (digits 0-4) is used to pretrain the built-in network
plainly (no attack); the *target* task (digits 5-9, relabelled 0-4) is what rftbench robustly
fine-tunes on. The pretrained checkpoint is cached (``$RFTBENCH_CACHE`` or
``~/.cache/rftbench``) and reused by later runs; several processes may ask for it at once (the
first pretrains under a file lock, the others wait and read its file).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import random
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .data.digits import SOURCE_CLASSES, TARGET_CLASSES, load_digits_tensors
from .models.builtin import register_checkpoint_provider
from .paths import cache_dir, file_lock

__all__ = ["PRETRAIN_VERSION", "SOURCE_CLASSES", "TARGET_CLASSES", "cache_dir", "checkpoint_path",
           "load_digits_tensors", "pretrained_checkpoint"]

PRETRAIN_VERSION = 2  # bump when the pretraining recipe changes, to invalidate caches


def checkpoint_path(model_name: str = "small_cnn", *, epochs: int = 15, seed: int = 0) -> Path:
    """Where the pretrained checkpoint of built-in ``model_name`` is cached (it may not exist yet)."""
    tag = hashlib.sha256(f"{model_name}-{epochs}-{seed}-v{PRETRAIN_VERSION}".encode()).hexdigest()[:10]
    return cache_dir() / f"pretrained-{model_name}-digits-source-{tag}.safetensors"


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run the block without touching the caller's random state (Python, NumPy, torch CPU and CUDA).

    Pretraining seeds and draws from the global generators; whether it runs (first use) or not
    (cached) must not change what the caller draws next.
    """
    py_state, np_state = random.getstate(), np.random.get_state()
    # every CUDA device, even before CUDA is initialised: torch.manual_seed inside the block
    # would otherwise replace a seed the caller queued for CUDA's lazy initialisation
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    mps_state = torch.mps.get_rng_state() if mps else None
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
            if mps_state is not None:
                torch.mps.set_rng_state(mps_state)


def _save_atomically(model, path: Path) -> None:
    """Write the checkpoint (and its ``.json``) under temporary names, then rename into place:
    a reader never sees a partial file, and the ``.safetensors`` appears last."""
    from .models import save_checkpoint

    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    save_checkpoint(model, tmp)
    os.replace(str(tmp) + ".json", str(path) + ".json")
    os.replace(tmp, path)


@register_checkpoint_provider  # the weights of a pretrained built-in (rftbench.models.builtin)
def pretrained_checkpoint(model_name: str = "small_cnn", *, epochs: int = 15, seed: int = 0) -> Path:
    """Path of the non-robust checkpoint of built-in ``model_name`` pretrained on digits 0-4.

    Trains it (plain cross-entropy, ~10 s on 2 CPU cores) on the first call and caches it. Safe
    under concurrent first use: one process pretrains, the others wait for its file. The
    caller's random state is left as it was.
    """
    from .models import BUILTIN_MODELS

    BUILTIN_MODELS.get(model_name)  # an unknown name fails before any lock or work
    path = checkpoint_path(model_name, epochs=epochs, seed=seed)
    if path.is_file():
        return path
    with file_lock(path.with_name(path.name + ".lock")):
        if path.is_file():  # another process finished it while this one waited
            return path
        with preserved_rng():
            model = _pretrain(model_name, epochs=epochs, seed=seed)
        _save_atomically(model, path)
    return path


def _pretrain(model_name: str, *, epochs: int, seed: int):
    """Plainly train built-in ``model_name`` on the source digits; returns the PixelModel in eval mode.

    The trainer's plain path: objective ``ce`` (never an attack), no tracking, progress,
    validation or checkpoints; SGD with warm-up for 30% of training, then cosine decay.
    """
    from torch.utils.data import TensorDataset

    from .config import parse_config
    from .data import Splits
    from .models import BUILTIN_MODELS, PixelModel
    from .task import Task
    from .training import Trainer

    entry = BUILTIN_MODELS.get(model_name)
    c, h, _ = entry.spec.input_size
    x, y = load_digits_tensors(h)
    keep = torch.isin(y, torch.tensor(SOURCE_CLASSES))
    x, y = x[keep], y[keep]
    if c != 1:
        x = x.expand(-1, c, -1, -1).contiguous()
    torch.manual_seed(seed)
    arch = {"name": f"builtin:{model_name}", "num_classes": len(SOURCE_CLASSES),
            "kwargs": dict(entry.kwargs), "spec": entry.spec.to_dict()}
    model = PixelModel(entry.build(num_classes=len(SOURCE_CLASSES), **entry.kwargs), entry.spec, arch)
    cfg = parse_config({
        "name": f"pretrain-{model_name}", "seed": seed, "model": {"name": model_name, "pretrained": False},
        "data": {"batch_size": 64}, "schedule": {"name": "none"},
        "train": {"epochs": epochs, "objective": "ce", "optimizer": "sgd", "lr": 0.05, "momentum": 0.9,
                  "nesterov": False, "weight_decay": 5e-4, "warmup_epochs": 0.3 * epochs, "device": "cpu",
                  "progress": "off", "log_every": 0}}, "embedded pretraining")
    empty = TensorDataset(x[:0], y[:0])
    splits = Splits(TensorDataset(x, y), empty, empty, len(SOURCE_CLASSES), [str(k) for k in SOURCE_CLASSES])
    task = Task(model=model, splits=splits, device=torch.device("cpu"), spec=entry.spec)
    # alone even on a torchrun rank: whichever rank holds the lock pretrains, the others wait
    return Trainer(cfg, task, validate=False, distributed=False).run().model  # run() leaves the model in eval mode
