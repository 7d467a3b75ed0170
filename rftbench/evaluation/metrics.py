"""Expected robustness and other numbers computed from a robustness curve.

A robustness curve is accuracy at each eps of a sorted grid starting at 0 (accuracy at eps=0
is clean accuracy). Between grid points the curve is taken to be linear, and expected
robustness ER = E_{eps ~ p}[acc(eps)] is computed exactly for that piecewise-linear curve.

An eps distribution p lives on [0, eps_max] and is written in the unit variable u = eps / eps_max
through two functions: its CDF ``F(u)`` and its partial first moment ``M(u) = ∫_0^u s p(s) ds``.
On a segment [e_k, e_k+1] where the curve is a_k + s_k (eps - e_k), the contribution to ER is
``a_k ΔF + s_k (ΔM' - e_k ΔF)`` with ``M'(eps) = eps_max * M(eps / eps_max)``, so ER is exact
for every distribution that supplies F and M in closed form (uniform, triangular, beta).
Plugins register a factory under a name in :data:`EPS_DISTRIBUTIONS`; a distribution given only
by its density is integrated numerically (:class:`DensityDistribution`).
Names in configs may carry parameters: ``uniform``, ``triangular_low``, ``beta(2,5)``.
"""
from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from typing import Callable, Sequence

import numpy as np

from ..errors import ConfigError
from ..registry import Registry


class EpsDistribution(ABC):
    """A distribution of eps on [0, eps_max], written in u = eps / eps_max in [0, 1]."""

    @abstractmethod
    def cdf(self, u: np.ndarray) -> np.ndarray:
        """P(U <= u) for u in [0, 1]."""

    @abstractmethod
    def partial_mean(self, u: np.ndarray) -> np.ndarray:
        """∫_0^u s p(s) ds for u in [0, 1] (equals E[U] at u = 1)."""


class _Uniform(EpsDistribution):
    def cdf(self, u):
        return u

    def partial_mean(self, u):
        return u * u / 2


class _TriangularLow(EpsDistribution):
    """Density 2 (1 - u): small perturbations weigh more."""

    def cdf(self, u):
        return 2 * u - u * u

    def partial_mean(self, u):
        return u * u - 2 * u ** 3 / 3


class _TriangularHigh(EpsDistribution):
    """Density 2 u: large perturbations weigh more."""

    def cdf(self, u):
        return u * u

    def partial_mean(self, u):
        return 2 * u ** 3 / 3


class _Beta(EpsDistribution):
    """Beta(a, b) on [0, 1]; M(u) = a / (a + b) * I_u(a + 1, b)."""

    def __init__(self, a: float, b: float):
        if a <= 0 or b <= 0:
            raise ConfigError(f"beta(a,b) needs a > 0 and b > 0, got beta({a:g},{b:g}).")
        self.a, self.b = a, b

    def cdf(self, u):
        from scipy.special import betainc

        return betainc(self.a, self.b, u)

    def partial_mean(self, u):
        from scipy.special import betainc

        return self.a / (self.a + self.b) * betainc(self.a + 1, self.b, u)


class DensityDistribution(EpsDistribution):
    """A distribution given by an (unnormalised) density ``f(u)`` on [0, 1], integrated with
    scipy's adaptive quadrature (accurate to ~1e-10 for smooth densities)."""

    def __init__(self, density: Callable[[float], float]):
        from scipy.integrate import quad

        self._quad = quad
        self.density = density
        self.norm = quad(density, 0.0, 1.0)[0]
        if not np.isfinite(self.norm) or self.norm <= 0:
            raise ConfigError("an eps density must be non-negative with a positive, finite integral on [0, 1].")

    def cdf(self, u):
        return np.array([self._quad(self.density, 0.0, float(v))[0] for v in np.atleast_1d(u)]) / self.norm

    def partial_mean(self, u):
        f = lambda s: s * self.density(s)  # noqa: E731
        return np.array([self._quad(f, 0.0, float(v))[0] for v in np.atleast_1d(u)]) / self.norm


# name -> factory(*float params) -> EpsDistribution
EPS_DISTRIBUTIONS: Registry[Callable[..., EpsDistribution]] = Registry("eps distribution")
EPS_DISTRIBUTIONS.add("uniform", _Uniform)
EPS_DISTRIBUTIONS.add("triangular_low", _TriangularLow)
EPS_DISTRIBUTIONS.add("triangular_high", _TriangularHigh)
EPS_DISTRIBUTIONS.add("beta", _Beta)

_SPEC = re.compile(r"^\s*([A-Za-z_][\w.-]*)\s*(?:\((.*)\))?\s*$")


def resolve_distribution(spec: str) -> EpsDistribution:
    """``"uniform"`` / ``"beta(2,5)"`` -> the distribution (clear errors for bad names or params)."""
    m = _SPEC.match(spec or "")
    if not m:
        raise ConfigError(f"eps distribution {spec!r} must look like name or name(p1,p2), e.g. beta(2,5).")
    name, raw = m.group(1), m.group(2)
    factory = EPS_DISTRIBUTIONS.get(name)
    params: list[float] = []
    if raw is not None and raw.strip():
        try:
            params = [float(p) for p in raw.split(",")]
        except ValueError:
            raise ConfigError(f"eps distribution {spec!r}: parameters must be numbers.") from None
    try:
        return factory(*params)
    except TypeError as exc:
        raise ConfigError(f"eps distribution {spec!r}: wrong number of parameters ({exc}).") from None


def expected_robustness(eps_grid: Sequence[float], accuracy: Sequence[float],
                        distribution: str | EpsDistribution = "uniform", eps_max: float | None = None) -> float:
    """ER of the piecewise-linear curve through ``(eps_grid, accuracy)`` under ``distribution``
    on [0, eps_max] (default: the grid's last eps). Exact (closed form per segment).

    For ``uniform`` this is the trapezoid rule divided by eps_max.
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
    dist = resolve_distribution(distribution) if isinstance(distribution, str) else distribution
    u = np.clip(e / eps_max, 0.0, 1.0)
    F = np.asarray(dist.cdf(u), dtype=float)
    M = eps_max * np.asarray(dist.partial_mean(u), dtype=float)
    dF, dM = np.diff(F), np.diff(M)
    slope = np.diff(a) / np.diff(e)
    return float(np.sum(a[:-1] * dF + slope * (dM - e[:-1] * dF)))


def er_name(eps_grid: Sequence[float], distribution: str, attack: str) -> str:
    """The reported name of an ER number: it carries the grid, p and the attack.

    An evenly spaced grid is named by its size (``5pts``); any other grid also by a short hash
    of its values (``5pts@1a2b3c``), so that different grids never share a name.
    """
    grid = np.asarray(eps_grid, dtype=float)
    emax = float(grid.max())
    pts = f"{len(grid)}pts"
    if not np.allclose(grid, np.linspace(0.0, emax, len(grid)), rtol=0, atol=1e-12):
        pts += "@" + hashlib.sha256(np.asarray(grid, dtype="<f8").tobytes()).hexdigest()[:6]
    m = _SPEC.match(distribution or "")
    if m and m.group(2) is not None:  # beta(2,5) -> beta(2,5;0,51/255)
        dist = f"{m.group(1)}({m.group(2)};0,{emax * 255:.3g}/255)"
    else:
        dist = f"{distribution}(0,{emax * 255:.3g}/255)"
    return f"ER[{dist},{pts},{attack}]"
