"""``linear_probe``: only the classification head trains; the backbone stays frozen, in eval
mode (its BatchNorm statistics and dropout do not change either)."""
from rftbench.regimes import Regime, head_names, register_regime


@register_regime("linear_probe")
class LinearProbe(Regime):
    reference = "linear probing (Kumar et al., ICLR 2022, 'Fine-Tuning can Distort Pretrained Features')"

    def trainable(self, model, phase):
        return head_names(model)
