"""The embedded default: scikit-learn's 8x8 digits and a non-robust pretrained small CNN.

No network is needed. The *source* task (digits 0-4) is used to pretrain the built-in network
plainly (no attack); the *target* task (digits 5-9, relabelled 0-4) is what rftbench robustly
fine-tunes on. The pretrained checkpoint is cached (``$RFTBENCH_CACHE`` or
``~/.cache/rftbench``) and reused by later runs.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

SOURCE_CLASSES = (0, 1, 2, 3, 4)
TARGET_CLASSES = (5, 6, 7, 8, 9)
PRETRAIN_VERSION = 1  # bump when the pretraining recipe changes, to invalidate caches


def cache_dir() -> Path:
    root = os.environ.get("RFTBENCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "rftbench")
    p = Path(root)
    p.mkdir(parents=True, exist_ok=True)
    return p


def load_digits_tensors(size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as float images in [0,1], shape (N, 1, size, size), and int64 labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp_(0, 1)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    return x, y


def pretrained_checkpoint(model_name: str = "small_cnn", *, epochs: int = 15, seed: int = 0) -> Path:
    """Path of the non-robust checkpoint of built-in ``model_name`` pretrained on digits 0-4.

    Trains it (plain cross-entropy, ~10 s on 2 CPU cores) on the first call and caches it.
    """
    from .models import BUILTIN_MODELS, PixelModel, save_checkpoint

    entry = BUILTIN_MODELS.get(model_name)
    tag = hashlib.sha256(f"{model_name}-{epochs}-{seed}-v{PRETRAIN_VERSION}".encode()).hexdigest()[:10]
    path = cache_dir() / f"pretrained-{model_name}-digits-source-{tag}.safetensors"
    if path.is_file():
        return path
    c, h, _ = entry.spec.input_size
    x, y = load_digits_tensors(h)
    keep = torch.isin(y, torch.tensor(SOURCE_CLASSES))
    x, y = x[keep], y[keep]
    if c != 1:
        x = x.expand(-1, c, -1, -1).contiguous()
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    arch = {"name": f"builtin:{model_name}", "num_classes": len(SOURCE_CLASSES),
            "kwargs": dict(entry.kwargs), "spec": entry.spec.to_dict()}
    model = PixelModel(entry.build(num_classes=len(SOURCE_CLASSES), **entry.kwargs), entry.spec, arch)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    n, bs = len(x), 64
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=epochs * ((n + bs - 1) // bs))
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, bs):
            idx = perm[i:i + bs]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    save_checkpoint(model, path)
    return path
