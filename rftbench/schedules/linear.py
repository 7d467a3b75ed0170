"""``linear``: eps ramps linearly from 0 to the target over the first ``warmup`` fraction of
training, then holds (the eps warm-up of fast adversarial training, Wong et al., 2020)."""
from rftbench.scheduling import Param, Schedule, register_schedule


@register_schedule("linear")
class LinearWarmup(Schedule):
    reference = "Wong, Rice & Kolter, ICLR 2020, 'Fast is better than free' (eps warm-up)"
    params = (Param("warmup", 0.5, 0.0, 1.0, help="fraction of training spent ramping 0 -> target"),)

    def alpha(self, progress: float) -> float:
        warmup = self.values["warmup"]
        return 1.0 if warmup == 0 else min(progress / warmup, 1.0)
