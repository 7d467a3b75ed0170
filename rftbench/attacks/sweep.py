"""Eps-sweep attacks: the attacks that measure robust accuracy at each eps of a grid, behind
the :data:`SWEEP_ATTACKS` registry (``pgd``; ``apgd-ce``, the paper's metric; ``apgd-dlr``), configured by
one :class:`SweepSettings`.

Every attack's randomness is per sample: a random start is drawn from a seed of (settings
seed, dataset index, eps, restart) (:mod:`rftbench.attacks.startable`), so a sample's result
does not depend on which other samples share its batch, and the pruned sweep equals the naive
sweep with the nesting rule (:mod:`rftbench.attacks.pruned`).

eps is in [0,1] pixel units (the L2 radius in the same units for L2); images are (N,C,H,W) in
[0,1], labels int64 (N,), dataset indices (N,).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..registry import Registry
from .l1 import PyAutoAttackAPGDL1, l1_starts
from .norms import EVAL_NORMS, EvalNorm
from .startable import apgd_starts, make_apgd, make_pgd, per_sample_starts, predict

START_SEEDS = "per sample from (seed, dataset index, eps, restart)"


def _check_entry(name: str, obj: Any, source: str) -> None:
    if not (isinstance(obj, type) and issubclass(obj, SweepAttack)):
        raise ConfigError(f"sweep attack {name!r} ({source}) must be a SweepAttack subclass.")


SWEEP_ATTACKS: Registry[type["SweepAttack"]] = Registry("sweep attack", entry_point_group="rftbench.sweep_attacks",
                                                        check=_check_entry)


@dataclass(frozen=True)
class SweepSettings:
    """One eps-sweep attack: ``attack`` (a :data:`SWEEP_ATTACKS` name) with ``steps`` iterations
    and ``restarts`` runs per eps; a sample counts as broken at an eps when any restart
    misclassifies it, and only samples that survive a restart face the next.

    ``step_ratio``: PGD's step size / eps (None: 2.5 / steps); APGD adapts its own step (None).
    ``random_start``: whether restart 0 starts at a random point (further restarts always do;
    APGD always does). ``seed`` seeds every random start, per sample.
    """

    attack: str | tuple[str, ...] = "pgd"  # several names: the worst case per sample (:class:`WorstCaseSweep`)
    norm: EvalNorm = "Linf"
    steps: int = 10
    step_ratio: Optional[float] = None
    restarts: int = 1
    random_start: bool = False
    seed: int = 0

    def __post_init__(self):
        if self.norm not in EVAL_NORMS:
            raise ConfigError(f"a sweep attack's norm must be one of {', '.join(EVAL_NORMS)}, got {self.norm!r}.")
        if self.steps < 1 or self.restarts < 1:
            raise ConfigError(f"a sweep attack needs steps >= 1 and restarts >= 1, got {self.steps} and "
                              f"{self.restarts}.")
        if isinstance(self.attack, (list, tuple)):
            names = tuple(self.attack)
            if not names:
                raise ConfigError("eval.sweep_attack is an empty list; name one attack (pgd) or several for the "
                                  "worst case ([apgd-ce, apgd-dlr]).")
            object.__setattr__(self, "attack", names[0] if len(names) == 1 else names)
        cls = WorstCaseSweep if isinstance(self.attack, tuple) else SWEEP_ATTACKS.get(self.attack)
        cls.check(self)
        # the attack's defaults, written out so that the settings say what runs
        object.__setattr__(self, "step_ratio", cls.resolved_step_ratio(self))
        object.__setattr__(self, "random_start", self.random_start or cls.always_random_start)

    @property
    def implementation(self) -> "SweepAttack":
        if isinstance(self.attack, tuple):
            return WorstCaseSweep(self)
        return SWEEP_ATTACKS.get(self.attack)(self)

    @property
    def attack_names(self) -> tuple[str, ...]:
        """The sweep attack's name(s): one, or those of a worst case."""
        return self.attack if isinstance(self.attack, tuple) else (self.attack,)

    def describe(self) -> str:
        """Short name for the ER name: ``PGD-10``, ``L2-PGD-20+rs``, ``PGD-10x3``, ``APGD-CE-10``."""
        return self.implementation.describe()

    def to_dict(self) -> dict[str, Any]:
        """The settings as the evaluation record stores them (readable by :meth:`from_dict`)."""
        return self.implementation.to_dict()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SweepSettings":
        attack = tuple(d["attack"]) if isinstance(d["attack"], list) else d["attack"]
        return cls(attack=attack, norm=d["norm"], steps=int(d["steps"]), step_ratio=d.get("step_size_ratio"),
                   restarts=int(d.get("restarts", 1)), random_start=bool(d.get("random_start", False)),
                   seed=int(d.get("seed", 0)))

    def for_large_eps(self) -> "SweepSettings":
        """The attack of the large-eps check: these settings with at least 20 steps and the
        attack's default step (PGD: 2.5 / steps * eps; few large steps bounce between corners
        of a huge ball and would raise false alarms)."""
        return dataclasses.replace(self, steps=max(self.steps, 20), step_ratio=None)

    def robust(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, indices: Sequence[int], eps: float,
               first_grad: torch.Tensor | None = None) -> torch.Tensor:
        """Per-sample robustness (bool, N) at ``eps``; see :meth:`SweepAttack.robust`."""
        return self.implementation.robust(model, x, y, indices, eps, first_grad)


def describe_sweep(settings: dict[str, Any]) -> str:
    """:meth:`SweepSettings.describe` of a stored ``SweepSettings.to_dict()``."""
    return SweepSettings.from_dict(settings).describe()


class SweepAttack:
    """Base class of sweep attacks (register subclasses in :data:`SWEEP_ATTACKS`).

    A subclass builds its torchattacks-based attack for one eps (:meth:`build`) and runs it once
    per restart from a per-sample seeded start, saying which samples survived (:meth:`run`);
    :meth:`robust` does the rest.
    """

    label: ClassVar[str] = ""
    always_random_start: ClassVar[bool] = False
    adapts_step: ClassVar[bool] = False  # True: takes no step_size_ratio (APGD)

    def __init__(self, settings: SweepSettings):
        self.settings = settings

    @classmethod
    def check(cls, s: SweepSettings) -> None:
        """Raise ConfigError for settings this attack cannot run."""

    @classmethod
    def resolved_step_ratio(cls, s: SweepSettings) -> Optional[float]:
        return s.step_ratio

    def describe(self) -> str:
        s = self.settings
        name = f"{'' if s.norm == 'Linf' else s.norm + '-'}{self.label}-{s.steps}"
        if s.random_start and not self.always_random_start:
            name += "+rs"
        if s.restarts > 1:
            name += f"x{s.restarts}"
        return name

    def to_dict(self) -> dict[str, Any]:
        s = self.settings
        return {"attack": s.attack, "norm": s.norm, "steps": s.steps, "step_size_ratio": s.step_ratio,
                "restarts": s.restarts, "random_start": s.random_start, "seed": s.seed}

    def shares_first_step(self) -> bool:
        """Whether restart 0's first gradient is the clean images' at every eps (a sweep then
        computes it once per sample and passes it to :meth:`robust` as ``first_grad``)."""
        return False

    def build(self, model: nn.Module, eps: float) -> Any:
        raise NotImplementedError

    def run(self, model: nn.Module, attack: Any, x: torch.Tensor, y: torch.Tensor, indices: np.ndarray, eps: float,
            restart: int, first_grad: torch.Tensor | None) -> torch.Tensor:
        """Per-sample robustness (bool, N) after one restart at ``eps``."""
        raise NotImplementedError

    def robust(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, indices: Sequence[int], eps: float,
               first_grad: torch.Tensor | None = None) -> torch.Tensor:
        """Per-sample robustness (bool, N) at ``eps``: survived every restart (:meth:`run`; at
        eps = 0: clean correctness). ``indices``: the samples' dataset indices (they seed the
        random starts); ``first_grad`` (N,C,H,W): see :meth:`shares_first_step`."""
        if eps <= 0:
            return predict(model, x) == y
        s = self.settings
        alive = torch.ones(len(y), dtype=torch.bool, device=y.device)
        attack = self.build(model, eps)
        idx_np = np.asarray(indices)
        for r in range(s.restarts):
            pos = alive.nonzero().flatten()
            if len(pos) == 0:
                break
            grad = None if first_grad is None else first_grad[pos]
            alive[pos] = self.run(model, attack, x[pos], y[pos], idx_np[pos.cpu().numpy()], eps, r, grad)
        return alive


@SWEEP_ATTACKS.register("pgd")
class PGDSweep(SweepAttack):
    """torchattacks' PGD (Linf) / PGDL2 (L2) with step size ``step_ratio * eps``. Restart 0 starts
    at the clean image unless ``random_start``; further restarts at a per-sample seeded random
    point (:func:`~rftbench.attacks.startable.per_sample_starts`)."""

    label = "PGD"

    @classmethod
    def check(cls, s: SweepSettings) -> None:
        if s.norm == "L1":
            raise ConfigError("torchattacks has no L1 PGD: an L1 threat sweeps with apgd-ce (pyautoattack's L1 "
                              "APGD); set its sweep_attack: apgd-ce.")

    @classmethod
    def resolved_step_ratio(cls, s: SweepSettings) -> float:
        return s.step_ratio if s.step_ratio is not None else 2.5 / s.steps

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "library": "torchattacks",
                "class": "PGD" if self.settings.norm == "Linf" else "PGDL2", "start_seeds": START_SEEDS}

    def shares_first_step(self) -> bool:
        return not self.settings.random_start

    def build(self, model: nn.Module, eps: float) -> Any:
        s = self.settings
        return make_pgd(model, s.norm, eps, s.steps, s.step_ratio)

    def run(self, model, attack, x, y, indices, eps, restart, first_grad):
        """Robust: the final iterate is classified correctly."""
        s = self.settings
        if restart > 0 or s.random_start:
            init = per_sample_starts(indices, x.shape[1:], norm=s.norm, eps=eps, restart=restart, seed=s.seed)
            adv = attack(x, y, init_delta=init)
        elif first_grad is not None:
            adv = attack(x, y, first_grad=first_grad)
        else:
            adv = attack(x, y)
        return predict(model, adv) == y


@SWEEP_ATTACKS.register("apgd-ce")
class APGDCESweep(SweepAttack):
    """torchattacks' APGD with the cross-entropy loss (Croce & Hein, 2020; the paper's sweep
    attack, 10 steps): step size adapted per sample (2 * eps at first, halved where the loss
    stalls), every restart from a per-sample seeded random point on the ball's surface
    (:func:`~rftbench.attacks.startable.apgd_starts`)."""

    label = "APGD-CE"
    loss = "ce"
    always_random_start = True
    adapts_step = True

    @classmethod
    def check(cls, s: SweepSettings) -> None:
        if s.step_ratio is not None:
            raise ConfigError(f"eval.step_size_ratio sets PGD's step size; {cls.label} adapts its own. Remove "
                              f"eval.step_size_ratio or use eval.sweep_attack: pgd.")

    def to_dict(self) -> dict[str, Any]:
        if self.settings.norm == "L1":
            return {**super().to_dict(), "loss": self.loss, "rho": 0.75, "library": "pyautoattack",
                    "class": "APGDAttack", "step_size": "adaptive (pyautoattack's L1 rule, sparse top-k steps)",
                    "start_seeds": START_SEEDS}
        return {**super().to_dict(), "loss": self.loss, "rho": 0.75, "library": "torchattacks", "class": "APGD",
                "step_size": "adaptive: 2 * eps at first, halved per sample where the loss stalls",
                "start_seeds": START_SEEDS}

    def build(self, model: nn.Module, eps: float) -> Any:
        if self.settings.norm == "L1":
            return PyAutoAttackAPGDL1(model, eps, self.settings.steps, self.loss)
        return make_apgd(model, self.settings.norm, eps, self.settings.steps, self.loss)

    def run(self, model, attack, x, y, indices, eps, restart, first_grad):
        """Robust: no iterate misclassified the sample (APGD's own verdict). A sample leaves the
        run once fooled (it stays fooled; the others' runs do not depend on it). L1: pyautoattack's
        APGD from a per-sample seeded start (:mod:`rftbench.attacks.l1`), run in full."""
        s = self.settings
        if s.norm == "L1":
            return attack.run_from(x, y, l1_starts(indices, x.shape[1:], eps=eps, restart=restart, seed=s.seed))
        init = apgd_starts(indices, x.shape[1:], norm=s.norm, eps=eps, restart=restart, seed=s.seed)
        return attack.run_from(x, y, init, stop_when_fooled=True)[0]


@SWEEP_ATTACKS.register("apgd-dlr")
class APGDDLRSweep(APGDCESweep):
    """APGD with the DLR loss (Croce & Hein, 2020; AutoAttack's second attack), otherwise as
    :class:`APGDCESweep`. DLR needs at least 3 classes."""

    label = "APGD-DLR"
    loss = "dlr"


class WorstCaseSweep(SweepAttack):
    """Several sweep attacks as one (``SweepSettings.attack`` a tuple of names, e.g.
    ``(apgd-ce, apgd-dlr)``): a sample is robust at eps only if it survives every one of them
    (each attacks the survivors of the previous ones). Each attack's randomness is per sample,
    so the worst case is too, and the pruned sweep stays exact. A scale-invariant loss (DLR)
    beside CE catches models whose CE gradients vanish (logits scaled up)."""

    def __init__(self, settings: SweepSettings):
        super().__init__(settings)
        self.parts = [SWEEP_ATTACKS.get(n)(self.part_settings(settings, n)) for n in settings.attack]

    @staticmethod
    def part_settings(s: SweepSettings, name: str) -> SweepSettings:
        cls = SWEEP_ATTACKS.get(name)
        return dataclasses.replace(s, attack=name, step_ratio=None if cls.adapts_step else s.step_ratio,
                                   random_start=s.random_start and not cls.always_random_start)

    @classmethod
    def check(cls, s: SweepSettings) -> None:
        if len(set(s.attack)) != len(s.attack):
            raise ConfigError(f"eval.sweep_attack lists an attack twice: {list(s.attack)}.")
        classes = [SWEEP_ATTACKS.get(n) for n in s.attack]
        if s.step_ratio is not None and all(c.adapts_step for c in classes):
            raise ConfigError(f"eval.step_size_ratio sets PGD's step size; none of {list(s.attack)} takes it. "
                              f"Remove eval.step_size_ratio.")

    @classmethod
    def resolved_step_ratio(cls, s: SweepSettings) -> Optional[float]:
        ratios = [SWEEP_ATTACKS.get(n).resolved_step_ratio(cls.part_settings(s, n)) for n in s.attack]
        return next((r for r in ratios if r is not None), None)

    def describe(self) -> str:
        return "worst(" + "|".join(p.describe() for p in self.parts) + ")"

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "attack": list(self.settings.attack), "library": "torchattacks",
                "worst_case_of": [p.to_dict() for p in self.parts],
                "rule": "robust at eps only if the sample survives every listed attack"}

    def robust(self, model, x, y, indices, eps, first_grad=None):
        """Robust under every part (each on the survivors of the previous ones)."""
        if eps <= 0:
            return predict(model, x) == y
        alive = torch.ones(len(y), dtype=torch.bool, device=y.device)
        idx_np = np.asarray(indices)
        for part in self.parts:
            pos = alive.nonzero().flatten()
            if len(pos) == 0:
                break
            alive[pos] = part.robust(model, x[pos], y[pos], idx_np[pos.cpu().numpy()], eps)
        return alive
