"""``full``: every parameter trains from the first step (the paper's regime)."""
from rftbench.regimes import Regime, register_regime


@register_regime("full")
class Full(Regime):
    reference = "full fine-tuning (Ngnawé et al., 2025, fine-tune every backbone fully)"
