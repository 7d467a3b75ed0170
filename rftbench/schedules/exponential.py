"""``exponential``: the paper's phases with a slow-then-fast ramp,
(exp(k u) - 1) / (exp(k) - 1) for sharpness k: almost flat at first, steepest as it reaches the
target (k -> 0 is the linear ramp). Exponential growth of eps early in the warm-up is the
eps schedule of certified training in Shi et al., 2021 (auto_LiRPA's SmoothedScheduler)."""
import math

from rftbench.scheduling import Param, RampSchedule, register_schedule


@register_schedule("exponential")
class Exponential(RampSchedule):
    reference = ("Shi, Wang, Zhang, Yi & Hsieh, NeurIPS 2021, 'Fast Certified Robust Training with "
                 "Short Warmup' (exponential eps growth)")
    params = RampSchedule.params + (
        Param("sharpness", 4.0, 0.1, 20.0, log=True, help="k: how much slower the start is than the end"),
    )

    def ramp(self, u: float) -> float:
        k = self.values["sharpness"]
        return math.expm1(k * u) / math.expm1(k)
