"""Models and data for the evaluator's tests: a sane non-robust model and models built to trip
one sanity check each (they take [0,1] images (N,1,16,16) and return logits (N,5))."""
from __future__ import annotations

import torch
from torch import nn

from conftest import tiny_config


def source_setup(**overrides):
    """The embedded pretrained small CNN on the task it was trained on (digits 0-4): clean
    accuracy near 1, not robust. Returns (cfg, model, test split)."""
    from rftbench.data import build_splits
    from rftbench.task import build_model, model_spec

    base = dict(data__options={"task": "source"}, data__eval_batch_size=16,
                eval__autoattack__batch_size=16, eval__autoattack__enabled=False)
    base.update(overrides)
    cfg = tiny_config(**base)
    model = build_model(cfg, 5).eval()
    splits = build_splits(cfg.data, model_spec(cfg), cfg.seed)
    return cfg, model, splits.test


class GuardedModel(nn.Module):
    """Non-robust (``base``) near the images it memorised, and 'robust' farther away.

    When the input is more than ``radius`` (Linf) from every memorised image, it returns the
    label of the nearest one as a constant logit vector (zero gradient). A PGD that lands far
    out therefore fails at a large eps although it broke the sample at a small eps: robust
    accuracy rises with eps, stays high at a very large eps, and an attack that starts far out
    (AutoAttack's APGD starts on the ball's surface) sees nothing to climb.
    """

    def __init__(self, base: nn.Module, images: torch.Tensor, labels: torch.Tensor, radius: float, classes: int = 5):
        super().__init__()
        self.base = base
        self.register_buffer("memory", images.reshape(len(images), -1).clone())
        self.register_buffer("labels", labels.clone())
        self.radius = radius
        self.classes = classes

    def forward(self, x):
        flat = x.reshape(len(x), -1)
        dist = (flat[:, None, :] - self.memory[None]).abs().amax(-1)
        d, nearest = dist.min(1)
        far = (d > self.radius)[:, None]
        const = nn.functional.one_hot(self.labels[nearest], self.classes).to(x.dtype) * 20.0
        return torch.where(far, const, self.base(x))


class QuantizedInputModel(nn.Module):
    """``base`` applied to the input rounded to ``levels`` grey levels: the gradient is zero
    almost everywhere, so gradient attacks cannot move while black-box search can."""

    def __init__(self, base: nn.Module, levels: int = 4):
        super().__init__()
        self.base, self.levels = base, levels

    def forward(self, x):
        return self.base(torch.round(x * self.levels) / self.levels)


class NoisyModel(nn.Module):
    """``base`` plus large random noise on the logits: its predictions do not reproduce."""

    def __init__(self, base: nn.Module, scale: float = 10.0, seed: int = 0):
        super().__init__()
        self.base, self.scale = base, scale
        self.gen = torch.Generator().manual_seed(seed)

    def forward(self, x):
        out = self.base(x)
        return out + self.scale * torch.randn(out.shape, generator=self.gen).to(out.device)


class LogitScaledModel(nn.Module):
    """``base`` with its logits multiplied by ``scale`` (1e4): the same predictions, but the
    softmax saturates, so cross-entropy gradients vanish (in float32) and CE attacks (PGD,
    APGD-CE) cannot move; scale-invariant losses (DLR, AutoAttack's APGD-T) still can."""

    def __init__(self, base: nn.Module, scale: float = 1e4):
        super().__init__()
        self.base, self.scale = base, scale

    def forward(self, x):
        return self.base(x) * self.scale


def masked_models(base: nn.Module) -> dict[str, nn.Module]:
    """The three masked defences the evaluator must flag (and never certify)."""
    return {"logit_scaling": LogitScaledModel(base).eval(), "zero_gradient_quantisation": QuantizedInputModel(base).eval(),
            "random_noise": NoisyModel(base, scale=5.0).eval()}
