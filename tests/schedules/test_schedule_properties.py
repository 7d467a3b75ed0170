"""Property tests: every registered schedule stays within [0, target] for any valid parameters
and is non-decreasing where it declares ``monotone``; its search space holds only valid points."""
import math

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from rftbench.errors import ConfigError
from rftbench.scheduling import SCHEDULES, Param, create_schedule, suggest_schedule_params

NAMES = SCHEDULES.names()  # the built-ins (collected before any test registers a plugin)
PROFILE = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def param_value(p: Param):
    if p.kind == "int":
        return st.integers(int(p.low), int(p.high))
    return st.floats(p.low, p.high, allow_nan=False)


@st.composite
def valid_params(draw, name):
    """Any point of the declared box that the schedule accepts (cross-constraints via assume)."""
    cls = SCHEDULES.get(name)
    values = {p.name: draw(param_value(p)) for p in cls.params}
    try:
        cls(**values)
    except ConfigError:
        assume(False)
    return values


class HypothesisTrial:
    """Stands in for an optuna.Trial: every suggestion is drawn by hypothesis within the asked range."""

    def __init__(self, draw):
        self.draw, self.asked, self.drawn = draw, {}, {}

    def suggest_float(self, name, low, high, log=False):
        self.asked[name] = ("float", low, high, log)
        self.drawn[name] = self.draw(st.floats(low, high, allow_nan=False))
        return self.drawn[name]

    def suggest_int(self, name, low, high, log=False):
        self.asked[name] = ("int", low, high, log)
        self.drawn[name] = self.draw(st.integers(low, high))
        return self.drawn[name]


targets = st.floats(0.0, 1.0, allow_nan=False)
totals = st.integers(1, 5000)


@pytest.mark.parametrize("name", NAMES)
@PROFILE
@given(data=st.data(), target=targets, total=totals)
def test_eps_within_zero_and_target(name, data, target, total):
    params = data.draw(valid_params(name))
    s = create_schedule(name, params)
    steps = data.draw(st.lists(st.integers(0, total - 1), min_size=1, max_size=20))
    for step in steps + [0, total - 1]:
        eps = s.eps_at(step, total, target)
        assert 0.0 <= eps <= target, (s, step, total, eps)


@pytest.mark.parametrize("name", [n for n in NAMES if SCHEDULES.get(n).monotone])
@PROFILE
@given(data=st.data(), target=targets, total=totals)
def test_monotone_schedules_never_decrease(name, data, target, total):
    s = create_schedule(name, data.draw(valid_params(name)))
    a, b = sorted(data.draw(st.tuples(st.integers(0, total - 1), st.integers(0, total - 1))))
    assert s.eps_at(a, total, target) <= s.eps_at(b, total, target)
    # and over a whole (short) run
    n = min(total, 300)
    eps = s.eps_values(n, target)
    assert all(x <= y for x, y in zip(eps, eps[1:])), s


@pytest.mark.parametrize("name", NAMES)
@PROFILE
@given(data=st.data())
def test_search_space_is_the_declared_space(name, data):
    cls = SCHEDULES.get(name)
    trial = HypothesisTrial(data.draw)
    values = suggest_schedule_params(name, trial)
    declared = {p.name: p for p in cls.params}
    coords = cls.search_space()
    assert set(values) == set(declared) and set(trial.asked) == set(coords)
    for key, (kind, low, high, log) in trial.asked.items():
        d = coords[key]  # the asked range is the static coordinate's range, whatever was drawn before
        assert (low, high, log) == (d.low, d.high, d.log)
        p = declared.get(key)
        if p is not None:  # a declared parameter searched as itself is recorded as trained
            assert kind == p.kind and log == p.log
            assert p.low <= low <= high <= p.high  # a constraint may narrow a range, never widen it
            assert values[key] == trial.drawn[key]
    for key, value in values.items():
        assert declared[key].low <= value <= declared[key].high
    create_schedule(name, values)  # every sampled point is accepted


@pytest.mark.parametrize("name", [n for n in NAMES if SCHEDULES.get(n).params])
@PROFILE
@given(data=st.data())
def test_out_of_range_values_name_the_parameter_and_its_bounds(name, data):
    cls = SCHEDULES.get(name)
    p = data.draw(st.sampled_from(cls.params))
    bad = data.draw(st.one_of(st.floats(p.high, 1e9, exclude_min=True), st.floats(-1e9, p.low, exclude_max=True)))
    if p.kind == "int":
        bad = float(math.floor(bad)) if bad > p.high else float(math.ceil(bad))
        assume(not p.low <= bad <= p.high)
    with pytest.raises(ConfigError) as ei:
        create_schedule(name, {p.name: bad})
    assert f"parameter {p.name!r}" in str(ei.value) and f"[{p.low}, {p.high}]" in str(ei.value)
