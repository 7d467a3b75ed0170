"""Expected robustness and other numbers computed from a robustness curve.

A robustness curve is accuracy at each eps of a sorted grid starting at 0 (accuracy at eps=0
is clean accuracy). Between grid points the curve is taken to be linear, and expected
robustness ER = E_{eps ~ p}[acc(eps)] is computed exactly for that piecewise-linear curve.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .errors import ConfigError
from .registry import Registry

# An eps distribution on [0, eps_max] given by its density (need not be normalised).
EpsDensity = Callable[[np.ndarray, float], np.ndarray]
EPS_DISTRIBUTIONS: Registry[EpsDensity] = Registry("eps distribution")


@EPS_DISTRIBUTIONS.register("uniform")
def _uniform(eps: np.ndarray, eps_max: float) -> np.ndarray:
    return np.ones_like(eps)


@EPS_DISTRIBUTIONS.register("triangular_low")
def _triangular_low(eps: np.ndarray, eps_max: float) -> np.ndarray:
    """Density falling linearly from eps=0 to 0 at eps_max: small perturbations weigh more."""
    return np.clip(1.0 - eps / eps_max, 0.0, None)


def expected_robustness(eps_grid: Sequence[float], accuracy: Sequence[float],
                        distribution: str = "uniform", eps_max: float | None = None) -> float:
    """ER of the piecewise-linear curve through ``(eps_grid, accuracy)`` under ``distribution``.

    For ``uniform`` this is the trapezoid rule divided by eps_max (exact for a piecewise-linear
    curve). Other densities are integrated on a fine sub-grid (exact to ~1e-9 for smooth ones).
    """
    e = np.asarray(eps_grid, dtype=float)
    a = np.asarray(accuracy, dtype=float)
    if e.ndim != 1 or len(e) != len(a) or len(e) < 2:
        raise ConfigError("expected robustness needs at least two (eps, accuracy) points of equal length.")
    if np.any(np.diff(e) <= 0) or e[0] != 0.0:
        raise ConfigError(f"the eps grid must start at 0 and increase strictly, got {list(e)}.")
    eps_max = float(e[-1] if eps_max is None else eps_max)
    if eps_max <= 0 or eps_max > e[-1] + 1e-12:
        raise ConfigError(f"eps_max={eps_max} must lie in (0, {e[-1]}] (the grid's range).")
    if distribution == "uniform":
        keep = e < eps_max
        xs = np.append(e[keep], eps_max)
        ys = np.append(a[keep], np.interp(eps_max, e, a))
        return float(np.trapezoid(ys, xs) / eps_max)
    density = EPS_DISTRIBUTIONS.get(distribution)
    xs = np.linspace(0.0, eps_max, 20001)
    w = density(xs, eps_max)
    ys = np.interp(xs, e, a)
    return float(np.trapezoid(w * ys, xs) / np.trapezoid(w, xs))


def er_name(eps_grid: Sequence[float], distribution: str, attack: str) -> str:
    """The reported name of an ER number: it carries the grid, p and the attack."""
    emax = max(eps_grid)
    return f"ER[{distribution}(0,{emax * 255:.3g}/255),{len(eps_grid)}pts,{attack}]"
