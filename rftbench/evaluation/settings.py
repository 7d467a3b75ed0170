"""What a record states about how one threat was measured (``settings`` of a record, and of each
threat in ``threats``): eps grid, distribution, sweep attack, AutoAttack and check settings.
Shards and resumed evaluations must agree on it. eps in [0,1] pixel units of ``norm``."""
from __future__ import annotations

from typing import Any, Optional, Sequence

from ..attacks.sweep import SweepSettings
from ..config import AutoAttackConfig, EvalChecksConfig
from .checks import default_large_eps


def measurement_settings(*, grid: list[float], distribution: str, sweep: SweepSettings, batch_size: int,
                         norm: str, eps: float, aa: Optional[AutoAttackConfig], n_aa: int, seed: int,
                         checks: EvalChecksConfig, sample_shape: Sequence[int]) -> dict[str, Any]:
    """The settings dict of one threat; ``aa`` None: AutoAttack does not run."""
    aa_st = None
    if aa is not None:
        aa_st = {"library": "pyautoattack", "version": aa.version, "requested_attacks": list(aa.attacks),
                 "eps": eps, "norm": norm, "n_samples_designated": n_aa, "chunk_size": aa.batch_size, "seed": seed,
                 "second_opinion": aa.second_opinion}
    large = checks.large_eps if checks.large_eps is not None else default_large_eps(norm, sample_shape)
    return {"eps_grid": grid, "distribution": distribution, "sweep": sweep.to_dict(),
            "batch_size": batch_size, "autoattack": aa_st,
            "checks": {"probe_samples": checks.probe_samples, "large_eps": large,
                       "large_eps_attack": sweep.for_large_eps().to_dict(),
                       "large_eps_max_accuracy": checks.large_eps_max_accuracy,
                       "sweep_vs_autoattack_max_gap": checks.sweep_vs_autoattack_max_gap,
                       "monotone_tolerance": checks.monotone_tolerance, "square_tolerance": checks.square_tolerance}}
