"""``epsilon_scheduling``: zero eps until ``start``, a linear ramp to the target until ``end``,
then hold (Ngnawé et al., 2025, Epsilon-Scheduling; the paper uses T1=12, T2=37 of T=50 epochs,
i.e. start=0.24, end=0.74). start = 0 is a linear warm-up; start = end = 0 is constant."""
from rftbench.scheduling import RampSchedule, register_schedule


@register_schedule("epsilon_scheduling")
class EpsilonScheduling(RampSchedule):
    reference = ("Ngnawé et al., 2025, 'Robust Fine-Tuning from Non-Robust Pretrained Models: "
                 "Mitigating Suboptimal Transfer With Epsilon-Scheduling'")

    def ramp(self, u: float) -> float:
        return u
