"""An exponential moving average of the weights (``train.ema``), kept by timm's ``ModelEmaV3``.

The average covers ``model.net``'s whole state dict (parameters and floating buffers such as
BatchNorm statistics; integer buffers are copied) and is updated after every optimizer step,
with the 1-based optimizer step count (timm: the first update copies the weights). At the end
of training the weights ``train.ema.evaluate`` names go into the model that is evaluated and
saved as ``model.safetensors``; the other set is saved beside it (``model_raw.safetensors`` or
``model_ema.safetensors``) and, with ``evaluate: both``, scored too.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable, Optional

from torch import nn

from ..config import EmaConfig
from ..models import save_checkpoint


class WeightsEma:
    """The EMA of ``net``'s weights as ``cfg`` says (decay, warm-up)."""

    def __init__(self, net: nn.Module, cfg: EmaConfig):
        from timm.utils import ModelEmaV3

        self.cfg = cfg
        self.ema = ModelEmaV3(net, decay=cfg.decay, use_warmup=cfg.warmup)

    def update(self, net: nn.Module, opt_steps: int) -> None:
        """After optimizer step ``opt_steps`` (1-based)."""
        self.ema.update(net, step=opt_steps)

    def state_dict(self) -> dict[str, Any]:
        return self.ema.module.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ema.module.load_state_dict(state)

    def finish(self, model: Any, run_dir: Optional[Path], finish: Callable[[Any], None]) -> dict[str, Any]:
        """Put the evaluated weights into ``model`` (a PixelModel holding the raw ones), run the
        regime's ``finish`` on both sets (e.g. merge LoRA adapters) and save the other set in
        ``run_dir``; returns ``{"weights", "other_weights", "other_checkpoint", "other_model"}``
        (``other_model``: the other set to score too, with ``evaluate: both``)."""
        other = copy.deepcopy(model)
        if self.cfg.evaluate == "raw":
            other.net.load_state_dict(self.state_dict())
            scored, kept = "raw", "ema"
        else:
            model.net.load_state_dict(self.state_dict())
            scored, kept = "ema", "raw"
        finish(model)
        finish(other)
        path = save_checkpoint(other, run_dir / f"model_{kept}.safetensors") if run_dir is not None else None
        return {"weights": scored, "other_weights": kept, "other_checkpoint": path,
                "other_model": other if self.cfg.evaluate == "both" else None}
