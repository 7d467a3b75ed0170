"""``none``: eps = 0 throughout, i.e. plain (non-robust) fine-tuning; the baseline of every table."""
from rftbench.scheduling import Schedule, register_schedule


@register_schedule("none")
class NoAttack(Schedule):
    reference = "standard fine-tuning (no adversarial examples)"

    def alpha(self, progress: float) -> float:
        return 0.0
