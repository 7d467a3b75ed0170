"""The one setup door: from a config to the model, the data splits and the device, built once.

:func:`build_task` is what training, evaluation, tuning and the benchmarks call. The model's
input spec comes from its family's metadata (:func:`rftbench.models.data_spec`), so the splits
are built before the model and a hub or zoo backbone's weights are read exactly once.

The order is fixed because numbers depend on it: the splits are built before the global seed
is set (a dataset factory may draw from the global generators), the model after it (its new
head's initialisation draws from them).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from .config import ExperimentConfig
from .data import Splits, build_splits
from .errors import ConfigError
from .models import PixelModel, create_model, data_spec, split_name
from .spec import DataSpec

__all__ = ["Task", "build_model", "build_task", "model_spec", "resolve_device", "seed_everything"]


@dataclass
class Task:
    """What one run works on: ``model`` (on ``device``; channels-last if ``train.channels_last``),
    its ``splits`` (images in [0,1], transformed for ``spec``) and ``spec``, the model's input spec."""

    model: PixelModel
    splits: Splits
    device: torch.device
    spec: DataSpec


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (torch seeds every CUDA device too)."""
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
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device {name!r} is not a device; use auto, cpu, cuda, cuda:1 or mps.") from None
    _check_device_present(device)
    return device


def _check_device_present(device: torch.device) -> None:
    """Refuse a CUDA or MPS device this machine does not have (before any run is created)."""
    if device.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0 or (device.index is not None and device.index >= n):
            have = f"{n} CUDA device(s)" if n else "no usable CUDA GPU"
            raise ConfigError(f"train.device {str(device)!r} is not available: this machine has {have}. "
                              f"Use train.device: auto (or cpu).")
    elif device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("train.device 'mps' is not available on this machine; use train.device: auto (or cpu).")


def build_model(cfg: ExperimentConfig, num_classes: int) -> PixelModel:
    """``cfg.model`` with a ``num_classes``-way head (0: a ``file:`` checkpoint keeps its own), on the CPU."""
    mc = cfg.model
    return create_model(mc.name, num_classes, pretrained=mc.pretrained, weights=mc.weights, kwargs=mc.kwargs)


def model_spec(cfg: ExperimentConfig) -> DataSpec:
    """The input spec of ``cfg.model``, from its family's metadata (no build, no weights read)."""
    mc = cfg.model
    return data_spec(mc.name, pretrained=mc.pretrained, weights=mc.weights, kwargs=mc.kwargs)


def _keeps_own_head(cfg: ExperimentConfig, keep_head: bool) -> bool:
    # only a file: checkpoint carries a head trained for a task; the other families' heads
    # (ImageNet, a zoo's dataset, the embedded source task) are always replaced
    return keep_head and split_name(cfg.model.name)[0] == "file"


def _check_own_head(cfg: ExperimentConfig, model: PixelModel, splits: Splits) -> None:
    if model.num_classes != splits.num_classes:
        raise ConfigError(
            f"{cfg.model.name} has {model.num_classes} outputs but dataset {cfg.data.name!r} has "
            f"{splits.num_classes} classes: its head was not trained for this task. Evaluate it on the "
            f"dataset it was fine-tuned on, or fine-tune it first (rftbench train).")


def build_task(cfg: ExperimentConfig, *, keep_head: bool = False) -> Task:
    """Build the model, splits and device of ``cfg`` (each once).

    Order: device; the model's input spec from metadata; the splits (``cfg.data`` with
    ``cfg.seed``); then the global seed; then the model with a ``splits.num_classes``-way head,
    moved to the device. A ``file:`` checkpoint whose head already has the dataset's class count
    keeps it; another head is replaced by a fresh one. ``keep_head``: evaluate the model as it
    is: a ``file:`` checkpoint keeps its own trained head, which must fit the dataset's classes
    (else :class:`ConfigError`); the other families have no task head to keep and get a fresh
    one, as in training.
    """
    device = resolve_device(cfg.train.device)
    spec = model_spec(cfg)
    splits = build_splits(cfg.data, spec, cfg.seed)
    seed_everything(cfg.seed)
    own_head = _keeps_own_head(cfg, keep_head)
    model = build_model(cfg, 0 if own_head else splits.num_classes)
    if own_head:
        _check_own_head(cfg, model, splits)
    if model.spec != spec:
        raise ConfigError(f"model family of {cfg.model.name!r} answered the input spec {spec} but built a model "
                          f"with {model.spec}; its spec reader does not match its factory.")
    model = model.to(device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return Task(model=model, splits=splits, device=device, spec=spec)
