"""``lp_ft``: probe the head alone for the first ``probe`` fraction of training, then fine-tune
everything (LP-FT, Kumar et al., 2022).

How the two phases see the schedules is recorded with the run (options):
``eps``: ``whole`` (default; the eps schedule runs over all of training as in any regime) or
``finetune`` (eps = 0 while probing, and the eps schedule runs from its start over the
fine-tuning phase alone); ``lr``: ``whole`` (default; one warm-up + cosine over all of
training) or ``restart`` (each phase its own warm-up + cosine decay)."""
from rftbench.errors import ConfigError
from rftbench.params import Param
from rftbench.regimes import Regime, head_names, register_regime

CHOICES = {"eps": ("whole", "finetune"), "lr": ("whole", "restart")}


@register_regime("lp_ft")
class LinearProbeThenFinetune(Regime):
    reference = ("Kumar, Raghunathan, Jones, Ma & Liang, ICLR 2022, 'Fine-Tuning can Distort Pretrained Features "
                 "and Underperform Out-of-Distribution' (LP-FT)")
    params = (Param("probe", 0.25, 0.01, 0.99, help="fraction of training spent probing the head alone"),)
    options = {"eps": "whole", "lr": "whole"}

    def check(self):
        for key, allowed in CHOICES.items():
            if self.opts[key] not in allowed:
                raise ConfigError(f"regime 'lp_ft': option {key} must be one of {', '.join(allowed)}, "
                                  f"got {self.opts[key]!r}.")

    def boundaries(self):
        return (float(self.values["probe"]),)

    def trainable(self, model, phase):
        return head_names(model) if phase == 0 else {n for n, _ in model.net.named_parameters()}

    def eps_progress(self, progress):
        if self.opts["eps"] == "whole":
            return progress
        probe = float(self.values["probe"])
        return None if progress < probe else (progress - probe) / (1.0 - probe)

    def lr_restarts(self):
        return self.opts["lr"] == "restart"
