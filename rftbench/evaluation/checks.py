"""Sanity checks against gradient masking and broken evaluations.

Each check takes numbers an evaluation measured (per-sample flags or counts, never a model) and
returns a :class:`CheckResult`; a failed check becomes a warning in the evaluation record, and
the leaderboard shows it. The checks (Carlini et al., "On Evaluating Adversarial Robustness";
Croce & Hein's AutoAttack flags):

- ``monotone``: accuracy under a fresh attack at each eps (no nesting rule) does not increase
  with eps: a larger ball contains the smaller one, so an attack that breaks a sample at a
  small eps but not at a larger one is unreliable (masked or too weak);
- ``large_eps``: accuracy at a very large eps (Linf 1.0 = the whole image cube) is near zero;
- ``autoattack_vs_pgd``: AutoAttack is never above the sweep attack (PGD or APGD-CE; the check
  keeps its historical name) on the same samples at an eps no larger;
- ``sweep_vs_autoattack``: the sweep attack at the target eps is not far above AutoAttack on
  the same samples (the AutoAttack subset, so it runs without a probe): a sweep far above
  AutoAttack means its gradients are useless (e.g. logits scaled up: CE gradients vanish)
  and its curve, hence ER, overstates robustness;
- ``square_vs_whitebox``: the black-box Square attack does not clearly beat the white-box
  attacks (it breaks samples that they left robust);
- ``clean_reproduces``: clean accuracy recomputed (a second pass, or against a stored record)
  gives the same per-sample results.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Sequence

import numpy as np


@dataclass
class CheckResult:
    """``passed`` is None when the check could not run (the message says why)."""

    name: str
    passed: Optional[bool]
    message: str
    values: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def warning(self) -> Optional[str]:
        return f"{self.name}: {self.message}" if self.passed is False else None


def default_large_eps(norm: str, input_shape: Sequence[int]) -> float:
    """A 'very large' eps: Linf 1.0 (any image in [0,1]); L2 the diameter sqrt(C*H*W) of the cube;
    L1 its L1 diameter C*H*W."""
    if norm == "L1":
        return float(int(np.prod(input_shape)))
    return 1.0 if norm == "Linf" else float(math.sqrt(int(np.prod(input_shape))))


def check_monotone(eps_grid: Sequence[float], raw_flags: np.ndarray, tolerance: float = 0.02,
                   attack: str = "PGD") -> CheckResult:
    """Raw (un-nested) accuracy of a fresh attack per eps must not rise by more than ``tolerance``.

    ``raw_flags``: (n, len(eps_grid)) robustness under an independent attack at each eps;
    ``attack``: its name, for the message.
    """
    raw = np.asarray(raw_flags, dtype=bool)
    n = raw.shape[0]
    if n == 0:
        return CheckResult("monotone", None, "no probe samples (eval.checks.probe_samples = 0).")
    acc = raw.mean(0)
    rise = np.maximum.accumulate(acc[::-1])[::-1][1:] - acc[:-1]  # largest later rise from each eps
    j = int(np.argmax(rise))
    # samples robust at a larger eps although the attack broke them at a smaller one
    resurrected = int(np.sum(np.any(~raw[:, :-1] & np.logical_or.accumulate(raw[:, ::-1], axis=1)[:, ::-1][:, 1:],
                                    axis=1)))
    values = {"raw_accuracy": acc.tolist(), "n": n, "max_rise": max(0.0, float(rise[j])) if len(rise) else 0.0,
              "samples_robust_again": resurrected, "tolerance": tolerance}
    if len(rise) and rise[j] > tolerance + 1e-12:
        k = j + 1 + int(np.argmax(acc[j + 1:]))
        return CheckResult("monotone", False,
                           f"accuracy under a fresh {attack} rises from {acc[j]:.3f} at eps "
                           f"{eps_grid[j] * 255:.3g}/255 to {acc[k]:.3f} at eps {eps_grid[k] * 255:.3g}/255 "
                           f"({n} probe samples): the attack fails at a larger eps where it succeeded at a smaller "
                           f"one (gradient masking or too few steps).", values)
    return CheckResult("monotone", True, "accuracy does not rise with eps.", values)


def check_large_eps(flags_at_large_eps: np.ndarray, large_eps: float, max_accuracy: float = 0.05) -> CheckResult:
    """Accuracy at a very large eps must be at most ``max_accuracy``."""
    f = np.asarray(flags_at_large_eps, dtype=bool)
    if f.size == 0:
        return CheckResult("large_eps", None, "no probe samples (eval.checks.probe_samples = 0).")
    acc = float(f.mean())
    values = {"eps": large_eps, "accuracy": acc, "n": int(f.size), "max_accuracy": max_accuracy}
    if acc > max_accuracy + 1e-12:
        return CheckResult("large_eps", False,
                           f"accuracy {acc:.3f} at the very large eps {large_eps:.3g} (where any image is "
                           f"reachable) is above {max_accuracy:.3f}: the attack cannot move the prediction "
                           f"(gradient masking, e.g. a zero or useless gradient).", values)
    return CheckResult("large_eps", True, f"accuracy {acc:.3f} at eps {large_eps:.3g}.", values)


def check_autoattack_vs_pgd(aa_robust: np.ndarray, pgd_robust: np.ndarray, aa_eps: float,
                            pgd_eps: float, attack: str = "PGD") -> CheckResult:
    """AutoAttack accuracy at ``aa_eps`` must not exceed the sweep attack's (``attack``, e.g. PGD-10)
    at ``pgd_eps <= aa_eps`` on the same samples (the two flag arrays, bool (n,), in the same
    sample order). The value keys keep their historical ``pgd_`` names."""
    aa, pgd = np.asarray(aa_robust, dtype=bool), np.asarray(pgd_robust, dtype=bool)
    if aa.size == 0:
        return CheckResult("autoattack_vs_pgd", None, "AutoAttack did not run.")
    a, p = float(aa.mean()), float(pgd.mean())
    missed = int(np.sum(aa & ~pgd))
    values = {"autoattack_accuracy": a, "pgd_accuracy": p, "n": int(aa.size), "autoattack_eps": aa_eps,
              "pgd_eps": pgd_eps, "samples_pgd_broke_autoattack_missed": missed}
    if a > p + 1e-12:
        return CheckResult("autoattack_vs_pgd", False,
                           f"AutoAttack accuracy {a:.3f} at eps {aa_eps * 255:.3g}/255 is above {attack}'s "
                           f"{p:.3f} at eps {pgd_eps * 255:.3g}/255 on the same {aa.size} samples ({missed} samples "
                           f"{attack} broke survive AutoAttack): a sign of a model that changes between calls, "
                           f"randomness or a bug.", values)
    return CheckResult("autoattack_vs_pgd", True, f"AutoAttack {a:.3f} <= {attack} {p:.3f}.", values)


def check_sweep_vs_autoattack(aa_robust: np.ndarray, sweep_robust: np.ndarray, eps: float, max_gap: float,
                              attack: str = "PGD") -> CheckResult:
    """The sweep attack's accuracy at ``eps`` (``sweep_robust``, bool (n,)) may exceed AutoAttack's
    (``aa_robust``) on the same samples by at most ``max_gap``."""
    aa, sw = np.asarray(aa_robust, dtype=bool), np.asarray(sweep_robust, dtype=bool)
    if aa.size == 0:
        return CheckResult("sweep_vs_autoattack", None, "AutoAttack did not run.")
    a, p = float(aa.mean()), float(sw.mean())
    values = {"autoattack_accuracy": a, "sweep_accuracy": p, "gap": p - a, "max_gap": max_gap, "n": int(aa.size),
              "eps": eps, "attack": attack, "samples_only_autoattack_broke": int(np.sum(sw & ~aa))}
    if p - a > max_gap + 1e-12:
        return CheckResult("sweep_vs_autoattack", False,
                           f"{attack} accuracy {p:.3f} at eps {eps * 255:.3g}/255 is {p - a:.3f} above AutoAttack's "
                           f"{a:.3f} on the same {aa.size} samples (allowed: {max_gap:.3f}, "
                           f"eval.checks.sweep_vs_autoattack_max_gap): the sweep attack's gradients are masked "
                           f"(e.g. scaled logits) or it is too weak, so its curve and ER overstate robustness. Use a "
                           f"scale-invariant or stronger sweep (eval.sweep_attack: [apgd-ce, apgd-dlr], more "
                           f"eval.sweep_steps or eval.restarts).", values)
    return CheckResult("sweep_vs_autoattack", True, f"{attack} {p:.3f} is within {max_gap:.3f} of AutoAttack {a:.3f}.",
                       values)


def check_square(n_square_only: int, n: int, tolerance: float = 0.002, source: str = "AutoAttack") -> CheckResult:
    """Square (black-box) broke ``n_square_only`` of ``n`` samples that the white-box attacks left
    robust; more than ``tolerance * n`` of them means the gradients mislead (pyautoattack's own
    threshold is 0.2%)."""
    if n == 0:
        return CheckResult("square_vs_whitebox", None, "Square did not run (no AutoAttack with square).")
    frac = n_square_only / n
    values = {"square_only_broken": int(n_square_only), "n": int(n), "fraction": frac, "tolerance": tolerance,
              "source": source}
    if frac > tolerance + 1e-12:
        return CheckResult("square_vs_whitebox", False,
                           f"the black-box Square attack broke {n_square_only} of {n} samples ({frac:.1%}) that the "
                           f"white-box attacks left robust ({source}): gradients are masked or misleading.", values)
    return CheckResult("square_vs_whitebox", True, f"Square broke {n_square_only} extra samples.", values)


def check_clean_reproduces(n_mismatch: int, n: int, against: str) -> CheckResult:
    """``n_mismatch`` of ``n`` samples changed clean correctness between two evaluations."""
    if n == 0:
        return CheckResult("clean_reproduces", None, f"nothing to compare ({against}).")
    values = {"mismatches": int(n_mismatch), "n": int(n), "against": against}
    if n_mismatch:
        return CheckResult("clean_reproduces", False,
                           f"clean correctness differs on {n_mismatch} of {n} samples ({against}): the model is "
                           f"randomized or non-deterministic, or not the model that was evaluated.", values)
    return CheckResult("clean_reproduces", True, f"clean results reproduce ({against}).", values)
