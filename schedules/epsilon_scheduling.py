"""``epsilon_scheduling``: zero eps until ``start``, a linear ramp to the target until ``end``,
then hold (Ngnawé et al., 2025, Epsilon-Scheduling; the paper uses T1=12, T2=37 of T=50 epochs,
i.e. start=0.24, end=0.74). start = 0 is a linear warm-up; start = end = 0 is constant."""
from rftbench.errors import ConfigError
from rftbench.scheduling import Param, Schedule, register_schedule


@register_schedule("epsilon_scheduling")
class EpsilonScheduling(Schedule):
    reference = ("Ngnawé et al., 2025, 'Robust Fine-Tuning from Non-Robust Pretrained Models: "
                 "Mitigating Suboptimal Transfer With Epsilon-Scheduling'")
    params = (
        Param("start", 0.24, 0.0, 1.0, help="fraction of training with eps = 0 (T1 / T)"),
        Param("end", 0.74, 0.0, 1.0, help="fraction of training at which eps reaches the target (T2 / T)"),
    )

    @classmethod
    def suggest_params(cls, trial, prefix=""):
        start = trial.suggest_float(f"{prefix}start", 0.0, 1.0)
        end = trial.suggest_float(f"{prefix}end", start, 1.0)  # keeps start <= end
        return {"start": start, "end": end}

    def check(self, values):
        if values["start"] > values["end"]:
            raise ConfigError(
                f"schedule 'epsilon_scheduling': start={values['start']} must not exceed end={values['end']}."
            )

    def alpha(self, progress: float) -> float:
        start, end = self.values["start"], self.values["end"]
        if progress < start:
            return 0.0
        if progress >= end:
            return 1.0
        return (progress - start) / (end - start)
