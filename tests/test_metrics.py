import numpy as np
import pytest

from rftbench.errors import ConfigError
from rftbench.metrics import expected_robustness


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
