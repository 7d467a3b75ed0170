"""``cosine``: the paper's phases (zero until ``start``, ramp until ``end``, then hold) with a
smooth half-cosine ramp, (1 - cos(pi u)) / 2, whose slope is zero where it leaves 0 and where it
reaches the target. The shape is the cosine annealing curve of SGDR (Loshchilov & Hutter, 2017)
turned upside down into a warm-up."""
import math

from rftbench.scheduling import RampSchedule, register_schedule


@register_schedule("cosine")
class Cosine(RampSchedule):
    reference = ("Loshchilov & Hutter, ICLR 2017, 'SGDR: Stochastic Gradient Descent with Warm Restarts' "
                 "(cosine curve, used here as an eps warm-up)")

    def ramp(self, u: float) -> float:
        return 0.5 * (1.0 - math.cos(math.pi * u))
