"""``step``: piecewise-constant levels. Between ``start`` and ``end`` eps climbs in ``levels``
equal stages, 0, 1/levels, ..., (levels-1)/levels of the target, each held for an equal share of
the ramp, and reaches the target at ``end`` (a staircase under the paper's linear ramp;
levels = 1 is zero until ``end``, then the target). Staged increases of attack strength are the
curriculum of Cai, Liu & Song, 2018, 'Curriculum Adversarial Training'."""
import math

from rftbench.scheduling import Param, RampSchedule, register_schedule


@register_schedule("step")
class Step(RampSchedule):
    reference = "Cai, Liu & Song, IJCAI 2018, 'Curriculum Adversarial Training' (staged attack strength)"
    params = RampSchedule.params + (
        Param("levels", 4, 1, 10, kind="int", help="number of equal stages between start and end"),
    )

    def ramp(self, u: float) -> float:
        levels = self.values["levels"]
        # the nudge keeps a stage boundary that falls on a step on that step despite rounding
        # ((0.3 - 0.2) / 0.4 * 4 is 0.999...)
        return min(math.floor(u * levels + 1e-9), levels) / levels
