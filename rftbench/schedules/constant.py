"""``constant``: the target eps from the first step (Madry et al., 2018, PGD adversarial training)."""
from rftbench.scheduling import Schedule, register_schedule


@register_schedule("constant")
class Constant(Schedule):
    reference = "Madry et al., ICLR 2018, 'Towards Deep Learning Models Resistant to Adversarial Attacks'"

    def alpha(self, progress: float) -> float:
        return 1.0
