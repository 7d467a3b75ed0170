import numpy as np
import pytest

from rftbench.errors import ConfigError
from rftbench.evaluation.metrics import expected_robustness


def test_uniform_er_of_linear_curve_is_its_mean():
    # acc(eps) = 1 - eps / 0.4 on [0, 0.2]: mean over U[0, 0.2] is 1 - 0.1/0.4 = 0.75
    grid = np.linspace(0, 0.2, 5)
    assert expected_robustness(grid, 1 - grid / 0.4) == pytest.approx(0.75)


def test_uniform_er_is_exact_for_piecewise_linear_curve():
    grid = [0.0, 0.1, 0.3]
    acc = [0.9, 0.5, 0.1]
    # by hand: area = 0.1*(0.9+0.5)/2 + 0.2*(0.5+0.1)/2 = 0.07 + 0.06 = 0.13; / 0.3
    assert expected_robustness(grid, acc) == pytest.approx(0.13 / 0.3)


def test_triangular_weighting_matches_numeric_integral():
    grid = np.array([0.0, 0.5, 1.0])
    acc = np.array([1.0, 0.5, 0.0])  # acc(e) = 1 - e, density 1 - e: E = ∫(1-e)^2 / ∫(1-e) = (1/3)/(1/2)
    assert expected_robustness(grid, acc, "triangular_low") == pytest.approx(2 / 3, abs=1e-6)


def test_bad_grid_rejected():
    with pytest.raises(ConfigError):
        expected_robustness([0.1, 0.2], [1, 1])
    with pytest.raises(ConfigError):
        expected_robustness([0.0, 0.2, 0.1], [1, 1, 1])


# ---------------------------------------------------------------- exact ER for other distributions
from hypothesis import given, settings, strategies as st  # noqa: E402
from scipy.integrate import quad  # noqa: E402

from rftbench.errors import UnknownNameError  # noqa: E402
from rftbench.evaluation.metrics import EPS_DISTRIBUTIONS, DensityDistribution, er_name  # noqa: E402


def _numeric_er(grid, acc, density, eps_max):
    """An independent computation: adaptive quadrature of density * interpolated curve."""
    f = lambda e: density(e) * np.interp(e, grid, acc)  # noqa: E731
    breaks = [g for g in grid if 0 < g < eps_max]
    return quad(f, 0, eps_max, points=breaks or None, limit=200)[0] / quad(density, 0, eps_max)[0]


def test_beta_er_of_linear_curve_is_one_minus_mean():
    # acc(eps) = 1 - eps / eps_max under Beta(2,5) on [0, eps_max]: 1 - E[U] = 1 - 2/7
    grid = np.linspace(0, 8 / 255, 9)
    assert expected_robustness(grid, 1 - grid / grid[-1], "beta(2,5)") == pytest.approx(5 / 7, abs=1e-12)


def test_triangular_high_weights_large_eps():
    grid, acc = [0.0, 0.1, 0.2], [1.0, 1.0, 0.0]
    # acc = 1 on [0, 0.1], then falling linearly to 0 at 0.2; density 2u (u = eps/0.2):
    # ∫ acc p = ∫_0^.5 2u du + ∫_.5^1 2u (2 - 2u) du = 1/4 + 1/3
    assert expected_robustness(grid, acc, "triangular_high") == pytest.approx(0.25 + 1 / 3, abs=1e-12)
    assert expected_robustness(grid, acc, "uniform") == pytest.approx(0.75)


def test_er_with_eps_max_inside_the_grid_cuts_the_last_segment():
    grid, acc = [0.0, 0.1, 0.2], [1.0, 0.5, 0.0]
    # on [0, 0.15]: area = 0.1*0.75 + 0.05*(0.5+0.25)/2 = 0.09375
    assert expected_robustness(grid, acc, eps_max=0.15) == pytest.approx(0.09375 / 0.15)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=2, max_size=8), st.sampled_from(
    ["uniform", "triangular_low", "triangular_high", "beta(2,5)", "beta(0.7,1.3)"]))
def test_closed_form_er_matches_quadrature(acc, dist):
    grid = np.linspace(0, 0.3, len(acc))
    dens = {"uniform": lambda e: 1.0, "triangular_low": lambda e: 1 - e / 0.3, "triangular_high": lambda e: e / 0.3,
            "beta(2,5)": lambda e: (e / 0.3) * (1 - e / 0.3) ** 4,
            "beta(0.7,1.3)": lambda e: (e / 0.3) ** -0.3 * (1 - e / 0.3) ** 0.3}[dist]
    assert expected_robustness(grid, acc, dist) == pytest.approx(_numeric_er(grid, acc, dens, 0.3), abs=1e-6)


def test_plugged_in_density_distribution():
    # a plugin registers a distribution by its density: p(u) ∝ u^2 on [0,1]
    EPS_DISTRIBUTIONS.add("cubic_test", lambda: DensityDistribution(lambda u: u * u))
    try:
        grid = np.linspace(0, 0.2, 5)
        # acc = 1 - u: E = ∫ (1-u) 3u^2 du = 1 - 3/4
        assert expected_robustness(grid, 1 - grid / 0.2, "cubic_test") == pytest.approx(0.25, abs=1e-9)
    finally:
        del EPS_DISTRIBUTIONS._entries["cubic_test"]


def test_bad_distribution_names_and_params():
    with pytest.raises(UnknownNameError, match="unknown eps distribution 'unifrom'.*uniform"):
        expected_robustness([0, 0.1], [1, 0], "unifrom")
    with pytest.raises(ConfigError, match="parameters must be numbers"):
        expected_robustness([0, 0.1], [1, 0], "beta(a,b)")
    with pytest.raises(ConfigError, match="a > 0 and b > 0"):
        expected_robustness([0, 0.1], [1, 0], "beta(0,1)")
    with pytest.raises(ConfigError, match="wrong number of parameters"):
        expected_robustness([0, 0.1], [1, 0], "uniform(3)")


def test_er_name_carries_grid_distribution_and_attack():
    even = [0, 1 / 255, 2 / 255, 3 / 255, 4 / 255]
    assert er_name(even, "uniform", "PGD-10") == "ER[uniform(0,4/255),5pts,PGD-10]"
    assert er_name(even, "beta(2,5)", "APGD-CE") == "ER[beta(2,5;0,4/255),5pts,APGD-CE]"
    uneven = [0, 1 / 255, 4 / 255]
    other = [0, 3 / 255, 4 / 255]
    assert er_name(uneven, "uniform", "PGD-10") != er_name(other, "uniform", "PGD-10")
    assert er_name(uneven, "uniform", "PGD-10").startswith("ER[uniform(0,4/255),3pts@")
