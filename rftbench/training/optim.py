"""Optimizer, parameter groups and the LR schedule (linear warm-up, then cosine decay).

LRs are per optimizer step; the head's LR is ``model.head_lr_scale`` times the backbone's.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import torch

from ..config import ExperimentConfig
from ..models import PixelModel


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
    mc = cfg.model
    head_decay = mc.head_weight_decay if mc.head_weight_decay is not None else cfg.train.weight_decay
    out = []
    for (is_head, no_decay), params in groups.items():
        out.append({"params": params, "lr_scale": mc.head_lr_scale if is_head else 1.0,
                    "weight_decay": 0.0 if no_decay else (head_decay if is_head else cfg.train.weight_decay),
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


def current_lr(opt: torch.optim.Optimizer) -> float:
    """The backbone's LR (the head's in a linear probe), the one logged as ``lr``."""
    return group_lr(opt, "backbone") or group_lr(opt, "head") or 0.0


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
    if cfg.train.batchnorm == "frozen":  # running statistics only; the affine parameters still train
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
