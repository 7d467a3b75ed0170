"""Optimizer, parameter groups and the LR schedule (linear warm-up, then cosine decay).

LRs are per optimizer step; each group's LR is its scale times ``train.lr`` (:func:`group_settings`);
which parameters are in the groups is the fine-tuning regime's choice (:mod:`rftbench.regimes`).
"""
from __future__ import annotations

import math
from typing import Any, Optional

import torch

from ..config import ExperimentConfig
from ..models import PixelModel
from ..regimes import Regime, create_regime, head_names


def group_settings(cfg: ExperimentConfig) -> dict[str, tuple[float, float]]:
    """(LR scale on ``train.lr``, weight decay) of each optimizer group: ``backbone`` (1,
    ``train.weight_decay``), ``head`` (``model.head_lr_scale``, ``model.head_weight_decay``) and
    ``lora`` (``train.lora_lr_scale``, ``train.lora_weight_decay``); an unset decay is
    ``train.weight_decay``."""
    tc, mc = cfg.train, cfg.model
    wd = lambda v: tc.weight_decay if v is None else v  # noqa: E731
    return {"backbone": (1.0, tc.weight_decay), "head": (mc.head_lr_scale, wd(mc.head_weight_decay)),
            "lora": (tc.lora_lr_scale, wd(tc.lora_weight_decay))}


def param_groups(model: PixelModel, cfg: ExperimentConfig, regime: Optional[Regime] = None) -> list[dict[str, Any]]:
    """The optimizer's parameter groups: every parameter the regime (default ``cfg.model.regime``)
    trains in some phase, grouped by its kind (``regime.group_of``: backbone, head, lora; each with
    :func:`group_settings`) and, unless ``train.decay_norm_and_bias``, split off into a
    ``<kind>_nodecay`` group without weight decay when it has ndim <= 1 (biases, norm weights),
    as timm does. Parameters the regime never trains get ``requires_grad`` False and no group."""
    regime = regime if regime is not None else create_regime(cfg.model.regime)
    trained, head = regime.in_optimizer(model), head_names(model)
    settings = group_settings(cfg)
    groups: dict[tuple[str, bool], list] = {}
    for name, p in model.net.named_parameters():
        if name not in trained:
            p.requires_grad_(False)
            continue
        no_decay = p.ndim <= 1 and not cfg.train.decay_norm_and_bias
        groups.setdefault((regime.group_of(model, name, head), no_decay), []).append(p)
    out = []
    for (kind, no_decay), params in groups.items():
        scale, decay = settings[kind]
        out.append({"params": params, "lr_scale": scale, "weight_decay": 0.0 if no_decay else decay,
                    "name": kind + ("_nodecay" if no_decay else "")})
    return out


def make_optimizer(model: PixelModel, cfg: ExperimentConfig, regime: Optional[Regime] = None) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov when ``train.nesterov``) or AdamW over :func:`param_groups`."""
    tc = cfg.train
    groups = param_groups(model, cfg, regime)
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


def make_lr_schedule(opt: torch.optim.Optimizer, total_steps: int, warmup_steps: int, restarts: tuple[int, ...] = ()):
    """Linear warm-up for ``warmup_steps`` optimizer steps, then cosine decay to 0; with
    ``restarts`` (optimizer steps), each segment between them has a warm-up and decay of its own."""
    if not restarts:
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, total_steps, warmup_steps))
    edges = (0, *restarts, total_steps)

    def factor(step: int) -> float:
        i = max(j for j in range(len(edges) - 1) if step >= edges[j] or j == 0)
        return lr_factor(step - edges[i], edges[i + 1] - edges[i], warmup_steps)

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def group_lr(opt: torch.optim.Optimizer, kind: str) -> Optional[float]:
    """The current LR of the ``backbone`` or ``head`` parameter groups (None if there are none)."""
    for g in opt.param_groups:
        if str(g.get("name", "")).startswith(kind):
            return float(g["lr"])
    return None


def current_lr(opt: torch.optim.Optimizer) -> float:
    """The backbone's LR (the head's in a linear probe), the one logged as ``lr``."""
    return group_lr(opt, "backbone") or group_lr(opt, "head") or 0.0


def set_train_mode(model: PixelModel, cfg: ExperimentConfig, trained: Optional[set[str]] = None,
                   regime: Optional[Regime] = None) -> None:
    """Training mode for the parts of the model that train (``trained``: parameter names; None:
    phase 0 of ``cfg.model.regime``), eval mode for frozen parts (their BatchNorm statistics and
    dropout do not change: ``regime.train_mode``); ``train.batchnorm: frozen``
    keeps every BatchNorm on its running statistics (its affine parameters still train)."""
    regime = regime if regime is not None else create_regime(cfg.model.regime)
    regime.train_mode(model, trained if trained is not None else regime.trainable(model, 0))
    if cfg.train.batchnorm == "frozen":
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
